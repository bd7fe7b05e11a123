//! The xDS generator (`sextant_xds::Generator`): the published snapshot and each scope's
//! encoded resources, shared by every proxy of the scope and carried across snapshots (a new
//! snapshot rebuilds only what its changes touch, see [`sextant_compiler::recompile_part`]),
//! and the SDS secrets of `sextant-ca`.

mod scopes;
mod turns;
pub mod vhds;

use scopes::Scopes;
use turns::Turns;

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use sextant_ca::Secrets;
use sextant_compiler::Part;
use sextant_index::Changes;
use sextant_model::{Kind, Proxy, Snapshot};
use sextant_resources::EncodedResources;
use sextant_xds::{Generator, ProxyResources, View, protocol::Event};

use crate::{metrics::Metrics, quarantine::Quarantine};

/// Changes kept to bring older scope entries up to date; older entries are rebuilt whole.
const CHANGE_LOG: usize = 64;

/// Default cap on cached scopes (`--max-scopes`): W-L's 5,000 proxies fit even one scope each.
pub const DEFAULT_MAX_SCOPES: usize = 10_000;

/// A scope's shared (outbound) resources and the snapshot they were built from.
#[derive(Default)]
struct ScopeEntry {
    /// `None` until first built.
    version: Option<u64>,
    resources: Arc<EncodedResources>,
}

/// What every proxy's resources come from: the snapshot, readiness, the scope cache and the
/// secrets.
pub struct XdsGenerator {
    snapshot: RwLock<Arc<Snapshot>>,
    ready: AtomicBool,
    /// The version of the source's last snapshot: the same snapshot again (a re-read that
    /// found nothing new) is no new version for the streams or the push status.
    source_version: AtomicU64,
    /// Changes that produced each published version (oldest first).
    log: Mutex<VecDeque<(u64, Changes)>>,
    /// By scope key; one lock per scope, so one proxy of a scope compiles it and the others
    /// wait for the result.
    scopes: Mutex<Scopes>,
    /// What scopes share: one copy of identical resources across scopes and snapshots,
    /// clusters and load assignments built once per snapshot.
    cache: Mutex<sextant_compiler::ScopeCache>,
    /// SDS secrets (`ROOTCA` for every proxy, `default` for a proved identity), when the
    /// control plane has a CA.
    secrets: Option<Secrets>,
    /// The secrets served without a CA: none.
    no_secrets: sextant_resources::List,
    /// Gateway credentials (`kubernetes://` secrets) from the snapshot's Secrets.
    credentials: crate::credentials::Credentials,
    /// Each proxy's own (inbound) part, reused while only changes that cannot touch it
    /// happened (see [`keeps_own`]); dropped when its stream ends.
    own: Mutex<HashMap<String, OwnPart>>,
    /// Objects held back after a proxy rejected them (NACK isolation); also orders
    /// publishing.
    quarantine: Mutex<Quarantine>,
    /// Scopes compiled at once (one per core): each stream compiling waits its turn on a
    /// blocking thread, never on a runtime worker.
    compiling: Turns,
    /// Each scope's part as proxies served virtual hosts on demand see it.
    views: vhds::Views,
    /// Whether NACKs from unauthenticated streams (the plaintext port) may hold objects back.
    plaintext_nacks: bool,
    /// Tells the streams a version was published (set by `with_updates`).
    updates: Option<tokio::sync::watch::Sender<u64>>,
    /// The held objects, for the status writer.
    held: tokio::sync::watch::Sender<sextant_kube::leader::status::Held>,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
}

