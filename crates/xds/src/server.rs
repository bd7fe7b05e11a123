//! The tonic side: a short loop per stream around the protocol state machines.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use envoy_types::pb::{
    envoy::{config::core::v3::Node, service::discovery::v3::DeltaDiscoveryRequest},
    google::protobuf::{Struct, Value, value::Kind as ValueKind},
};
use sextant_model::Proxy;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tonic::Status;

use crate::{
    grpc::{AdsService, Caller, Outgoing, Requests, Streams},
    protocol::{
        Clock, Delta, Event, Interner, Limits, ProxyResources, Refused, Sotw, SotwRequest,
        SystemClock, TypeStatus,
    },
};

/// What the server needs from the rest of the control plane.
pub trait Generator: Send + Sync + 'static {
    /// Whether every source has done its initial sync.
    fn ready(&self) -> bool;
    /// Completes a proxy parsed from its node (labels and identity from its workload).
    fn complete(&self, proxy: Proxy) -> Proxy;
    /// The current resources of a proxy (shared, encoded once). May compile: the server
    /// calls it off the runtime's worker unless [`Generator::cached`] answers.
    fn resources(&self, proxy: &Proxy) -> Arc<ProxyResources>;
    /// The current resources of a proxy when they need no compiling (its scope is compiled
    /// for the current version and no certificate needs signing), cheap enough to run on the
    /// runtime; `None` sends the server to [`Generator::resources`] on a blocking thread.
    fn cached(&self, _proxy: &Proxy) -> Option<Arc<ProxyResources>> {
        None
    }
    /// [`Generator::resources`] as `view` shows them.
    fn resources_in(&self, proxy: &Proxy, _view: View) -> Arc<ProxyResources> {
        self.resources(proxy)
    }
    /// [`Generator::cached`] as `view` shows them.
    fn cached_in(&self, proxy: &Proxy, _view: View) -> Option<Arc<ProxyResources>> {
        self.cached(proxy)
    }
    /// Called for ACKs, NACKs and pushes, for metrics.
    fn observe(&self, _proxy: &Proxy, _event: &Event) {}
    /// Called when a proxy has ACKed everything sent for a configuration change, with the time
    /// since the change reached its stream.
    fn converged(&self, _proxy: &Proxy, _elapsed: std::time::Duration) {}
    /// Called for each response with the time from its trigger (a change or a request) until
    /// it was queued on the stream.
    fn pushed(&self, _proxy: &Proxy, _type_url: &str, _elapsed: std::time::Duration) {}
    /// Called when a proxy's stream has ended.
    fn disconnected(&self, _proxy: &Proxy) {}
}

/// How a stream is shown its proxy's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Every virtual host inside its route configuration.
    Full,
    /// Route configurations without virtual hosts, which the proxy asks for on demand (VHDS,
    /// see [`crate::protocol::vhds`]), and HTTP connection managers that ask.
    OnDemand,
}

/// A proxy from its node: Istio's node id and the metadata keys istiod reads.
pub fn proxy_from_node(node: &Node) -> Result<Proxy, String> {
    if node.id.is_empty() {
        return Err("missing node information".into());
    }
    let mut proxy = Proxy::from_node_id(&node.id).map_err(|e| e.to_string())?;
    if let Some(l) = &node.locality {
        proxy.locality = sextant_model::Locality {
            region: l.region.clone(),
            zone: l.zone.clone(),
            subzone: l.sub_zone.clone(),
        };
    }
    if let Some(meta) = &node.metadata {
        let mut keys: Vec<&String> = meta.fields.keys().collect();
        keys.sort();
        for key in keys {
            match &meta.fields[key].kind {
                Some(ValueKind::StringValue(s)) => proxy.apply_metadata(key, s),
                Some(ValueKind::BoolValue(b)) => proxy.apply_metadata(key, &b.to_string()),
                Some(ValueKind::StructValue(s)) if key == "LABELS" => {
                    proxy.labels.extend(string_fields(s));
                }
                _ => {}
            }
        }
    }
    Ok(proxy)
}

