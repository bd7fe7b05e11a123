//! The index's mesh-wide settings (the mesh config and the flags that win over it) and its
//! Sidecars, which the mesh config's root namespace gives a mesh-wide default.

use std::sync::Arc;

use sextant_api as api;
use sextant_model::{Kind, MeshConfig, Sidecar, sidecar_order};

use super::{Index, key};
use crate::parse;

impl Index {
    /// Sets the SPIFFE trust domain of workload identities (default `cluster.local`). It is
    /// fixed for the index's life: `sextant serve` decides it at start (flag, else the mesh
    /// config's `trustDomain`), because the secure port's identity checks depend on it too.
    pub fn with_trust_domain(mut self, trust_domain: &str) -> Index {
        self.trust_domain = trust_domain.to_owned();
        self
    }

    /// Sets Istio's root namespace, whose configuration without a selector applies mesh-wide,
    /// over whatever the mesh config says (`--root-namespace` given explicitly). Without it the
    /// mesh config's `rootNamespace` applies (default `istio-system`).
    pub fn with_root_namespace(mut self, root_namespace: &str) -> Index {
        self.root_namespace = Some(root_namespace.to_owned());
        self
    }

    /// The root namespace in force: the explicit one, else the mesh config's.
    pub(super) fn root_namespace(&self) -> &str {
        self.root_namespace
            .as_deref()
            .unwrap_or(&self.mesh_config.root_namespace)
    }

    /// The mesh config in use.
    pub fn mesh_config(&self) -> &Arc<MeshConfig> {
        &self.mesh_config
    }

    /// The trust domain in force (see [`Index::with_trust_domain`]).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Replaces the mesh config. A different one is published as a change of everything
    /// configuration-related (`Changes::mesh_config`), so every scope is compiled anew.
    /// Its `trustDomain` is not applied (see [`Index::with_trust_domain`]): whoever reads the
    /// mesh config tells the user when it differs from [`Index::trust_domain`].
    pub fn set_mesh_config(&mut self, config: MeshConfig) {
        if *self.mesh_config != config {
            self.mesh_config = Arc::new(config);
            self.changes.mesh_config = true;
        }
    }

    pub(super) fn apply_sidecar(&mut self, sc: &api::Sidecar) {
        let id = parse::object_ref(Kind::Sidecar, &sc.metadata);
        let k = key(&id.namespace, &id.name);
        let parsed = parse::sidecar(sc);
        if let Some(v) = self.record(parsed, id.clone())
            && self.sidecars.get(&k).is_none_or(|old| **old != v)
        {
            self.sidecars.insert(k, Arc::new(v));
            self.changes.configs.insert(id);
        }
    }

    /// Sidecars in the order `Snapshot::sidecars` keeps.
    pub(super) fn sorted_sidecars(&self) -> Vec<Arc<Sidecar>> {
        let mut sidecars: Vec<Arc<Sidecar>> = self.sidecars.values().cloned().collect();
        sidecars.sort_by_key(|s| sidecar_order(s));
        sidecars
    }
}