impl XdsGenerator {
    /// A generator with an empty snapshot, not yet ready.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        XdsGenerator {
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            ready: AtomicBool::new(false),
            source_version: AtomicU64::new(0),
            log: Mutex::new(VecDeque::new()),
            scopes: Mutex::new(Scopes {
                slots: HashMap::new(),
                clock: 0,
                max: DEFAULT_MAX_SCOPES,
            }),
            cache: Mutex::new(sextant_compiler::ScopeCache::default()),
            secrets: None,
            no_secrets: Arc::from([]),
            credentials: Default::default(),
            own: Mutex::new(HashMap::new()),
            quarantine: Mutex::new(Quarantine::new(crate::quarantine::DEFAULT_MAX_HELD_OBJECTS)),
            compiling: Turns::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
            views: Default::default(),
            plaintext_nacks: false,
            updates: None,
            held: tokio::sync::watch::Sender::new(Default::default()),
            metrics,
        }
    }

    /// Holds at most `max` objects back after NACKs.
    pub fn with_max_held_objects(self, max: usize) -> Self {
        *self.quarantine.lock().unwrap_or_else(|p| p.into_inner()) = Quarantine::new(max);
        self
    }

    /// Lets NACKs from unauthenticated streams hold objects back too. Anyone who reaches the
    /// plaintext port could then hold back other teams' newest objects by NACKing them, so
    /// only proxies that proved an identity do by default.
    pub fn with_plaintext_nacks(mut self, allowed: bool) -> Self {
        self.plaintext_nacks = allowed;
        self
    }

    /// Tells `updates` the version of each snapshot published, including those published
    /// because an object was held back.
    pub fn with_updates(mut self, updates: tokio::sync::watch::Sender<u64>) -> Self {
        self.updates = Some(updates);
        self
    }

    /// The objects held back after NACKs, with what their status says, as they change.
    pub fn held_updates(&self) -> tokio::sync::watch::Receiver<sextant_kube::leader::status::Held> {
        self.held.subscribe()
    }

    /// The objects held back after NACKs.
    pub fn held(
        &self,
    ) -> std::collections::BTreeMap<sextant_model::ObjectRef, crate::quarantine::Held> {
        self.quarantine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .held()
            .clone()
    }

    /// Serves `secrets` over SDS.
    pub fn with_secrets(mut self, secrets: Secrets) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// Serves gateway credentials only to identities `access` allows to read them.
    pub fn with_secret_access(mut self, access: Arc<dyn crate::credentials::Authorize>) -> Self {
        self.credentials = crate::credentials::Credentials::new(access);
        self
    }

    /// Caches at most `max` scopes (at least one).
    pub fn with_max_scopes(self, max: usize) -> Self {
        self.scopes.lock().unwrap_or_else(|p| p.into_inner()).max = max.max(1);
        self
    }

    /// The SDS secrets, if any.
    pub fn secrets(&self) -> Option<&Secrets> {
        self.secrets.as_ref()
    }

    /// Publishes a new snapshot and the changes since the previous one, with held objects laid
    /// over it; after the first, the generator is ready. Returns the version published.
    pub fn publish(&self, snapshot: Arc<Snapshot>, changes: Changes) -> u64 {
        self.publish_timed(snapshot, changes, None)
    }

    /// [`XdsGenerator::publish`], with when the source's stages of this snapshot ended (a
    /// source change made it), for the push status.
    pub fn publish_timed(
        &self,
        snapshot: Arc<Snapshot>,
        changes: Changes,
        source: Option<crate::push_status::SourceTiming>,
    ) -> u64 {
        let again =
            self.source_version.swap(snapshot.version, Ordering::SeqCst) == snapshot.version;
        if again && changes.is_empty() && !changes.mesh_config {
            return self.snapshot().version;
        }
        let mut quarantine = self.quarantine.lock().unwrap_or_else(|p| p.into_inner());
        let (snapshot, changes) = quarantine.publish(snapshot, changes);
        self.report_held(&quarantine);
        // Before the streams hear of it, so that each of their sends finds its version.
        self.metrics.push_status.published(snapshot.version, source);
        self.install(snapshot, changes)
    }

    /// Tells the status writer which objects are held, when that changed.
    fn report_held(&self, quarantine: &Quarantine) {
        self.held.send_if_modified(|reported| {
            let now = quarantine.status_messages();
            let changed = **reported != now;
            if changed {
                *reported = Arc::new(now);
            }
            changed
        });
    }

    /// Makes `snapshot` the current one and tells the streams.
    fn install(&self, snapshot: Arc<Snapshot>, changes: Changes) -> u64 {
        let version = snapshot.version;
        {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            log.push_back((snapshot.version, changes));
            while log.len() > CHANGE_LOG {
                log.pop_front();
            }
        }
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = snapshot;
        self.ready.store(true, Ordering::SeqCst);
        if let Some(updates) = &self.updates {
            updates.send_if_modified(|v| std::mem::replace(v, version) != version);
        }
        version
    }

    /// Follows NACKs for [`Quarantine`]: holds the object a proxy rejected, and publishes.
    fn isolate(&self, proxy: &Proxy, event: &Event) {
        if proxy.identity.is_none() && !self.plaintext_nacks {
            if let Event::Nack { type_url, .. } = event {
                tracing::warn!(
                    proxy = %proxy.id, %type_url,
                    "nothing held back: NACK isolation follows only proxies of the secure port \
                     unless --hold-on-plaintext-nacks; this proxy gets no change to the rejected \
                     type until the object it rejected is fixed"
                );
            }
            return;
        }
        let mut quarantine = self.quarantine.lock().unwrap_or_else(|p| p.into_inner());
        match quarantine.observe(proxy, event) {
            Ok(Some((snapshot, changes))) => {
                self.report_held(&quarantine);
                self.install(snapshot, changes);
            }
            Ok(None) => {}
            Err(crate::quarantine::Refusal::TooManyHeld) => self.metrics.bounded("held_objects"),
        }
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
        let mut rebuild = sextant_compiler::Rebuild::default();
        self.each_change(since, until, |changes| reuse(changes, &mut rebuild))?;
        Some(rebuild)
    }

    /// Calls `f` on every change after `since` up to `until`, stopping at its first `None`;
    /// `None` also when the log no longer reaches back to `since`.
    fn each_change(
        &self,
        since: u64,
        until: u64,
        mut f: impl FnMut(&Changes) -> Option<()>,
    ) -> Option<()> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let mut covered = false;
        for (version, changes) in log.iter() {
            if *version <= since {
                covered = true;
                continue;
            }
            if *version > until {
                break;
            }
            f(changes)?;
        }
        covered.then_some(())
    }

    /// A proxy's resources from its scope's and its secrets: its own part (inbound, small)
    /// compiled here.
    fn assemble(
        &self,
        snapshot: &Snapshot,
        proxy: &Proxy,
        shared: Arc<EncodedResources>,
        secrets: sextant_resources::List,
    ) -> Arc<ProxyResources> {
        self.quarantine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .resources(proxy, snapshot.version);
        let own = self.own_part(snapshot, proxy);
        Arc::new(ProxyResources {
            shared,
            own,
            secrets,
            virtual_hosts: None,
        })
    }

    /// The proxy's own part for `snapshot`: the one compiled for an earlier snapshot when
    /// nothing since could change it (a VirtualService or endpoint change wakes every stream,
    /// and each would otherwise compile its inbound part again), else compiled now.
    /// The proxy as last compiled for node `id` (what its stream told: metadata, locality,
    /// network, cluster), while its own part is kept.
    pub fn compiled_proxy(&self, id: &str) -> Option<Proxy> {
        let own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        own.get(id).map(|part| part.proxy.clone())
    }

    fn own_part(&self, snapshot: &Snapshot, proxy: &Proxy) -> Arc<EncodedResources> {
        let kept = {
            let own = self.own.lock().unwrap_or_else(|p| p.into_inner());
            own.get(&proxy.id)
                .filter(|o| o.proxy == *proxy)
                .map(|o| (o.version, o.resources.clone()))
        };
        if let Some((version, resources)) = kept
            && (version == snapshot.version || self.keeps_own(version, snapshot.version))
        {
            return resources;
        }
        let resources = Arc::new(sextant_compiler::compile_part(
            snapshot,
            proxy,
            Part::Inbound,
        ));
        let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded like the scopes: proxies asked about without a stream are not remembered
        // past the cap.
        if own.len() >= MAX_OWN_PARTS && !own.contains_key(&proxy.id) {
            own.clear();
        }
        own.insert(
            proxy.id.clone(),
            OwnPart {
                version: snapshot.version,
                proxy: proxy.clone(),
                resources: resources.clone(),
            },
        );
        resources
    }

    /// Whether every change after `since` up to `until` leaves a proxy's own part as it was
    /// (and the log still reaches back to `since`).
    fn keeps_own(&self, since: u64, until: u64) -> bool {
        self.each_change(since, until, |changes| keeps_inbound(changes).then_some(()))
            .is_some()
    }

    /// The scope's shared resources for `snapshot`, compiled or brought up to date once.
    fn scope_resources(&self, snapshot: &Snapshot, scope: &Proxy) -> Arc<EncodedResources> {
        let entry = {
            let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
            let (entry, evicted) = scopes.get(scope_key(scope));
            if evicted {
                self.metrics.bounded("scope_cache");
            }
            self.metrics.scopes.set(scopes.slots.len() as i64);
            entry
        };
        let mut entry = entry.lock().unwrap_or_else(|p| p.into_inner());
        if entry.version == Some(snapshot.version) {
            return entry.resources.clone();
        }
        // CPU-bound: more at once than there are cores only adds memory.
        let _turn = self.compiling.enter();
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
        || changes.mesh_config
        || changes
            .configs
            .iter()
            .any(|c| c.kind != Kind::VirtualService)
    {
        return None;
    }
    rebuild.routing |= !changes.configs.is_empty();
    rebuild.endpoints.extend(changes.endpoints.iter().cloned());
    rebuild
        .virtual_service_hosts
        .extend(changes.virtual_service_hosts.iter().cloned());
    if !changes.configs.is_empty() && changes.virtual_service_hosts.is_empty() {
        // Changed VirtualServices whose hosts nobody noted: they may touch any scope.
        rebuild
            .virtual_service_hosts
            .insert((String::new(), String::new()));
    }
    Some(())
}