fn string_fields(s: &Struct) -> impl Iterator<Item = (String, String)> + '_ {
    s.fields
        .iter()
        .filter_map(|(k, v): (&String, &Value)| match &v.kind {
            Some(ValueKind::StringValue(s)) => Some((k.clone(), s.clone())),
            _ => None,
        })
}

/// One connected stream, for `/debug/syncz`.
#[derive(Clone, Debug)]
pub struct Connection {
    /// Node id.
    pub proxy: String,
    /// `sotw` or `delta`.
    pub protocol: &'static str,
    /// When the stream opened.
    pub connected_at: SystemTime,
    /// The identity the proxy proved (streams on the TLS listener).
    pub identity: Option<String>,
    /// Per type URL.
    pub types: BTreeMap<String, TypeStatus>,
}

/// Connected streams by connection number.
#[derive(Default)]
pub struct Connections {
    next: AtomicU64,
    connections: Mutex<BTreeMap<u64, Connection>>,
}

impl Connections {
    /// A copy of every connection's status.
    pub fn list(&self) -> Vec<Connection> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Connection>> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The protocol of a stream: state-of-the-world or delta.
trait Machine: Send + 'static {
    type Req: Send + 'static;
    const NAME: &'static str;
    fn new(names: &Interner, clock: &Arc<dyn Clock>, limits: Limits) -> Self;
    fn node(req: &Self::Req) -> Option<&Node>;
    fn admit(&self, req: &Self::Req) -> Result<(), Refused>;
    fn request(&mut self, req: Self::Req, all: &ProxyResources) -> Vec<Outgoing>;
    fn update(&mut self, all: &ProxyResources) -> Vec<Outgoing>;
    fn status(&self) -> BTreeMap<String, TypeStatus>;
    fn drain(&mut self) -> Vec<Event>;
}

