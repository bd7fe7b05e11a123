//! What scopes share: one copy of identical resources (most of a service's clusters and load
//! assignments are the same bytes in every scope, and so are most virtual hosts), one copy of
//! identical lists, and the clusters and load assignments of the current snapshot by what they
//! depend on, so that scopes which see the same services through the same DestinationRules
//! build them once.

use std::{
    collections::{HashMap, hash_map::Entry},
    sync::Arc,
};

use bytes::Bytes;
use sextant_model::{DestinationRule, ProxyFlavor};
use sextant_resources::{Body, Encoded, EncodedResources, List};

use crate::Context;

/// Shared by the scopes of one control plane; see the module documentation.
#[derive(Debug, Default)]
pub struct ScopeCache {
    /// Buffers by content hash.
    buffers: HashMap<u64, Bytes>,
    /// Lists by a hash of their names and resource hashes.
    lists: HashMap<u64, List>,
    /// Sizes of `buffers` and `lists` at which entries nothing else holds are dropped.
    prune_at: usize,
    prune_lists_at: usize,
    /// Snapshot version of `clusters`.
    version: u64,
    /// Outbound clusters and load assignments of that snapshot, by their inputs.
    clusters: Vec<(ClusterKey, List, List)>,
}

/// What a scope's outbound clusters and load assignments depend on: the proxy flavor, whether
/// it holds a certificate (auto mTLS), the visible services and the DestinationRule each
/// resolves to (merged, as the proxy sees it), and the ports a Sidecar trims services to.
/// `hash` covers the flavor, the certificate, the trimmed ports, host names and rule names;
/// equality compares everything.
#[derive(Debug, PartialEq)]
pub(crate) struct ClusterKey {
    hash: u64,
    flavor: ProxyFlavor,
    holds_certificate: bool,
    /// Where the proxy is (cluster, network, locality), as far as its scope keeps it: load
    /// assignments depend on it.
    place: (String, String, sextant_model::Locality),
    /// The proxy's values of the labels `failoverPriority` compares.
    failover_labels: Vec<Option<String>>,
    /// Services by identity within the snapshot, with their rule.
    services: Vec<(usize, Option<DestinationRule>)>,
}

/// The key of the scope `ctx` compiles.
pub(crate) fn cluster_key(ctx: &Context<'_>) -> ClusterKey {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&[
        ctx.proxy.flavor as u8,
        u8::from(ctx.proxy.holds_certificate),
    ]);
    let place = (
        ctx.proxy.cluster_id.clone(),
        ctx.proxy.network.clone(),
        ctx.proxy.locality.clone(),
    );
    for part in [
        &place.0,
        &place.1,
        &place.2.region,
        &place.2.zone,
        &place.2.subzone,
    ] {
        h.update(part.as_bytes());
        h.update(&[0]);
    }
    let failover_labels: Vec<Option<String>> = ctx
        .snapshot
        .failover_label_keys
        .iter()
        .map(|k| ctx.proxy.labels.get(k).cloned())
        .collect();
    for value in &failover_labels {
        h.update(value.as_deref().unwrap_or("\u{0}").as_bytes());
        h.update(&[0]);
    }
    for (host, ports) in ctx.trimmed_ports() {
        h.update(host.as_bytes());
        for p in ports {
            h.update(&p.to_le_bytes());
        }
    }
    let services = ctx
        .services()
        .map(|svc| {
            let rule = ctx.rule(&svc.hostname).cloned();
            h.update(svc.hostname.as_bytes());
            if let Some(r) = &rule {
                h.update(r.id.namespace.as_bytes());
                h.update(r.id.name.as_bytes());
            }
            (Arc::as_ptr(svc) as usize, rule)
        })
        .collect();
    ClusterKey {
        hash: h.digest(),
        flavor: ctx.proxy.flavor,
        holds_certificate: ctx.proxy.holds_certificate,
        place,
        failover_labels,
        services,
    }
}

impl ScopeCache {
    /// The clusters and load assignments for `key` in snapshot `version`: built by `build`
    /// (and interned) the first time, shared after.
    pub(crate) fn clusters(
        &mut self,
        version: u64,
        key: ClusterKey,
        build: impl FnOnce() -> (List, List),
    ) -> (List, List) {
        if self.version != version {
            self.clusters.clear();
            self.version = version;
        }
        if let Some((_, c, e)) = self.clusters.iter().find(|(k, _, _)| *k == key) {
            return (c.clone(), e.clone());
        }
        let (mut c, mut e) = build();
        self.intern_list(&mut c);
        self.intern_list(&mut e);
        self.clusters.push((key, c.clone(), e.clone()));
        (c, e)
    }

