//! `sextant serve`: the control plane, fed from a directory of manifests or from a Kubernetes
//! cluster.

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;

use sextant_ca::{Secrets, SystemClock};
use sextant_index::{Changes, Index};
use sextant_kube::{
    clusters::{Cluster, Clusters},
    leader,
    remote::{self, RemoteClusters},
};
use sextant_model::Snapshot;
use sextant_source::{Debounce, DirSource, KubeSource, Source};
use sextant_xds::{AdsServer, Connections, grpc::AdsService, protocol::Limits};
use tokio::sync::{mpsc, watch};

use crate::{
    admin, ca_store,
    cli::{LogFormat, ServeArgs},
    generator::XdsGenerator,
    metrics::Metrics,
};

/// The cluster this control plane runs in (Istio's default `CLUSTER_ID`).
const CLUSTER_ID: &str = "Kubernetes";

/// How long open connections may take to close once shutdown has begun.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

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
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a terminal, not for a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The mesh config at start, for what is decided once (the trust domain): the
/// `--mesh-config` file in directory mode, which must then be readable; ConfigMap `istio` in
/// the control plane's namespace with a cluster, the defaults when it is missing or bad (its
/// watch reports and applies later edits).
async fn initial_mesh_config(
    config_dir: &Option<std::path::PathBuf>,
    file: Option<&std::path::Path>,
    client: &Option<kube::Client>,
    namespace: &str,
    input: &crate::cli::InputArgs,
) -> anyhow::Result<sextant_model::MeshConfig> {
    let text = match (config_dir, file, client) {
        (Some(_), Some(file), _) => Some(
            sextant_source::scan::read(file, input.max_input_bytes as u64)
                .with_context(|| format!("reading the mesh config {}", file.display()))?,
        ),
        (None, Some(_), _) => anyhow::bail!(
            "--mesh-config is for directory mode; with a cluster, ConfigMap istio in POD_NAMESPACE is the mesh config"
        ),
        (None, None, Some(client)) => {
            sextant_kube::mesh_config::get(client.clone(), namespace).await
        }
        _ => None,
    };
    let Some(text) = text else {
        return Ok(sextant_model::MeshConfig::default());
    };
    match sextant_index::parse::mesh_config(&text) {
        Ok(read) => Ok(read.config),
        Err(e) if file.is_some() => Err(anyhow::anyhow!(
            "{}: {e}",
            file.map(|f| f.display().to_string()).unwrap_or_default()
        )),
        Err(error) => {
            tracing::error!(%error, "ConfigMap istio: starting with the default mesh config");
            Ok(sextant_model::MeshConfig::default())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        config_dir,
        namespace,
        xds_port,
        secure_xds_port,
        token_audiences,
        max_nack_message_bytes,
        max_subscription_names,
        token_review_cache_size,
        token_review_cache_seconds,
        max_token_reviews_waiting,
        input,
        max_held_objects,
        hold_on_plaintext_nacks,
        max_regex_program_size,
        max_request_bytes,
        request_grace_ms,
        min_request_bytes_per_second,
        max_connections,
        max_webhook_connections,
        max_admin_connections,
        max_connections_total,
        max_handshakes,
        handshake_timeout_ms,
        max_streams_per_connection,
        admin_port,
        listen_address,
        debounce_after_ms,
        debounce_max_ms,
        domain_suffix,
        trust_domain,
        root_namespace,
        mesh_config,
        log_format,
        log_level,
        lease_namespace,
        lease_duration_seconds,
        max_list_bytes,
        webhook_port,
        webhook_config,
        service_name,
        ca_dir,
        token_file,
        workload_cert_ttl_seconds,
        max_workload_cert_ttl_seconds,
        remote,
        heavy,
        webhook,
        inject,
        vhds: crate::generator::vhds::VhdsArgs { vhds },
    } = args;
    let crate::cli::RemoteClusterArgs {
        remote_kubeconfig,
        max_remote_clusters,
        remote_grace_period_seconds,
        remote_stale_endpoints,
        cluster_network,
    } = remote;
    tracing::info!(
        config_dir = ?config_dir, %namespace, xds_port, secure_xds_port, admin_port, %listen_address,
        debounce_after_ms, debounce_max_ms, max_nack_message_bytes, max_subscription_names,
        token_review_cache_size, token_review_cache_seconds, max_token_reviews_waiting, max_held_objects, hold_on_plaintext_nacks, max_regex_program_size, %domain_suffix, ?trust_domain, ?root_namespace, ?mesh_config, ?log_format, %log_level, vhds,
        "starting sextant"
    );
    tracing::info!(
        remote_kubeconfig = ?remote_kubeconfig, max_remote_clusters, remote_grace_period_seconds,
        remote_stale_endpoints = ?remote_stale_endpoints, cluster_network = ?cluster_network,
        "remote clusters"
    );
    let injector = inject
        .config(crate::inject::Defaults {
            xds_address: format!("{service_name}.{lease_namespace}.svc:{secure_xds_port}"),
            server_name: format!("{service_name}.{lease_namespace}.svc"),
            cluster_id: CLUSTER_ID,
            network: cluster_network
                .iter()
                .find(|(cluster, _)| cluster == CLUSTER_ID)
                .map(|(_, network)| network.as_str()),
            domain_suffix: &domain_suffix,
        })
        .map_err(anyhow::Error::msg)?;
    tracing::info!(?injector, webhook_config = %inject.injector_webhook_config, "sidecar injection");
    let input_limits = input.limits();
    // Files, admission reviews and watched objects all read within these.
    input_limits.configure();
    tracing::info!(?input_limits, "input limits");
    sextant_index::parse::re2::set_max_program_size(max_regex_program_size);
    let metrics = Arc::new(Metrics::new());
    let connections = Arc::new(Connections::default());
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let debounce = Debounce::new(
        events_rx,
        Duration::from_millis(debounce_after_ms),
        Duration::from_millis(debounce_max_ms),
    );
    let (updates_tx, updates_rx) = watch::channel(0);
    // Every API server response is bounded (after `configure`: watch events by the input
    // bound).
    let bounds = sextant_kube::client::ResponseBounds::new(max_list_bytes);
    tracing::info!(
        ?bounds,
        page_size = sextant_kube::client::PAGE_SIZE,
        "API server response bounds"
    );
    let (client, server) = match config_dir {
        Some(_) => (None, None),
        None => {
            let (client, server) = sextant_kube::client::infer(bounds).await.context(
                "no --config-dir, and no Kubernetes configuration (in-cluster or KUBECONFIG)",
            )?;
            (Some(client), Some(server))
        }
    };
    // Flag > mesh config > default, for the trust domain read once here and the root
    // namespace the index re-decides at every publish.
    let mesh = initial_mesh_config(
        &config_dir,
        mesh_config.as_deref(),
        &client,
        &lease_namespace,
        &input,
    )
    .await?;
    let trust_domain = trust_domain.unwrap_or_else(|| mesh.trust_domain.clone());
    let mut index = Index::new(&domain_suffix, CLUSTER_ID).with_trust_domain(&trust_domain);
    if let Some(root_namespace) = &root_namespace {
        index = index.with_root_namespace(root_namespace);
    }
    for (cluster, network) in &cluster_network {
        index.set_network(cluster, network);
    }
    tracing::info!(%trust_domain, root_namespace = %root_namespace.as_deref().unwrap_or(&mesh.root_namespace), outbound_traffic_policy = ?mesh.outbound_traffic_policy, "mesh settings at start");
    // Shared by the config cluster's source and the remote clusters' watches.
    let index = Arc::new(std::sync::Mutex::new(index));
    let clusters = Clusters::default();
    let remotes = RemoteClusters::new(
        remote::Settings {
            local: CLUSTER_ID.to_owned(),
            max_clusters: max_remote_clusters,
            grace: Duration::from_secs(remote_grace_period_seconds),
            stale: match remote_stale_endpoints {
                crate::cli::StaleEndpoints::Remove => remote::StaleEndpoints::Remove,
                crate::cli::StaleEndpoints::Keep => remote::StaleEndpoints::Keep,
            },
            bounds,
        },
        index.clone(),
        events_tx.clone(),
        metrics.kube.clone(),
        clusters.clone(),
    );
    for (cluster, path) in &remote_kubeconfig {
        remotes
            .add_file(cluster, path)
            .map_err(anyhow::Error::msg)?;
    }
    let clock = Arc::new(SystemClock);
    let ca = match (&ca_dir, &client) {
        (Some(dir), _) => ca_store::read_dir(dir, clock)?,
        (None, Some(client)) => {
            ca_store::from_cluster(client.clone(), &lease_namespace, clock).await?
        }
        (None, None) => ca_store::from_state_dir(clock)?,
    };
    let ca = Arc::new(ca);
    // The trust bundle, as ConfigMaps in every namespace carry it.
    let (_roots_tx, roots) = watch::channel(ca.roots_pem());
    let ttls = crate::certificates::Ttls {
        default: Duration::from_secs(workload_cert_ttl_seconds),
        max: Duration::from_secs(max_workload_cert_ttl_seconds),
    };
    if ttls.default > ttls.max || ttls.default.is_zero() {
        anyhow::bail!(
            "--workload-cert-ttl-seconds ({workload_cert_ttl_seconds}) must be positive and at most --max-workload-cert-ttl-seconds ({max_workload_cert_ttl_seconds})"
        );
    }
    let token_file = match (&token_file, &client) {
        (Some(path), None) => {
            let tokens = crate::secure::TokenFile::read(path)?;
            tracing::info!(path = %path.display(), tokens = tokens.len(), "token file read");
            Some(tokens)
        }
        (Some(_), Some(_)) => {
            anyhow::bail!("--token-file is for directory mode; with a cluster, TokenReview decides")
        }
        (None, _) => None,
    };
    let review_limits = crate::secure::ReviewLimits {
        cache_size: token_review_cache_size,
        cache_ttl: Duration::from_secs(token_review_cache_seconds),
        max_waiting: max_token_reviews_waiting,
    };
    // Gateways get their namespace's private keys only when their identity may read its
    // Secrets; a verdict that changes what one gets wakes the streams.
    let woken = updates_tx.clone();
    let secret_access = crate::secure::SecretAccess::new(
        client.clone(),
        review_limits,
        metrics.clone(),
        move || woken.send_modify(|_| {}),
    )
    .with_clusters(CLUSTER_ID, clusters.clone());
    let generator = Arc::new(
        XdsGenerator::new(metrics.clone())
            .with_secret_access(Arc::new(secret_access))
            .with_max_scopes(heavy.max_scopes)
            .with_secrets(Secrets::new(ca.clone(), ttls.default))
            .with_max_held_objects(max_held_objects)
            .with_plaintext_nacks(hold_on_plaintext_nacks)
            .with_updates(updates_tx.clone()),
    );
    // Certificates past half their life are replaced at the next update; make one. Checked
    // an eighth of a TTL apart (at most a minute), so a renewal is never late by much.
    let rotation = updates_tx.clone();
    let rotating = generator.clone();
    let every = (ttls.default / 8).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let expiries = crate::expiry::Expiries::new(
        &ca,
        std::time::SystemTime::now(),
        ttls.default,
        metrics.clone(),
    );
    tokio::spawn(async move {
        loop {
            expiries.check(rotating.secrets());
            tokio::time::sleep(every).await;
            if rotating.secrets().is_some_and(Secrets::expire) {
                rotation.send_modify(|_| {});
            }
        }
    });
    let authenticator = Arc::new(
        crate::secure::Authenticator::new(
            &trust_domain,
            client.clone(),
            token_audiences,
            review_limits,
            metrics.clone(),
        )
        .with_token_file(token_file)
        .with_clusters(CLUSTER_ID, clusters.clone()),
    );
    match (config_dir, client) {
        (Some(config_dir), _) => {
            let local = Cluster::fixed(CLUSTER_ID, format!("directory {}", config_dir.display()));
            clusters.insert(local.clone());
            let mut dir = DirSource::new(config_dir, namespace, index)
                .max_file_bytes(input.max_input_bytes as u64)
                .counters(metrics.dir.clone())
                .cluster(local);
            if let Some(file) = mesh_config {
                dir = dir.mesh_config_file(file);
            }
            // Watch first: a change made while the first read runs is then not missed.
            dir.watch(events_tx)?;
            publish(dir.reload(), &generator, &updates_tx);
            tokio::spawn(run_source(
                Source::Dir(dir),
                debounce,
                generator.clone(),
                updates_tx,
            ));
        }
        (None, Some(client)) => {
            let cluster = KubeSource::spawn(
                client.clone(),
                &lease_namespace,
                index,
                events_tx,
                metrics.kube.clone(),
            );
            if let Some(server) = server {
                cluster.cluster().set_server(server);
            }
            clusters.insert(cluster.cluster());
            // Remote clusters are not waited for: one that never answers must not keep the
            // control plane from serving.
            remotes.watch_secrets(client.clone(), &lease_namespace);
            // Every replica serves; the Lease holder also writes status and the caBundle.
            let leader = leader::elect(client.clone(), &lease_namespace, lease_duration_seconds)
                .await
                .context("setting up the status Lease")?;
            leader::spawn(
                client,
                leader,
                leader::Duties {
                    generations: cluster.generations(),
                    snapshots: cluster.snapshots(),
                    held: generator.held_updates(),
                    status_writes: metrics.status_writes.clone(),
                    webhook_config,
                    injector_webhook_config: inject.injector_webhook_config.clone(),
                    ca_bundle: ca.bundle(),
                    roots: roots.clone(),
                    leading: metrics.leader.clone(),
                },
            );
            let mut source = Source::Kube(cluster);
            let generator = generator.clone();
            // Serve (not ready) while the watches list; publish once every one has.
            tokio::spawn(async move {
                if !source.ready().await {
                    return;
                }
                // Indexing a large cluster takes seconds: not on a runtime worker.
                let published = tokio::task::block_in_place(|| source.publish());
                publish(published, &generator, &updates_tx);
                run_source(source, debounce, generator, updates_tx).await;
            });
        }
        (None, None) => unreachable!("a client is made whenever there is no --config-dir"),
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let ads = Arc::new(
        AdsServer::new(
            generator.clone(),
            updates_rx,
            connections.clone(),
            shutdown_rx.clone(),
        )
        .max_request_bytes(max_request_bytes)
        .vhds(vhds)
        .limits(Limits {
            nack_message_bytes: max_nack_message_bytes,
            subscription_names: max_subscription_names,
        }),
    );
    let xds_addr = SocketAddr::new(listen_address, xds_port);
    let admin_addr = SocketAddr::new(listen_address, admin_port);
    // Every port's connections are bounded; all but the admin port's share a total, so that
    // `/ready` answers when the others are full.
    let total = crate::listen::total_budget(max_connections_total, max_admin_connections);
    tracing::info!(
        max_connections,
        max_webhook_connections,
        max_admin_connections,
        ?total,
        max_handshakes,
        handshake_timeout_ms,
        max_streams_per_connection,
        max_request_bytes,
        request_grace_ms,
        min_request_bytes_per_second,
        "connection bounds"
    );
    let total = total.map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
    let gate = |tcp, max| crate::listen::Gate::new(tcp, max, total.clone(), metrics.clone());
    let handshakes = crate::tls::Handshakes {
        max: max_handshakes,
        timeout: Duration::from_millis(handshake_timeout_ms),
    };
    let progress = sextant_xds::grpc::Progress {
        grace: Duration::from_millis(request_grace_ms),
        min_bytes_per_second: min_request_bytes_per_second,
    };
    let counting = metrics.clone();
    let on_bound: sextant_xds::grpc::OnBound = Arc::new(move |bound| counting.bounded(bound));
    let admin_listener = crate::listen::Gate::new(
        tokio::net::TcpListener::bind(admin_addr)
            .await
            .with_context(|| format!("listening on {admin_addr}"))?,
        max_admin_connections,
        None,
        metrics.clone(),
    );
    let webhook_budget = webhook.budget(
        heavy.webhook_max_bytes,
        heavy.webhook_timeout_ms,
        heavy.webhook_concurrency,
    );
    tracing::info!(?webhook_budget, "webhook bounds");
    let mut admin_shutdown = shutdown_rx.clone();
    // The admin port is served as the webhook's: a head must arrive, and an answer be read,
    // within the webhook's header timeout, so that silent connections cannot hold every
    // place under --max-admin-connections and starve the probes for long.
    let admin_server = crate::webhook::serve(
        admin_listener,
        admin::router(
            generator.clone(),
            connections.clone(),
            admin::ClusterList {
                local: CLUSTER_ID.to_owned(),
                clusters,
            },
            admin::DebugBounds {
                dumps: heavy.max_debug_dumps,
                page_size: heavy.debug_page_size,
            },
        ),
        crate::webhook::Budget {
            header_timeout: webhook_budget.header_timeout,
            ..crate::webhook::Budget::default()
        },
        metrics.clone(),
        crate::webhook::Deadlines::ADMIN,
        async move {
            let _ = admin_shutdown.wait_for(|s| *s).await;
        },
    );
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
    let webhook_tcp = tokio::net::TcpListener::bind(webhook_addr)
        .await
        .with_context(|| format!("listening on {webhook_addr}"))?;
    let webhook_listener = crate::tls::TlsListener::new(
        gate(webhook_tcp, max_webhook_connections),
        ca.server_config(&names, &ips)?,
        handshakes,
        metrics.clone(),
    )?;
    let mut webhook_shutdown = shutdown_rx.clone();
    let webhook_server = crate::webhook::serve(
        webhook_listener,
        crate::webhook::router(
            webhook_budget,
            metrics.clone(),
            // The mesh config of the snapshot in force: an edit applies to Pods created after
            // it is published.
            crate::inject::Injector::new(injector, {
                let generator = generator.clone();
                Arc::new(move || generator.snapshot().mesh_config.clone())
            }),
        ),
        webhook_budget,
        metrics.clone(),
        crate::webhook::Deadlines::WEBHOOK,
        async move {
            let _ = webhook_shutdown.wait_for(|s| *s).await;
        },
    );
    let mut xds_shutdown = shutdown_rx.clone();
    let streams = crate::streams::StreamCap::new(max_streams_per_connection, metrics.clone());
    let xds_tcp =
        crate::tls::listen(xds_addr).with_context(|| format!("listening on {xds_addr}"))?;
    let xds_incoming = gate(xds_tcp, max_connections).into_incoming();
    let xds_server = crate::bounded_xds_server(streams.clone())
        .add_service(AdsService::new(ads.clone()).bounded(progress, on_bound.clone()))
        .add_service(sextant_xds::csds::Csds::new(connections.clone()).into_service())
        .serve_with_incoming_shutdown(xds_incoming, async move {
            let _ = xds_shutdown.wait_for(|s| *s).await;
        });
    let secure_addr = SocketAddr::new(listen_address, secure_xds_port);
    let secure_tcp =
        crate::tls::listen(secure_addr).with_context(|| format!("listening on {secure_addr}"))?;
    let secure_listener = crate::tls::TlsListener::new(
        gate(secure_tcp, max_connections),
        ca.xds_server_config(&names, &ips)?,
        handshakes,
        metrics.clone(),
    )?;
    let mut secure_shutdown = shutdown_rx.clone();
    let secure_server = crate::bounded_xds_server(crate::streams::StreamCap::new(
        max_streams_per_connection,
        metrics.clone(),
    ))
    .add_service(
        AdsService::new(ads)
            .bounded(progress, on_bound)
            .authenticated(authenticator.clone()),
    )
    .add_service(
        crate::certificates::Certificates::new(ca.clone(), authenticator, ttls, metrics.clone())
            .into_service(),
    )
    .serve_with_incoming_shutdown(secure_listener.into_incoming(), async move {
        let _ = secure_shutdown.wait_for(|s| *s).await;
    });
    tracing::info!(%xds_addr, %secure_addr, %admin_addr, %webhook_addr, "serving");
    let draining = generator.clone();
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
    // The remote clusters' watches run while the servers do.
    let _remotes = remotes;
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

/// Publishes a snapshot to the xDS generator and tells the streams.
fn publish(
    published: (Arc<Snapshot>, Changes),
    generator: &XdsGenerator,
    updates: &watch::Sender<u64>,
) {
    publish_timed(published, None, generator, updates);
}

/// [`publish`], with when the source's stages ended when a source change made the snapshot
/// (the push status's first clock).
fn publish_timed(
    (snapshot, changes): (Arc<Snapshot>, Changes),
    source: Option<sextant_source::Timing>,
    generator: &XdsGenerator,
    updates: &watch::Sender<u64>,
) {
    generator
        .metrics
        .invalid_objects
        .set(snapshot.invalid.len() as i64);
    generator.metrics.snapshots.inc();
    let version = generator.publish_timed(snapshot, changes, source.map(Into::into));
    updates.send_if_modified(|v| std::mem::replace(v, version) != version);
}

/// Publishes after each burst of changes the debounce lets through, until the source stops;
/// each with its source stages (directory and cluster alike).
async fn run_source(
    source: Source,
    debounce: Debounce,
    generator: Arc<XdsGenerator>,
    updates: watch::Sender<u64>,
) {
    source
        .run(debounce, |snapshot, changes, timing| {
            publish_timed((snapshot, changes), Some(timing), &generator, &updates);
            generator
                .metrics
                .debounce_seconds
                .observe(timing.first_change.elapsed().as_secs_f64());
        })
        .await;
}
