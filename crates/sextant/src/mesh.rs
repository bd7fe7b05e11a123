//! The control plane's view of the mesh: the published snapshot and each scope's encoded
//! resources, shared by every proxy of the scope and carried across snapshots: a new snapshot
//! rebuilds only what its changes touch (see [`sextant_compiler::recompile_part`]).

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use sextant_compiler::{
    EncodedResources, Part,
    secret::{ROOT as ROOT_SECRET, WORKLOAD as WORKLOAD_SECRET},
};
use sextant_index::Changes;
use sextant_model::{Identity, Kind, Proxy, Snapshot};
use sextant_xds::{Generator, ProxyResources, protocol::Event};

use crate::metrics::Metrics;

/// Changes kept to bring older scope entries up to date; older entries are rebuilt whole.
const CHANGE_LOG: usize = 64;

/// A scope's shared (outbound) resources and the snapshot they were built from.
#[derive(Default)]
struct ScopeEntry {
    /// `None` until first built.
    version: Option<u64>,
    resources: Arc<EncodedResources>,
}

/// Snapshot, readiness and the scope cache.
pub struct Mesh {
    snapshot: RwLock<Arc<Snapshot>>,
    ready: AtomicBool,
    /// Changes that produced each published version (oldest first).
    log: Mutex<VecDeque<(u64, Changes)>>,
    /// By scope key; one lock per scope, so one proxy of a scope compiles it and the others
    /// wait for the result.
    scopes: Mutex<HashMap<String, Arc<Mutex<ScopeEntry>>>>,
    /// What scopes share: one copy of identical resources across scopes and snapshots,
    /// clusters and load assignments built once per snapshot.
    cache: Mutex<sextant_compiler::ScopeCache>,
    /// SDS secrets, when the mesh has a CA.
    secrets: Option<Secrets>,
    /// The secrets of a mesh without a CA.
    no_secrets: sextant_compiler::List,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
}

/// SDS over ADS, for plain Envoy: the root (`ROOTCA`) for every proxy, and a workload
/// certificate with its key (`default`) for a proxy that proved its identity on the secure
/// port, and only for that identity. Certificates are issued on first use, shared by the
/// proxies of an identity, and replaced once half their life has passed.
pub struct Secrets {
    ca: Arc<crate::ca::Ca>,
    ttl: std::time::Duration,
    /// `[ROOTCA]`.
    anonymous: sextant_compiler::List,
    root: sextant_compiler::Encoded,
    /// By identity.
    issued: Mutex<HashMap<Identity, Issued>>,
}

/// A workload certificate served to the proxies of one identity.
struct Issued {
    at: std::time::Instant,
    /// `[ROOTCA, default]`.
    list: sextant_compiler::List,
    /// Past half its life: the next request for it issues a new one.
    renew: bool,
}

impl Secrets {
    /// Secrets from `ca`, workload certificates valid for `ttl`.
    pub fn new(ca: Arc<crate::ca::Ca>, ttl: std::time::Duration) -> Secrets {
        use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
            CertificateValidationContext, Secret, secret,
        };
        let root = sextant_compiler::Encoded::new(
            ROOT_SECRET,
            &Secret {
                name: ROOT_SECRET.to_owned(),
                r#type: Some(secret::Type::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: Some(inline(ca.cert_pem())),
                        ..Default::default()
                    },
                )),
            },
        );
        Secrets {
            ca,
            ttl,
            anonymous: Arc::from([root.clone()]),
            root,
            issued: Mutex::new(HashMap::new()),
        }
    }

    fn list(&self, identity: Option<&Identity>) -> sextant_compiler::List {
        let Some(identity) = identity else {
            return self.anonymous.clone();
        };
        let current = {
            let issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
            match issued.get(identity) {
                Some(i) if !i.renew && i.at.elapsed() < self.ttl => return i.list.clone(),
                Some(i) => Some((i.at, i.list.clone())),
                None => None,
            }
        };
        // Signing takes a while: not under the lock (two proxies of one identity may both
        // issue; the first stored wins).
        let fresh: sextant_compiler::List = match self.issue(identity) {
            Ok(default) => Arc::from([self.root.clone(), default]),
            Err(e) => {
                tracing::error!(%identity, error = %e, "cannot issue a workload certificate");
                // A certificate still valid stays served.
                return match current {
                    Some((at, list)) if at.elapsed() < self.ttl => list,
                    _ => self.anonymous.clone(),
                };
            }
        };
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        match issued.get(identity) {
            Some(i) if !i.renew && i.at.elapsed() < self.ttl => i.list.clone(),
            _ => {
                issued.insert(
                    identity.clone(),
                    Issued {
                        at: std::time::Instant::now(),
                        list: fresh.clone(),
                        renew: false,
                    },
                );
                fresh
            }
        }
    }

    fn issue(&self, identity: &Identity) -> anyhow::Result<sextant_compiler::Encoded> {
        use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
            Secret, TlsCertificate, secret,
        };
        let workload = self.ca.workload(identity, self.ttl)?;
        Ok(sextant_compiler::Encoded::new(
            WORKLOAD_SECRET,
            &Secret {
                name: WORKLOAD_SECRET.to_owned(),
                r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                    certificate_chain: Some(inline(&workload.chain_pem)),
                    private_key: Some(inline(&workload.key_pem)),
                    ..Default::default()
                })),
            },
        ))
    }

    /// Marks certificates past half their life for renewal at the next update (and drops
    /// expired ones nobody renewed); whether any were marked. All renewals go through here,
    /// so that every proxy of an identity is woken for its new certificate.
    pub fn expire(&self) -> bool {
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        issued.retain(|_, i| i.at.elapsed() < self.ttl);
        let mut marked = false;
        for i in issued.values_mut() {
            if !i.renew && i.at.elapsed() >= self.ttl / 2 {
                i.renew = true;
                marked = true;
            }
        }
        marked
    }
}