    /// Replaces each list of `resources`, and each resource's buffers, with the shared copy of
    /// the same content. Lists that are `previous`'s own (rebuilt from it, unchanged) went
    /// through here with it: they are skipped, since hashing a list costs a pass over its
    /// names (W-L: 24,000 clusters and as many load assignments per scope).
    pub(crate) fn intern(
        &mut self,
        resources: &mut EncodedResources,
        previous: Option<&EncodedResources>,
    ) {
        let kept = |list: &List, old: Option<&List>| old.is_some_and(|o| Arc::ptr_eq(o, list));
        for (list, old) in [
            (&mut resources.clusters, previous.map(|p| &p.clusters)),
            (&mut resources.endpoints, previous.map(|p| &p.endpoints)),
            (&mut resources.listeners, previous.map(|p| &p.listeners)),
            (&mut resources.routes, previous.map(|p| &p.routes)),
        ] {
            if !kept(list, old) {
                self.intern_list(list);
            }
        }
        // Entries only the cache still holds belong to replaced resources. Each map is pruned
        // by its own growth: a VirtualService change replaces few buffers but a route list in
        // every scope (each holding its parts list), and old lists must not pile up until
        // the buffers happen to double.
        // Lists first: a dropped list lets go of its buffers in the same pass.
        if self.lists.len() > self.prune_lists_at {
            self.lists.retain(|_, l| Arc::strong_count(l) > 1);
            self.prune_lists_at = self.lists.len() + self.lists.len() / 4 + 64;
        }
        if self.buffers.len() > self.prune_at {
            self.buffers.retain(|_, b| !b.is_unique());
            self.prune_at = (self.buffers.len() * 2).max(4096);
        }
    }

    /// A list held elsewhere too (a previous scope's, a cached one) went through here when it
    /// was built: only a list of its own has its resources interned.
    fn intern_list(&mut self, list: &mut List) {
        if let Some(entries) = Arc::get_mut(list) {
            for e in entries.iter_mut() {
                self.intern_body(e);
            }
        }
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for e in list.iter() {
            h.update(e.name.as_bytes());
            h.update(&e.hash.to_le_bytes());
        }
        match self.lists.entry(h.digest()) {
            Entry::Occupied(o) if Arc::ptr_eq(o.get(), list) => {}
            Entry::Occupied(o)
                if o.get().len() == list.len()
                    && o.get().iter().zip(list.iter()).all(|(a, b)| same(a, b)) =>
            {
                *list = o.get().clone();
            }
            Entry::Occupied(_) => {} // a hash collision: keep its own list
            Entry::Vacant(v) => {
                v.insert(list.clone());
            }
        }
    }

    fn intern_body(&mut self, e: &mut Encoded) {
        match &mut e.body {
            Body::One(bytes) => self.share_with(e.hash, bytes, |b| b.clone()),
            Body::Parts { parts, .. } => {
                let mut shared: Vec<Bytes> = parts.to_vec();
                for p in &mut shared {
                    // Parts are slices of one buffer per resource: a kept part gets its own
                    // copy, so that it does not keep the rest of that buffer alive.
                    self.share_with(xxhash_rust::xxh3::xxh3_64(p), p, |b| {
                        Bytes::copy_from_slice(b)
                    });
                }
                *parts = shared.into();
            }
        }
    }

    /// Replaces `bytes` (whose hash is `hash`) with the shared copy of the same content; the
    /// first copy seen is kept as `keep` makes it.
    fn share_with(&mut self, hash: u64, bytes: &mut Bytes, keep: impl FnOnce(&Bytes) -> Bytes) {
        match self.buffers.entry(hash) {
            // Unchanged parts of a rebuilt resource are the shared copy already.
            Entry::Occupied(o)
                if o.get().as_ptr() == bytes.as_ptr() && o.get().len() == bytes.len() => {}
            Entry::Occupied(o) if *o.get() == *bytes => *bytes = o.get().clone(),
            Entry::Occupied(_) => {} // a hash collision: keep its own copy
            Entry::Vacant(v) => {
                *bytes = keep(bytes);
                v.insert(bytes.clone());
            }
        }
    }

    /// Distinct buffers held.
    pub fn buffers(&self) -> usize {
        self.buffers.len()
    }
}

/// The same resource: after interning, equal content is the same buffers.
fn same(a: &Encoded, b: &Encoded) -> bool {
    a.name == b.name
        && a.hash == b.hash
        && a.body.chunks().len() == b.body.chunks().len()
        && a.body
            .chunks()
            .iter()
            .zip(b.body.chunks())
            .all(|(x, y)| x.as_ptr() == y.as_ptr() && x.len() == y.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaced_lists_do_not_pile_up() {
        let mut cache = ScopeCache::default();
        let mut kept = Vec::new();
        for change in 0..2000u32 {
            // A scope's routes, rebuilt by every change; only the newest is still in use.
            let mut resources = EncodedResources {
                routes: [Encoded::from_bytes("80", change.to_le_bytes().to_vec())].into(),
                ..Default::default()
            };
            cache.intern(&mut resources, None);
            kept = vec![resources];
        }
        assert_eq!(kept.len(), 1);
        assert!(
            cache.lists.len() < 200,
            "{} lists kept for one in use",
            cache.lists.len()
        );
    }
}