/// Whether `changes` leave every proxy's own part (inbound listeners and clusters) as it was:
/// that part reads the Services selecting the workload, the workload, PeerAuthentications,
/// Sidecars and the mesh config, and none of VirtualServices, DestinationRules, Gateways,
/// endpoints or credentials.
fn keeps_inbound(changes: &Changes) -> bool {
    changes.services.is_empty()
        && changes.workloads.is_empty()
        && !changes.mesh_config
        && changes.configs.iter().all(|c| {
            matches!(
                c.kind,
                Kind::VirtualService | Kind::DestinationRule | Kind::Gateway
            )
        })
}

/// At most this many proxies' own parts are kept (as many as scopes by default).
const MAX_OWN_PARTS: usize = DEFAULT_MAX_SCOPES;

/// A proxy's own part and what it was compiled for.
struct OwnPart {
    version: u64,
    proxy: Proxy,
    resources: Arc<EncodedResources>,
}

/// What a proxy's shared output depends on besides the snapshot.
fn scope_key(p: &Proxy) -> String {
    format!(
        "{}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{}|{:?}|{}|{}|{}|{}",
        p.namespace,
        p.labels,
        p.flavor,
        p.holds_certificate,
        p.interception,
        p.bind_address,
        p.ips,
        p.workload_name,
        p.kind,
        p.proxyless,
        p.cluster_id,
        p.network,
        p.locality.label()
    )
}

