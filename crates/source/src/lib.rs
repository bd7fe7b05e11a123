//! Where objects come from: a directory of manifests ([`DirSource`]) or a cluster's watches
//! ([`KubeSource`], through `sextant-kube`). Either feeds the index with apply, delete and
//! reset; [`Source`] publishes what it holds, at first and then after each burst of changes
//! has settled in the one [`Debounce`]. `files` reads manifests from files, for the
//! directory source and for `sextant validate` and `proxy-config`.

use std::sync::Arc;

use sextant_index::Changes;
use sextant_model::Snapshot;
use tokio::time::Instant;

pub mod cluster;
pub mod debounce;
pub mod dir;
pub mod files;
pub mod scan;

pub use cluster::KubeSource;
pub use debounce::Debounce;
pub use dir::{DirCounters, DirSource};

/// Where the mesh comes from.
pub enum Source {
    /// A directory of manifests.
    Dir(DirSource),
    /// A cluster: watches keep the index current.
    Kube(KubeSource),
}

impl Source {
    /// Waits until the source has something to publish: at once for a directory, once every
    /// watch has listed for a cluster. False if that never comes.
    pub async fn ready(&self) -> bool {
        match self {
            Source::Dir(_) => true,
            Source::Kube(kube) => kube.synced().await,
        }
    }

    /// A snapshot of what the source holds now.
    pub fn publish(&mut self) -> (Arc<Snapshot>, Changes) {
        match self {
            Source::Dir(dir) => dir.publish(),
            Source::Kube(kube) => kube.publish(),
        }
    }

    /// Publishes after each burst of changes `debounce` settles, handing `publish` the
    /// snapshot, its changes and when each stage of it ended; returns when the changes end.
    pub async fn run(
        mut self,
        mut debounce: Debounce,
        mut publish: impl FnMut(Arc<Snapshot>, Changes, Timing),
    ) {
        while let Some(first_change) = debounce.settled().await {
            let settled = Instant::now();
            // Reading and indexing a large directory takes seconds: not on a runtime worker.
            let (snapshot, changes) = sextant_kube::heavy(|| self.publish());
            let timing = Timing {
                first_change,
                settled,
                snapshot: Instant::now(),
            };
            publish(snapshot, changes, timing);
        }
    }
}

/// When each stage of one publish ended: the first clock of a user's change on its way to
/// the proxies (the xDS server's sends and ACKs are the rest).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// The burst's first change (a notify event, a watch event).
    pub first_change: Instant,
    /// The debounce let the burst through.
    pub settled: Instant,
    /// The snapshot was published by the index (a directory's changed files read first).
    pub snapshot: Instant,
}

impl Timing {
    /// The debounce's wait: first change to settled.
    pub fn debounce(&self) -> std::time::Duration {
        self.settled - self.first_change
    }

    /// Reading what changed and indexing it: settled to snapshot.
    pub fn read(&self) -> std::time::Duration {
        self.snapshot - self.settled
    }
}

/// The invalid objects last reported, so that each is logged when it becomes invalid (or its
/// errors change) and when it is fixed, not at every publish, and even when the publish
/// changes no configuration (an invalid edit keeps the last good version).
#[derive(Debug, Default)]
pub(crate) struct Reported(std::collections::BTreeMap<sextant_model::ObjectRef, Vec<String>>);

fn log_published(snapshot: &Snapshot, changes: &Changes, reported: &mut Reported) {
    if reported.0 != snapshot.invalid {
        for (object, errors) in &snapshot.invalid {
            if reported.0.get(object) != Some(errors) {
                // The first errors only: an object of 12,000 bad fields made a 1.5 MB line.
                const SHOWN: usize = 20;
                let mut text = errors
                    .iter()
                    .take(SHOWN)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ");
                if errors.len() > SHOWN {
                    text.push_str(&format!("; and {} more", errors.len() - SHOWN));
                }
                tracing::warn!(%object, errors = %text, "skipping invalid object (its last good version, if any, stays in use)");
            }
        }
        for object in reported.0.keys() {
            if !snapshot.invalid.contains_key(object) {
                tracing::info!(%object, "no longer invalid (fixed or removed)");
            }
        }
        reported.0 = snapshot.invalid.clone();
    }
    // Nothing new (a re-read that found what was there): nothing to say, and no log line
    // that, written beside a watched file, would wake the watch again.
    if changes.is_empty() && !changes.mesh_config {
        return;
    }
    tracing::info!(
        version = snapshot.version,
        changed_services = changes.services.len(),
        changed_endpoints = changes.endpoints.len(),
        changed_configs = changes.configs.len(),
        changed_credentials = changes.credentials.len(),
        mesh_config_changed = changes.mesh_config,
        "published snapshot"
    );
}
