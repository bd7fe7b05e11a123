//! What only the Lease holder does. Every replica serves xDS; the one holding the Lease
//! `sextant` also writes to the cluster: the status of VirtualServices, DestinationRules,
//! Gateways and Sidecars ([`status`]), the `caBundle` of the validating and injecting webhooks
//! ([`ca_bundle`]) and the mesh's trust bundle in every namespace ([`root_configmaps`]). Each
//! task runs on every replica and writes only while its `leader` receiver says true, so a new
//! holder takes over without restarting anything.

use std::sync::Arc;

use kube::Client;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use sextant_model::Snapshot;
use tokio::sync::watch;

use crate::Generations;

pub mod ca_bundle;
pub mod root_configmaps;
pub mod status;

/// Joins the election for the Lease `sextant` in `namespace`: the receiver is true while this
/// replica holds it. The identity is the pod's name (`POD_NAME`) or host name and process id.
pub async fn elect(
    client: Client,
    namespace: &str,
    duration: u64,
) -> Result<watch::Receiver<bool>, kube_lease_manager::LeaseManagerError> {
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client, "sextant")
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .build()
        .await?;
    // The manager runs (detached) until the receiver is dropped; it retries its own errors.
    let (leader, _task) = manager.watch().await;
    Ok(leader)
}

/// What the Lease holder writes, and what it writes from.
pub struct Duties {
    /// What the watches saw of the objects whose status is written.
    pub generations: Generations,
    /// The snapshots published, whose verdicts the status reports.
    pub snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    /// Objects held back because proxies rejected them, reported as rejected.
    pub held: watch::Receiver<status::Held>,
    /// Counts status writes.
    pub status_writes: Counter,
    /// The ValidatingWebhookConfiguration whose `caBundle` is kept.
    pub webhook_config: String,
    /// The MutatingWebhookConfiguration (sidecar injection) whose `caBundle` is kept; empty
    /// for none.
    pub injector_webhook_config: String,
    /// The CA certificate the API server should trust, as `caBundle` holds it (base64 PEM).
    pub ca_bundle: String,
    /// The mesh's trust bundle (PEM), for `istio-ca-root-cert` in every namespace.
    pub roots: watch::Receiver<String>,
    /// 1 while this replica holds the Lease.
    pub leading: Gauge,
}

/// Starts the Lease holder's tasks; they act while `leader` is true and end when it closes.
pub fn spawn(client: Client, leader: watch::Receiver<bool>, duties: Duties) {
    let Duties {
        generations,
        snapshots,
        held,
        status_writes,
        webhook_config,
        injector_webhook_config,
        ca_bundle,
        roots,
        leading,
    } = duties;
    tokio::spawn(report(leader.clone(), leading));
    tokio::spawn(ca_bundle::keep(
        client.clone(),
        webhook_config,
        ca_bundle.clone(),
        leader.clone(),
    ));
    // Empty: sidecar injection is not registered, so there is nothing to look for.
    if !injector_webhook_config.is_empty() {
        tokio::spawn(ca_bundle::keep_mutating(
            client.clone(),
            injector_webhook_config,
            ca_bundle,
            leader.clone(),
        ));
    }
    tokio::spawn(root_configmaps::keep(client.clone(), roots, leader.clone()));
    tokio::spawn(status::run(
        client,
        generations,
        leader,
        snapshots,
        held,
        status_writes,
    ));
}

/// Logs each change of leadership and shows it on `gauge`.
async fn report(mut leader: watch::Receiver<bool>, gauge: Gauge) {
    loop {
        let now = *leader.borrow_and_update();
        gauge.set(i64::from(now));
        tracing::info!(leader = now, "status writer election");
        if leader.changed().await.is_err() {
            return;
        }
    }
}