impl Generator for XdsGenerator {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn complete(&self, mut proxy: Proxy) -> Proxy {
        let snapshot = self.snapshot();
        if let Some(w) =
            snapshot.workload_in(&proxy.cluster_id, &proxy.namespace, &proxy.workload_name)
        {
            proxy.complete_from(w);
        }
        proxy
    }

    fn resources(&self, proxy: &Proxy) -> Arc<ProxyResources> {
        let snapshot = self.snapshot();
        let scope = sextant_compiler::scope(&snapshot, proxy);
        let shared = self.scope_resources(&snapshot, &scope);
        let secrets = match &self.secrets {
            Some(s) => s.list(&proxy.id, proxy.identity.as_ref()),
            None => self.no_secrets.clone(),
        };
        let secrets =
            crate::credentials::merged(&secrets, &self.credentials.for_proxy(&snapshot, proxy));
        self.assemble(&snapshot, proxy, shared, secrets)
    }

    fn cached(&self, proxy: &Proxy) -> Option<Arc<ProxyResources>> {
        let snapshot = self.snapshot();
        let scope = sextant_compiler::scope(&snapshot, proxy);
        let entry = self
            .scopes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cached(&scope_key(&scope))?;
        // Being compiled by another stream: wait for it off the runtime.
        let shared = {
            let entry = entry.try_lock().ok()?;
            (entry.version == Some(snapshot.version)).then(|| entry.resources.clone())?
        };
        let secrets = match &self.secrets {
            Some(s) => s.cached(&proxy.id, proxy.identity.as_ref())?,
            None => self.no_secrets.clone(),
        };
        let secrets =
            crate::credentials::merged(&secrets, &self.credentials.for_proxy(&snapshot, proxy));
        Some(self.assemble(&snapshot, proxy, shared, secrets))
    }