fn inline(text: &str) -> envoy_types::pb::envoy::config::core::v3::DataSource {
    use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
    DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(
            text.as_bytes().to_vec(),
        )),
        ..Default::default()
    }
}

impl Mesh {
    /// An empty, not yet ready mesh.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Mesh {
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            ready: AtomicBool::new(false),
            log: Mutex::new(VecDeque::new()),
            scopes: Mutex::new(HashMap::new()),
            cache: Mutex::new(sextant_compiler::ScopeCache::default()),
            secrets: None,
            no_secrets: Arc::from([]),
            metrics,
        }
    }

    /// Serves `secrets` over SDS.
    pub fn with_secrets(mut self, secrets: Secrets) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// The SDS secrets, if any.
    pub fn secrets(&self) -> Option<&Secrets> {
        self.secrets.as_ref()
    }

    /// Publishes a new snapshot and the changes since the previous one; after the first, the
    /// mesh is ready.
    pub fn publish(&self, snapshot: Arc<Snapshot>, changes: Changes) {
        {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            log.push_back((snapshot.version, changes));
            while log.len() > CHANGE_LOG {
                log.pop_front();
            }
        }
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = snapshot;
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Stops reporting ready (shutdown has begun; load balancers should stop sending proxies).
    pub fn set_not_ready(&self) {
        self.ready.store(false, Ordering::SeqCst);
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What changed after `since` up to `until`, as far as compiled resources can be reused;
    /// `None` when they cannot (or the log no longer reaches back that far).
    fn rebuild(&self, since: u64, until: u64) -> Option<sextant_compiler::Rebuild> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let mut covered = false;
        let mut rebuild = sextant_compiler::Rebuild::default();
        for (version, changes) in log.iter() {
            if *version <= since {
                covered = true;
                continue;
            }
            if *version > until {
                break;
            }
            reuse(changes, &mut rebuild)?;
        }
        covered.then_some(rebuild)
    }

    /// The scope's shared resources for `snapshot`, compiled or brought up to date once.
    fn scope_resources(&self, snapshot: &Snapshot, scope: &Proxy) -> Arc<EncodedResources> {
        let entry = self
            .scopes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(scope_key(scope))
            .or_default()
            .clone();
        let mut entry = entry.lock().unwrap_or_else(|p| p.into_inner());
        if entry.version == Some(snapshot.version) {
            return entry.resources.clone();
        }
        let started = std::time::Instant::now();
        let rebuild = entry
            .version
            .and_then(|since| self.rebuild(since, snapshot.version));
        let resources = sextant_compiler::compile_scope(
            snapshot,
            scope,
            rebuild.as_ref().map(|r| (&*entry.resources, r)),
            &self.cache,
        );
        self.metrics
            .compile_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.config_bytes.set(resources.size() as i64);
        *entry = ScopeEntry {
            version: Some(snapshot.version),
            resources: Arc::new(resources),
        };
        entry.resources.clone()
    }
}

/// Adds `changes` to what must be rebuilt; `None` when everything must be.
fn reuse(changes: &Changes, rebuild: &mut sextant_compiler::Rebuild) -> Option<()> {
    if !changes.services.is_empty()
        || changes
            .configs
            .iter()
            .any(|c| c.kind != Kind::VirtualService)
    {
        return None;
    }
    rebuild.routing |= !changes.configs.is_empty();
    rebuild.endpoints.extend(changes.endpoints.iter().cloned());
    Some(())
}

/// What a proxy's shared output depends on besides the snapshot.
fn scope_key(p: &Proxy) -> String {
    format!(
        "{}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{:?}",
        p.namespace,
        p.labels,
        p.flavor,
        p.interception,
        p.bind_address,
        p.ips,
        p.workload_name,
        p.kind
    )
}

impl Generator for Mesh {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn complete(&self, mut proxy: Proxy) -> Proxy {
        let snapshot = self.snapshot();
        if let Some(w) = snapshot.workload(&proxy.namespace, &proxy.workload_name) {
            proxy.complete_from(w);
        }
        proxy
    }