impl Machine for Sotw {
    type Req = SotwRequest;
    const NAME: &'static str = "sotw";
    fn new(names: &Interner, clock: &Arc<dyn Clock>, limits: Limits) -> Self {
        Sotw::new(names.clone(), clock.clone()).with_limits(limits)
    }
    fn node(req: &SotwRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn admit(&self, req: &SotwRequest) -> Result<(), Refused> {
        Sotw::admit(self, req)
    }
    fn request(&mut self, req: SotwRequest, all: &ProxyResources) -> Vec<Outgoing> {
        self.on_request(req, all)
            .map(Outgoing::Sotw)
            .into_iter()
            .collect()
    }
    fn update(&mut self, all: &ProxyResources) -> Vec<Outgoing> {
        self.on_update(all)
            .into_iter()
            .map(Outgoing::Sotw)
            .collect()
    }
    fn status(&self) -> BTreeMap<String, TypeStatus> {
        Sotw::status(self)
    }
    fn drain(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

impl Machine for Delta {
    type Req = DeltaDiscoveryRequest;
    const NAME: &'static str = "delta";
    fn new(_names: &Interner, clock: &Arc<dyn Clock>, limits: Limits) -> Self {
        Delta::new(clock.clone()).with_limits(limits)
    }
    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn admit(&self, req: &DeltaDiscoveryRequest) -> Result<(), Refused> {
        Delta::admit(self, req)
    }
    fn request(&mut self, req: DeltaDiscoveryRequest, all: &ProxyResources) -> Vec<Outgoing> {
        let answer = self.on_request(req, all);
        let owed = answer.as_ref().and_then(|_| self.owed(all));
        answer
            .into_iter()
            .chain(owed)
            .map(Outgoing::Delta)
            .collect()
    }
    fn update(&mut self, all: &ProxyResources) -> Vec<Outgoing> {
        self.on_update(all)
            .into_iter()
            .map(Outgoing::Delta)
            .collect()
    }
    fn status(&self) -> BTreeMap<String, TypeStatus> {
        Delta::status(self)
    }
    fn drain(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

/// The ADS service.
pub struct AdsServer<G> {
    generator: Arc<G>,
    updates: watch::Receiver<u64>,
    connections: Arc<Connections>,
    shutdown: watch::Receiver<bool>,
    max_request_bytes: usize,
    /// Subscribed names, one copy for every stream of this server that asks for the same.
    names: Interner,
    clock: Arc<dyn Clock>,
    limits: Limits,
    /// Streams compiling at once (one per core): the others wait here, as tasks, for their
    /// turn, and then usually find their scope compiled by the stream before them.
    compiling: Arc<tokio::sync::Semaphore>,
    /// Whether delta streams whose node asks for it get virtual hosts on demand.
    vhds: bool,
}

/// Largest request accepted by default (Envoy's requests are small; this bounds hostile ones).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

impl<G: Generator> AdsServer<G> {
    /// A server that pushes whenever `updates` changes (the published snapshot version) and
    /// closes streams when `shutdown` turns true.
    pub fn new(
        generator: Arc<G>,
        updates: watch::Receiver<u64>,
        connections: Arc<Connections>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        AdsServer {
            generator,
            updates,
            connections,
            shutdown,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            names: Interner::default(),
            clock: Arc::new(SystemClock),
            limits: Limits::default(),
            compiling: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )),
            vhds: false,
        }
    }

    /// Serves virtual hosts on demand (VHDS) to the delta streams whose node sets
    /// [`crate::protocol::vhds::VHDS_METADATA_KEY`].
    pub fn vhds(mut self, enabled: bool) -> Self {
        self.vhds = enabled;
        self
    }

    /// Sets what each stream keeps of what its peer sends.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the clock that connection and stream statuses are stamped with.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the largest request accepted.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes;
        self
    }

    /// The gRPC service to add to a tonic server.
    pub fn into_service(self) -> AdsService<Self> {
        AdsService::new(Arc::new(self))
    }

    fn open<M: Machine>(
        &self,
        mut inbound: Requests<M::Req>,
        caller: Caller,
    ) -> Result<mpsc::Receiver<Result<Box<Outgoing>, Status>>, Status>
    where
        M::Req: prost::Message + Default,
    {
        if !self.generator.ready() {
            return Err(Status::unavailable(
                "server is not ready to serve discovery information",
            ));
        }
        let (tx, rx) = mpsc::channel(16);
        let generator = self.generator.clone();
        let mut updates = self.updates.clone();
        let connections = self.connections.clone();
        let mut shutdown = self.shutdown.clone();
        let names = self.names.clone();
        let clock = self.clock.clone();
        let limits = self.limits;
        let compiling = self.compiling.clone();
        let vhds = self.vhds && M::NAME == "delta";
        tokio::spawn(async move {
            let first = match inbound.next().await {
                Some(Ok(r)) => r,
                // A request that cannot be read ends the stream with what was wrong with it.
                Some(Err(status)) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                None => return,
            };
            let view = match M::node(&first) {
                Some(node) if vhds && crate::protocol::vhds::asks_for_vhds(node) => View::OnDemand,
                _ => View::Full,
            };
            let proxy = match M::node(&first).map(proxy_from_node) {
                Some(Ok(p)) => generator.complete(p),
                Some(Err(e)) => {
                    let _ = tx.send(Err(Status::invalid_argument(e))).await;
                    return;
                }
                None => {
                    let _ = tx
                        .send(Err(Status::invalid_argument("missing node information")))
                        .await;
                    return;
                }
            };
            let mut proxy = proxy;
            proxy.identity = match &caller {
                Caller::Anonymous => None,
                Caller::Authenticated(ids) => match ids.iter().find(|i| i.admits(&proxy)) {
                    Some(i) => Some(i.clone()),
                    None => {
                        let message = refusal(&proxy, ids);
                        tracing::warn!(proxy = %proxy.id, %message, "refusing stream");
                        let _ = tx.send(Err(Status::permission_denied(message))).await;
                        return;
                    }
                },
            };
            proxy.holds_certificate |= proxy.identity.is_some();
            let id = connections.next.fetch_add(1, Ordering::Relaxed);
            connections.lock().insert(
                id,
                Connection {
                    proxy: proxy.id.clone(),
                    protocol: M::NAME,
                    connected_at: clock.now(),
                    identity: proxy.identity.as_ref().map(ToString::to_string),
                    types: BTreeMap::new(),
                },
            );
            tracing::info!(proxy = %proxy.id, protocol = M::NAME, "proxy connected");
            // Requests are read by a task of their own, so that a stream busy sending (or
            // waiting for a slow proxy) still reads, and gives back any large-request permit
            // in time.
            let (requests_tx, mut requests) = mpsc::channel(1);
            tokio::spawn(async move {
                while let Some(request) = inbound.next().await {
                    let end = request.is_err();
                    // Boxed: a channel allocates room for 32 messages up front.
                    if requests_tx.send(request.map(Box::new)).await.is_err() || end {
                        break;
                    }
                }
            });
            let mut machine = M::new(&names, &clock, limits);
            updates.borrow_and_update();
            // gRPC clients know nothing of VHDS.
            let view = if proxy.proxyless { View::Full } else { view };
            let mut resources = current(&generator, &compiling, &proxy, view).await;
            let mut pending = Some(first);
            // Convergence: types sent since the last update that the proxy has not ACKed yet.
            let mut update_at: Option<std::time::Instant> = None;
            let mut unacked: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
            'stream: loop {
                let mut out = Vec::new();
                // Push time runs from the request or change that caused the responses.
                let mut triggered = std::time::Instant::now();
                if let Some(req) = pending.take() {
                    if let Err(refused) = machine.admit(&req) {
                        tracing::warn!(proxy = %proxy.id, %refused, "refusing request");
                        generator.observe(
                            &proxy,
                            &Event::Refused {
                                bound: refused.bound(),
                            },
                        );
                        let _ = tx
                            .send(Err(Status::resource_exhausted(refused.to_string())))
                            .await;
                        break 'stream;
                    }
                    out.extend(machine.request(req, &resources));
                } else {
                    tokio::select! {
                        msg = requests.recv() => match msg {
                            Some(Ok(req)) => pending = Some(*req),
                            Some(Err(status)) => {
                                tracing::debug!(proxy = %proxy.id, %status, "stream error");
                                let _ = tx.send(Err(status)).await;
                                break 'stream;
                            }
                            None => break 'stream,
                        },
                        changed = updates.changed() => {
                            if changed.is_err() {
                                break 'stream;
                            }
                            triggered = std::time::Instant::now();
                            resources = keep_unchanged_own(&resources, current(&generator, &compiling, &proxy, view).await);
                            update_at = Some(std::time::Instant::now());
                            unacked.clear();
                            out.extend(machine.update(&resources));
                        }
                        _ = shutdown.changed() => break 'stream,
                    }
                }
                for event in machine.drain() {
                    match &event {
                        Event::Nack {
                            type_url, error, ..
                        } => {
                            tracing::warn!(proxy = %proxy.id, type_url = %type_url, %error, "proxy rejected configuration");
                            unacked.remove(type_url);
                        }
                        Event::Sent { type_url, .. } if update_at.is_some() => {
                            unacked.insert(type_url.clone());
                        }
                        Event::Ack { type_url } => {
                            if unacked.remove(type_url)
                                && unacked.is_empty()
                                && let Some(t) = update_at.take()
                            {
                                generator.converged(&proxy, t.elapsed());
                            }
                        }
                        _ => {}
                    }
                    generator.observe(&proxy, &event);
                }
                if let Some(c) = connections.lock().get_mut(&id) {
                    c.types = machine.status();
                }
                for response in out {
                    let type_url = response.type_url();
                    // A proxy that stops reading must not pin this task past shutdown.
                    tokio::select! {
                        sent = tx.send(Ok(Box::new(response))) => if sent.is_err() { break 'stream; },
                        _ = shutdown.changed() => break 'stream,
                    }
                    generator.pushed(&proxy, type_url, triggered.elapsed());
                }
            }
            connections.lock().remove(&id);
            generator.disconnected(&proxy);
            tracing::info!(proxy = %proxy.id, "proxy disconnected");
        });
        Ok(rx)
    }
}

/// A proxy's current resources: from the generator's cache when they are there, else
/// compiled on the runtime's blocking pool with one of the `compiling` permits. Waiting for a
/// permit takes no thread, so a change that wakes every stream wakes only as many threads as
/// there are cores (a thread for each, as `block_in_place` makes, cost more than compiling).
async fn current<G: Generator>(
    generator: &Arc<G>,
    compiling: &Arc<tokio::sync::Semaphore>,
    proxy: &Proxy,
    view: View,
) -> Arc<ProxyResources> {
    if let Some(resources) = generator.cached_in(proxy, view) {
        return resources;
    }
    let Ok(permit) = compiling.clone().acquire_owned().await else {
        return generator.resources_in(proxy, view);
    };
    // Another stream of the same scope may have compiled it meanwhile.
    if let Some(resources) = generator.cached_in(proxy, view) {
        return resources;
    }
    let (g, p) = (generator.clone(), proxy.clone());
    // The permit goes with the compile: a stream that ends meanwhile (its peer gone) does
    // not free it while the compile still runs.
    let compile = move || {
        let resources = g.resources_in(&p, view);
        drop(permit);
        resources
    };
    match tokio::task::spawn_blocking(compile).await {
        Ok(resources) => resources,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The runtime is shutting down: compile here.
        Err(_) => generator.resources_in(proxy, view),
    }
}

/// `fresh`, but with the proxy's own part from `previous` when it did not change: the protocol
/// then recognises unchanged types by their lists alone.
fn keep_unchanged_own(
    previous: &Arc<ProxyResources>,
    fresh: Arc<ProxyResources>,
) -> Arc<ProxyResources> {
    use sextant_resources::Encoded;
    // Each resource's hash is its content's: comparing names and hashes is enough.
    let same = |a: &[Encoded], b: &[Encoded]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.hash == y.hash && x.name == y.name)
    };
    let (p, f) = (&previous.own, &fresh.own);
    if Arc::ptr_eq(p, f)
        || !(same(&p.clusters, &f.clusters)
            && same(&p.endpoints, &f.endpoints)
            && same(&p.listeners, &f.listeners)
            && same(&p.routes, &f.routes))
    {
        return fresh;
    }
    Arc::new(ProxyResources {
        shared: fresh.shared.clone(),
        own: previous.own.clone(),
        secrets: fresh.secrets.clone(),
        virtual_hosts: fresh.virtual_hosts.clone(),
    })
}

/// Why a proxy's node disagrees with the identities its caller proved, as istiod words it.
fn refusal(proxy: &Proxy, identities: &[sextant_model::Identity]) -> String {
    let ids: Vec<String> = identities.iter().map(ToString::to_string).collect();
    format!(
        "authorization failed: no identities ({}) matched {}/{}",
        ids.join(", "),
        proxy.namespace,
        proxy.service_account.as_deref().unwrap_or("")
    )
}

impl<G: Generator> Streams for AdsServer<G> {
    fn sotw(
        &self,
        requests: Requests<SotwRequest>,
        caller: Caller,
    ) -> Result<mpsc::Receiver<Result<Box<Outgoing>, Status>>, Status> {
        self.open::<Sotw>(requests, caller)
    }

    fn delta(
        &self,
        requests: Requests<DeltaDiscoveryRequest>,
        caller: Caller,
    ) -> Result<mpsc::Receiver<Result<Box<Outgoing>, Status>>, Status> {
        self.open::<Delta>(requests, caller)
    }

    fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }
}