    fn resources_in(&self, proxy: &Proxy, view: View) -> Arc<ProxyResources> {
        let full = self.resources(proxy);
        match view {
            View::Full => full,
            View::OnDemand => self.on_demand(proxy, full),
        }
    }

    fn cached_in(&self, proxy: &Proxy, view: View) -> Option<Arc<ProxyResources>> {
        let full = self.cached(proxy)?;
        match view {
            View::Full => Some(full),
            View::OnDemand => self.cached_on_demand(proxy, full),
        }
    }

    fn observe(&self, proxy: &Proxy, event: &Event) {
        self.isolate(proxy, event);
        match event {
            Event::Nack {
                type_url,
                truncated,
                ..
            } => {
                self.metrics.nack(type_url);
                self.metrics.push_status.nacked(&proxy.id, type_url);
                if *truncated {
                    self.metrics.bounded("nack_message");
                }
            }
            Event::Refused { bound } => self.metrics.bounded(bound),
            Event::Ack { type_url } => {
                self.metrics.ack(type_url);
                self.metrics.push_status.acked(&proxy.id, type_url);
            }
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

    fn pushed(&self, proxy: &Proxy, type_url: &str, elapsed: std::time::Duration) {
        // The version published now: a stream sends the newest it has been told of.
        let version = self
            .snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .version;
        self.metrics.push_status.sent(&proxy.id, type_url, version);
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

    fn disconnected(&self, proxy: &Proxy) {
        self.metrics.push_status.disconnected(&proxy.id);
        self.own
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&proxy.id);
        if let Some(secrets) = &self.secrets {
            secrets.forget(&proxy.id, proxy.identity.as_ref());
        }
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
    fn the_same_source_snapshot_again_is_no_new_version() {
        let generator = XdsGenerator::new(Arc::new(Metrics::new()));
        let snapshot = Arc::new(Snapshot {
            version: 7,
            ..Snapshot::default()
        });
        let first = generator.publish(snapshot.clone(), Changes::default());
        assert_eq!(generator.publish(snapshot, Changes::default()), first);
        let newer = Arc::new(Snapshot {
            version: 8,
            ..Snapshot::default()
        });
        assert!(generator.publish(newer, Changes::default()) > first);
    }

    #[test]
    fn the_change_log_must_reach_back_to_the_entry() {
        let generator = XdsGenerator::new(Arc::new(Metrics::new()));
        for version in 1..=(CHANGE_LOG as u64 + 3) {
            let snapshot = Snapshot {
                version,
                ..Snapshot::default()
            };
            generator.publish(Arc::new(snapshot), Changes::default());
        }
        let newest = CHANGE_LOG as u64 + 3;
        assert!(generator.rebuild(newest - 5, newest).is_some());
        // Versions that fell out of the log are rebuilt whole.
        assert!(generator.rebuild(1, newest).is_none());
    }
}