    fn resources(&self, proxy: &Proxy) -> Arc<ProxyResources> {
        let snapshot = self.snapshot();
        let scope = sextant_compiler::scope(&snapshot, proxy);
        let shared = self.scope_resources(&snapshot, &scope);
        let own = Arc::new(sextant_compiler::compile_part(
            &snapshot,
            proxy,
            Part::Inbound,
        ));
        let secrets = match &self.secrets {
            Some(s) => s.list(proxy.identity.as_ref()),
            None => self.no_secrets.clone(),
        };
        Arc::new(ProxyResources {
            shared,
            own,
            secrets,
        })
    }

    fn observe(&self, _proxy: &Proxy, event: &Event) {
        match event {
            Event::Nack { type_url, .. } => self.metrics.nack(type_url),
            Event::Ack { type_url } => self.metrics.ack(type_url),
            Event::Sent { type_url, .. } => {
                self.metrics
                    .pushes
                    .get_or_create(&crate::metrics::TypeLabels {
                        type_url: type_url.clone(),
                    })
                    .inc();
            }
            Event::Stale { .. } => {}
        }
    }

    fn pushed(&self, _proxy: &Proxy, type_url: &str, elapsed: std::time::Duration) {
        self.metrics
            .push_seconds
            .get_or_create(&crate::metrics::TypeLabels {
                type_url: type_url.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    fn converged(&self, _proxy: &Proxy, elapsed: std::time::Duration) {
        self.metrics
            .convergence_seconds
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_model::ObjectRef;

    fn vs(kind: Kind) -> ObjectRef {
        ObjectRef {
            kind,
            namespace: "default".into(),
            name: "x".into(),
        }
    }

    #[test]
    fn secrets_are_the_root_for_everyone_and_a_certificate_only_for_a_proved_identity() {
        use envoy_types::pb::envoy::{
            config::core::v3::data_source::Specifier,
            extensions::transport_sockets::tls::v3::{Secret, secret},
        };
        use prost::Message;
        let ca = Arc::new(crate::ca::Ca::generate().expect("root"));
        let secrets = Secrets::new(ca.clone(), std::time::Duration::from_secs(3600));
        let names = |l: &sextant_compiler::List| -> Vec<String> {
            l.iter().map(|e| e.name.clone()).collect()
        };
        assert_eq!(names(&secrets.list(None)), [ROOT_SECRET]);
        let id = Identity::parse("spiffe://cluster.local/ns/bookinfo/sa/reviews").expect("id");
        let list = secrets.list(Some(&id));
        assert_eq!(names(&list), [ROOT_SECRET, WORKLOAD_SECRET]);
        assert!(Arc::ptr_eq(&list, &secrets.list(Some(&id))), "issued once");
        let default = Secret::decode(list[1].body.to_bytes()).expect("a Secret");
        let Some(secret::Type::TlsCertificate(cert)) = default.r#type else {
            panic!("not a certificate: {default:?}");
        };
        let Some(Specifier::InlineBytes(chain)) = cert.certificate_chain.and_then(|d| d.specifier)
        else {
            panic!("no inline chain");
        };
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let leaf = CertificateDer::from_pem_slice(&chain).expect("PEM");
        assert_eq!(
            &*crate::tls::certificate_identities(&leaf),
            std::slice::from_ref(&id)
        );
        assert!(!secrets.expire(), "nothing is past half its life");

        // Renewal: only through `expire`, so that one wake reaches every proxy of the identity.
        let short = Secrets::new(ca, std::time::Duration::from_secs(2));
        let first = short.list(Some(&id));
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(
            Arc::ptr_eq(&first, &short.list(Some(&id))),
            "past half its life, but not renewed behind the other proxies' backs"
        );
        assert!(short.expire(), "marked for renewal");
        assert!(!short.expire(), "marked once");
        let second = short.list(Some(&id));
        assert!(!Arc::ptr_eq(&first, &second), "issued again");
        assert!(Arc::ptr_eq(&second, &short.list(Some(&id))));
    }

    #[test]
    fn endpoint_and_virtual_service_changes_are_reused_others_rebuild() {
        let mut d = sextant_compiler::Rebuild::default();
        let mut c = Changes::default();
        c.endpoints.insert("a.default.svc.cluster.local".into());
        assert!(reuse(&c, &mut d).is_some());
        assert!(!d.routing);
        c.configs.insert(vs(Kind::VirtualService));
        assert!(reuse(&c, &mut d).is_some());
        assert!(d.routing);
        assert_eq!(d.endpoints.len(), 1);
        c.configs.insert(vs(Kind::DestinationRule));
        assert!(reuse(&c, &mut d).is_none());
        let mut c = Changes::default();
        c.services.insert("a.default.svc.cluster.local".into());
        assert!(reuse(&c, &mut d).is_none());
    }

    #[test]
    fn the_change_log_must_reach_back_to_the_entry() {
        let mesh = Mesh::new(Arc::new(Metrics::new()));
        for version in 1..=(CHANGE_LOG as u64 + 3) {
            let snapshot = Snapshot {
                version,
                ..Snapshot::default()
            };
            mesh.publish(Arc::new(snapshot), Changes::default());
        }
        let newest = CHANGE_LOG as u64 + 3;
        assert!(mesh.rebuild(newest - 5, newest).is_some());
        // Versions that fell out of the log are rebuilt whole.
        assert!(mesh.rebuild(1, newest).is_none());
    }
}
