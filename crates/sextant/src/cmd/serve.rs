//! `sextant serve`: the control plane, fed from a directory of manifests or from a Kubernetes
//! cluster.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;

use notify::Watcher;
use sextant_index::{Index, Object};
use sextant_kube::leader;
use sextant_model::Kind;
use sextant_xds::{AdsServer, Registry, grpc::AdsService};
use tokio::sync::{mpsc, watch};

use crate::{
    admin,
    cli::{LogFormat, ServeArgs},
    mesh::{Mesh, Secrets},
    metrics::Metrics,
};

/// Lifetime of the workload certificates served over SDS (Istio's default).
const WORKLOAD_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long open connections may take to close once shutdown has begun.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Largest xDS request accepted (Envoy's requests are small; this bounds hostile ones).
const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

pub fn run(args: ServeArgs) -> ExitCode {
    init_logging(args.log_format, &args.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "sextant serve failed");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The directory source: every manifest under a directory, re-read on change. A file that
/// cannot be read or parsed keeps contributing its last good objects.
struct DirSource {
    dir: PathBuf,
    namespace: String,
    index: Index,
    last_good: HashMap<String, Vec<Object>>,
}

impl DirSource {
    fn reload(&mut self) -> (Arc<sextant_model::Snapshot>, sextant_index::Changes) {
        let mut current: HashMap<String, Vec<Object>> = HashMap::new();
        match sextant_source::files::read_inputs(std::slice::from_ref(&self.dir)) {
            Ok(inputs) => {
                for (file, text) in inputs {
                    match sextant_source::files::objects_from_text(&file, &text, &self.namespace) {
                        Ok((objects, skipped)) => {
                            for s in skipped {
                                tracing::warn!(location = %s.location, reason = %s.reason, "skipping document");
                            }
                            current.insert(file, objects);
                        }
                        Err(e) => {
                            tracing::warn!(file = %file, error = %e, "cannot parse file; keeping its previous content");
                            if let Some(previous) = self.last_good.get(&file) {
                                current.insert(file, previous.clone());
                            }
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the config directory; keeping the last configuration");
                current = self.last_good.clone();
            }
        }
        let mut by_kind: HashMap<Kind, Vec<Object>> = HashMap::new();
        for o in current.values().flatten() {
            by_kind.entry(o.kind()).or_default().push(o.clone());
        }
        for kind in [
            Kind::Namespace,
            Kind::Pod,
            Kind::Service,
            Kind::EndpointSlice,
            Kind::DestinationRule,
            Kind::VirtualService,
        ] {
            self.index
                .reset(kind, by_kind.remove(&kind).unwrap_or_default());
        }
        self.last_good = current;
        let (snapshot, changes) = self.index.publish();
        log_published(&snapshot, &changes);
        (snapshot, changes)
    }
}

/// Where the mesh comes from.
enum Source {
    /// A directory of manifests.
    Dir(DirSource),
    /// A cluster: watches keep the index current.
    Kube {
        index: Arc<Mutex<Index>>,
        _watches: sextant_kube::Watches,
        /// Published snapshots, for the status writer.
        published: watch::Sender<Option<Arc<sextant_model::Snapshot>>>,
    },
}

impl Source {
    /// A snapshot of what the source holds now.
    fn publish(&mut self) -> (Arc<sextant_model::Snapshot>, sextant_index::Changes) {
        match self {
            Source::Dir(dir) => dir.reload(),
            Source::Kube {
                index, published, ..
            } => {
                let (snapshot, changes) = index.lock().unwrap_or_else(|p| p.into_inner()).publish();
                log_published(&snapshot, &changes);
                published.send_replace(Some(snapshot.clone()));
                (snapshot, changes)
            }
        }
    }
}

fn log_published(snapshot: &sextant_model::Snapshot, changes: &sextant_index::Changes) {
    for (object, errors) in &snapshot.invalid {
        tracing::warn!(%object, errors = %errors.join("; "), "skipping invalid object");
    }
    tracing::info!(
        version = snapshot.version,
        services = changes.services.len(),
        endpoints = changes.endpoints.len(),
        configs = changes.configs.len(),
        "published snapshot"
    );
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        config_dir,
        namespace,
        xds_port,
        secure_xds_port,
        token_audiences,
        admin_port,
        listen_address,
        debounce_after_ms,
        debounce_max_ms,
        domain_suffix,
        trust_domain,
        log_format,
        log_level,
        lease_namespace,
        lease_duration_seconds,
        webhook_port,
        webhook_config,
        service_name,
        ca_dir,
    } = args;
    tracing::info!(
        config_dir = ?config_dir, %namespace, xds_port, secure_xds_port, admin_port, %listen_address,
        debounce_after_ms, debounce_max_ms, %domain_suffix, %trust_domain, ?log_format, %log_level,
        "starting sextant"
    );
    let metrics = Arc::new(Metrics::new());
    let registry = Arc::new(Registry::default());
    let index = Index::new(&domain_suffix, "Kubernetes").with_trust_domain(&trust_domain);
    let debounce = (
        Duration::from_millis(debounce_after_ms),
        Duration::from_millis(debounce_max_ms),
    );
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (updates_tx, updates_rx) = watch::channel(0);
    // Kept alive while serving.
    let mut _dir_watcher = None;
    let client = match config_dir {
        Some(_) => None,
        None => Some(kube::Client::try_default().await.context(
            "no --config-dir, and no Kubernetes configuration (in-cluster or KUBECONFIG)",
        )?),
    };
    let ca = match (&ca_dir, &client) {
        (Some(dir), _) => crate::ca::Ca::from_dir(dir)?,
        (None, Some(client)) => {
            crate::ca::Ca::from_cluster(client.clone(), &lease_namespace).await?
        }
        (None, None) => crate::ca::Ca::generate()?,
    };
    let ca = Arc::new(ca);
    let mesh = Arc::new(
        Mesh::new(metrics.clone()).with_secrets(Secrets::new(ca.clone(), WORKLOAD_CERT_TTL)),
    );
    // Certificates past half their life are replaced at the next update; make one.
    let rotation = updates_tx.clone();
    let rotating = mesh.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            if rotating.secrets().is_some_and(Secrets::expire) {
                rotation.send_modify(|_| {});
            }
        }
    });
    let authenticator = Arc::new(crate::secure::Authenticator::new(
        &trust_domain,
        client.clone(),
        token_audiences,
    ));
    match (config_dir, client) {
        (Some(config_dir), _) => {
            let mut source = Source::Dir(DirSource {
                dir: config_dir.clone(),
                namespace,
                index,
                last_good: HashMap::new(),
            });
            publish(&mut source, &mesh, &updates_tx);
            let mut watcher =
                notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                    // Reading the files ourselves raises access events; only changes matter.
                    if let Ok(e) = event
                        && !matches!(e.kind, notify::EventKind::Access(_))
                    {
                        let _ = events_tx.send(());
                    }
                })?;
            watcher.watch(&config_dir, notify::RecursiveMode::Recursive)?;
            _dir_watcher = Some(watcher);
            tokio::spawn(watch_loop(
                source,
                events_rx,
                debounce,
                mesh.clone(),
                updates_tx,
            ));
        }
        (None, Some(client)) => {
            let index = Arc::new(Mutex::new(index));
            let watches = sextant_kube::spawn(
                client.clone(),
                index.clone(),
                events_tx,
                metrics.kube.clone(),
            );
            let mut synced = watches.synced.clone();
            let (published, snapshots) = watch::channel(None);
            // Every replica serves; the Lease holder also writes status and the caBundle.
            let leader = leader::elect(client.clone(), &lease_namespace, lease_duration_seconds)
                .await
                .context("setting up the status Lease")?;
            leader::spawn(
                client,
                leader,
                leader::Duties {
                    generations: watches.generations.clone(),
                    snapshots,
                    status_writes: metrics.status_writes.clone(),
                    webhook_config,
                    ca_bundle: ca.bundle(),
                    leading: metrics.leader.clone(),
                },
            );
            let mut source = Source::Kube {
                index,
                _watches: watches,
                published,
            };
            let mesh = mesh.clone();
            // Serve (not ready) while the watches list; publish once every one has.
            tokio::spawn(async move {
                tracing::info!("waiting for the first list of every watch");
                if synced.wait_for(|s| *s).await.is_err() {
                    return;
                }
                publish(&mut source, &mesh, &updates_tx);
                watch_loop(source, events_rx, debounce, mesh, updates_tx).await;
            });
        }
        (None, None) => unreachable!("a client is made whenever there is no --config-dir"),
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let ads = Arc::new(
        AdsServer::new(
            mesh.clone(),
            updates_rx,
            registry.clone(),
            shutdown_rx.clone(),
        )
        .max_request_bytes(MAX_REQUEST_BYTES),
    );
    let xds_addr = SocketAddr::new(listen_address, xds_port);
    let admin_addr = SocketAddr::new(listen_address, admin_port);
    let admin_listener = tokio::net::TcpListener::bind(admin_addr).await?;
    let mut admin_shutdown = shutdown_rx.clone();
    let admin_server = axum::serve(
        admin_listener,
        admin::router(mesh.clone(), registry.clone()),
    )
    .with_graceful_shutdown(async move {
        let _ = admin_shutdown.wait_for(|s| *s).await;
    });
    let webhook_addr = SocketAddr::new(listen_address, webhook_port);
    // Istio's proxies check for istiod's name; Sextant's own Service name is there too.
    let names: Vec<String> = [service_name.as_str(), "istiod"]
        .iter()
        .flat_map(|s| {
            [
                format!("{s}.{lease_namespace}.svc"),
                format!("{s}.{lease_namespace}.svc.{domain_suffix}"),
            ]
        })
        .chain(["localhost".to_owned()])
        .collect();
    let mut ips = vec![std::net::IpAddr::from([127, 0, 0, 1])];
    if !listen_address.is_unspecified() && !ips.contains(&listen_address) {
        ips.push(listen_address);
    }
    let webhook_listener =
        crate::tls::TlsListener::bind(webhook_addr, ca.server_config(&names, &ips)?)
            .await
            .with_context(|| format!("listening on {webhook_addr}"))?;
    let mut webhook_shutdown = shutdown_rx.clone();
    let webhook_server = axum::serve(webhook_listener, crate::webhook::router())
        .with_graceful_shutdown(async move {
            let _ = webhook_shutdown.wait_for(|s| *s).await;
        });
    let mut xds_shutdown = shutdown_rx.clone();
    let xds_server = crate::xds_server()
        .add_service(AdsService::new(ads.clone()))
        .add_service(sextant_xds::csds::Csds::new(registry.clone()).into_service())
        .serve_with_incoming_shutdown(crate::xds_incoming(xds_addr)?, async move {
            let _ = xds_shutdown.wait_for(|s| *s).await;
        });
    let secure_addr = SocketAddr::new(listen_address, secure_xds_port);
    let secure_listener = crate::tls::TlsListener::new(
        crate::tls::listen(secure_addr).with_context(|| format!("listening on {secure_addr}"))?,
        ca.xds_server_config(&names, &ips)?,
    )?;
    let mut secure_shutdown = shutdown_rx.clone();
    let secure_server = crate::xds_server()
        .add_service(AdsService::new(ads).authenticated(authenticator))
        .serve_with_incoming_shutdown(secure_listener.into_incoming(), async move {
            let _ = secure_shutdown.wait_for(|s| *s).await;
        });
    tracing::info!(%xds_addr, %secure_addr, %admin_addr, %webhook_addr, "serving");
    let draining = mesh.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        // Not ready first, so no new proxies arrive; then close streams (proxies reconnect to
        // another replica) and let in-flight responses finish.
        draining.set_not_ready();
        tracing::info!("shutting down: not ready, draining streams");
        let _ = shutdown_tx.send(true);
    });
    let mut drain_started = shutdown_rx.clone();
    let servers = async { tokio::join!(admin_server, xds_server, secure_server, webhook_server) };
    // Connections get DRAIN_GRACE to close after shutdown begins; a proxy that never closes
    // its connection must not keep the process alive.
    let grace = async {
        let _ = drain_started.wait_for(|s| *s).await;
        tokio::time::sleep(DRAIN_GRACE).await;
    };
    tokio::select! {
        (admin_result, xds_result, secure_result, webhook_result) = servers => {
            admin_result?;
            xds_result?;
            secure_result?;
            webhook_result?;
        }
        () = grace => {
            tracing::warn!(grace = ?DRAIN_GRACE, "connections still open after the drain grace period; exiting");
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// The one place changes are debounced: after the first event, publish once the directory has
/// been quiet for `after`, or `max` after the first event at the latest.
async fn watch_loop(
    mut source: Source,
    mut events: mpsc::UnboundedReceiver<()>,
    (after, max): (Duration, Duration),
    mesh: Arc<Mesh>,
    updates: watch::Sender<u64>,
) {
    while events.recv().await.is_some() {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let quiet = tokio::time::Instant::now() + after;
            match tokio::time::timeout_at(quiet.min(deadline), events.recv()).await {
                Ok(Some(())) if tokio::time::Instant::now() < deadline => continue,
                Ok(None) => return,
                _ => break,
            }
        }
        publish(&mut source, &mesh, &updates);
        mesh.metrics
            .debounce_seconds
            .observe(started.elapsed().as_secs_f64());
    }
}

/// Publishes what the source holds to the mesh and tells the streams.
fn publish(source: &mut Source, mesh: &Mesh, updates: &watch::Sender<u64>) {
    let (snapshot, changes) = source.publish();
    mesh.metrics
        .invalid_objects
        .set(snapshot.invalid.len() as i64);
    mesh.metrics.snapshots.inc();
    let version = snapshot.version;
    mesh.publish(snapshot, changes);
    updates.send_if_modified(|v| std::mem::replace(v, version) != version);
}
