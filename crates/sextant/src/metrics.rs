//! Prometheus metrics, one registry with the `sextant` prefix.

use crate::push_status::{PushStatus, StageLabels};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Labels of per-type metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    /// xDS type URL.
    pub type_url: String,
}

/// Labels of what a bound cut or refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BoundLabels {
    /// Which bound (`nack_message`, ...).
    pub bound: String,
}

/// Labels of why a caller of the secure xDS port was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// Why (`foreign_trust_domain`, ...).
    pub reason: String,
}

/// Labels of what became of a certificate request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `signed`, or the gRPC code it was refused with (`invalid_argument`, ...).
    pub outcome: String,
}

/// Labels of a certificate whose expiry is exported.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    /// `root`, `intermediate`, `serving` or `oldest_workload`.
    pub certificate: String,
}

/// Labels of a remote cluster's state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterStateLabels {
    /// The cluster id.
    pub cluster: String,
    /// `syncing`, `synced` or `failing`.
    pub state: String,
}

/// Labels of a remote cluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    /// The cluster id.
    pub cluster: String,
}

/// Every metric the control plane exports.
pub struct Metrics {
    /// The registry they are registered in.
    pub registry: Registry,
    /// Connected xDS streams.
    pub connected_proxies: Gauge,
    /// NACKs by type.
    pub nacks: Family<TypeLabels, Counter>,
    /// ACKs by type.
    pub acks: Family<TypeLabels, Counter>,
    /// Times a peer's input was cut or refused by a bound, by bound.
    pub bounded: Family<BoundLabels, Counter>,
    /// Responses sent by type.
    pub pushes: Family<TypeLabels, Counter>,
    /// Time from a configuration change reaching a stream until the proxy ACKed all of it.
    pub convergence_seconds: Histogram,
    /// Time to compile and encode one proxy's configuration.
    pub compile_seconds: Histogram,
    /// Time from a push's trigger (a change or a request) to its response being queued on the
    /// stream, by type.
    pub push_seconds: Family<TypeLabels, Histogram, fn() -> Histogram>,
    /// Encoded size of the last compiled configuration.
    pub config_bytes: Gauge,
    /// Snapshots published.
    pub snapshots: Counter,
    /// Time from the first change to publishing (debounce included).
    pub debounce_seconds: Histogram,
    /// Objects skipped because they are invalid.
    pub invalid_objects: Gauge,
    /// Kubernetes watches: errors, malformed objects, relists.
    pub kube: sextant_kube::Counters,
    /// Status writes (VirtualService and DestinationRule conditions).
    pub status_writes: Counter,
    /// 1 while this replica holds the Lease (writes status).
    pub leader: Gauge,
    /// The directory source: bad files, and files over `--max-input-bytes` refused before
    /// they are read (the
    /// `file_bytes` bound of `bounded`).
    pub dir: sextant_source::DirCounters,
    /// TokenReviews sent to the API server (cached answers are not counted).
    pub token_reviews: Counter,
    /// Callers of the secure xDS port refused, by reason.
    pub auth_refused: Family<RefusalLabels, Counter>,
    /// Held while the readers' refusals are copied into `bounded`.
    input_refusals: std::sync::Mutex<()>,
    /// Scopes in the compiled-scope cache (at most `--max-scopes`).
    pub scopes: Gauge,
    /// Certificate requests (`IstioCertificateService`), by outcome.
    pub certificate_requests: Family<OutcomeLabels, Counter>,
    /// When each certificate expires, in seconds since the Unix epoch.
    pub certificate_expiry: Family<CertificateLabels, Gauge>,
    /// Proxies holding a workload certificate issued for them (SDS `default`).
    pub workload_certificates: Gauge,
    /// 1 for each remote cluster's current state, 0 for its others.
    pub remote_cluster_state: Family<ClusterStateLabels, Gauge>,
    /// Objects each remote cluster's watches hold.
    pub remote_cluster_objects: Family<ClusterLabels, Gauge>,
    /// Remote cluster registrations not watched now (past `--max-remote-clusters`, an
    /// unreadable kubeconfig, an id registered already): one series, whatever their number.
    pub remote_registrations_refused: Gauge,
    /// The remote clusters last exported, so that those gone are dropped.
    remote_clusters: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Each stage from a change to the proxies' ACKs, by stage and type (see
    /// [`crate::push_status`]).
    pub push_stage_seconds: Family<StageLabels, Histogram, fn() -> Histogram>,
    /// What became of the last versions published (`/debug/push_status`); it feeds
    /// `push_stage_seconds`.
    pub push_status: PushStatus,
}

fn push_buckets() -> Histogram {
    Histogram::new([
        0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ])
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sextant");
        let buckets =
            || Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]);
        let push_stage_seconds: Family<StageLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(crate::push_status::stage_buckets);
        let m = Metrics {
            push_status: PushStatus::new(&push_stage_seconds),
            push_stage_seconds,
            connected_proxies: Gauge::default(),
            nacks: Family::default(),
            acks: Family::default(),
            bounded: Family::default(),
            pushes: Family::default(),
            convergence_seconds: buckets(),
            compile_seconds: buckets(),
            push_seconds: Family::new_with_constructor(push_buckets),
            config_bytes: Gauge::default(),
            snapshots: Counter::default(),
            debounce_seconds: buckets(),
            invalid_objects: Gauge::default(),
            kube: sextant_kube::Counters::default(),
            status_writes: Counter::default(),
            leader: Gauge::default(),
            dir: sextant_source::DirCounters::default(),
            token_reviews: Counter::default(),
            auth_refused: Family::default(),
            input_refusals: std::sync::Mutex::new(()),
            scopes: Gauge::default(),
            certificate_requests: Family::default(),
            certificate_expiry: Family::default(),
            workload_certificates: Gauge::default(),
            remote_cluster_state: Family::default(),
            remote_cluster_objects: Family::default(),
            remote_registrations_refused: Gauge::default(),
            remote_clusters: std::sync::Mutex::default(),
            registry: Registry::default(),
        };
        // Oversized config files are the `file_bytes` bound of the family.
        let too_large = m
            .bounded
            .get_or_create(&BoundLabels {
                bound: "file_bytes".to_owned(),
            })
            .clone();
        let m = Metrics {
            dir: sextant_source::DirCounters {
                too_large,
                ..m.dir.clone()
            },
            ..m
        };
        registry.register(
            "config_dir_bad_files",
            "Files of --config-dir that could not be read or parsed at the last reload (each keeps its last good objects)",
            m.dir.bad_files.clone(),
        );
        registry.register(
            "config_dir_file_reads",
            "Files of --config-dir read and parsed (only those notify reports changed, after the first read)",
            m.dir.files_read.clone(),
        );
        registry.register(
            "config_dir_objects_parsed",
            "Objects parsed from the files of --config-dir read",
            m.dir.objects_parsed.clone(),
        );
        registry.register(
            "config_dir_objects_applied",
            "Objects of --config-dir applied to or deleted from the index (those the read files held or hold)",
            m.dir.objects_applied.clone(),
        );
        registry.register(
            "config_dir_full_reads",
            "Reads of the whole of --config-dir: the first, and those notify could not narrow down to paths",
            m.dir.full_reads.clone(),
        );
        registry.register(
            "xds_token_reviews",
            "TokenReviews sent to the API server for callers of the secure xDS port (cached answers not counted)",
            m.token_reviews.clone(),
        );
        registry.register(
            "xds_auth_refused",
            "Callers of the secure xDS port refused, by reason",
            m.auth_refused.clone(),
        );
        registry.register(
            "certificate_requests",
            "Requests to Istio's certificate service (CreateCertificate), by outcome",
            m.certificate_requests.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When each certificate expires (root, intermediate, serving, oldest_workload), in Unix seconds",
            m.certificate_expiry.clone(),
        );
        registry.register(
            "workload_certificates",
            "Proxies holding a workload certificate of their own (SDS default)",
            m.workload_certificates.clone(),
        );
        registry.register(
            "remote_cluster_state",
            "1 for each remote cluster's state (syncing, synced, failing), 0 for the others; details at /debug/clusterz",
            m.remote_cluster_state.clone(),
        );
        registry.register(
            "remote_cluster_objects",
            "Objects (Services, EndpointSlices, Pods, Namespaces, Nodes) each remote cluster's watches hold",
            m.remote_cluster_objects.clone(),
        );
        registry.register(
            "remote_registrations_refused",
            "Remote cluster registrations not watched (past --max-remote-clusters, unreadable, or an id registered already); examples at /debug/clusterz",
            m.remote_registrations_refused.clone(),
        );
        registry.register(
            "status_writes",
            "Status written on VirtualServices and DestinationRules (Lease holder only)",
            m.status_writes.clone(),
        );
        registry.register(
            "scope_cache_entries",
            "Scopes whose compiled resources are cached (at most --max-scopes)",
            m.scopes.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the Lease and writes status",
            m.leader.clone(),
        );
        registry.register(
            "kube_watch_errors",
            "Kubernetes watch failures (each retried with backoff; the last snapshot is kept)",
            m.kube.watch_errors.clone(),
        );
        registry.register(
            "kube_malformed_objects",
            "Kubernetes objects skipped because they do not have the shape of their kind",
            m.kube.malformed.clone(),
        );
        registry.register(
            "kube_relists",
            "Kubernetes watch lists (the first of each watch, then each restart)",
            m.kube.relists.clone(),
        );
        registry.register(
            "xds_connected_proxies",
            "Connected xDS streams",
            m.connected_proxies.clone(),
        );
        registry.register(
            "xds_nacks",
            "Configuration rejected by proxies",
            m.nacks.clone(),
        );
        registry.register(
            "xds_bounded",
            "Peer input cut or refused by a bound (DESIGN: everything a peer can make Sextant hold is bounded)",
            m.bounded.clone(),
        );
        registry.register(
            "xds_acks",
            "Configuration accepted by proxies",
            m.acks.clone(),
        );
        registry.register(
            "compile_seconds",
            "Compile and encode time per proxy",
            m.compile_seconds.clone(),
        );
        registry.register(
            "xds_push_seconds",
            "Push trigger until the response is queued on the stream, by type",
            m.push_seconds.clone(),
        );
        registry.register(
            "config_size_bytes",
            "Encoded size of the last compiled scope configuration (the part its proxies share)",
            m.config_bytes.clone(),
        );
        registry.register("snapshots", "Snapshots published", m.snapshots.clone());
        registry.register("xds_pushes", "xDS responses sent", m.pushes.clone());
        registry.register(
            "xds_convergence_seconds",
            "Change reaching a stream until the proxy ACKed all of it",
            m.convergence_seconds.clone(),
        );
        registry.register(
            "push_stage_seconds",
            "Each stage of a change on its way to the proxies, by stage (debounce: first change to settled; read: settled to snapshot; publish: snapshot to published; send: published to the response queued; ack: that response to its ACK; total: first change to the ACK) and type; connections are not counted",
            m.push_stage_seconds.clone(),
        );
        registry.register(
            "debounce_seconds",
            "Time from first change to publish",
            m.debounce_seconds.clone(),
        );
        registry.register(
            "invalid_objects",
            "Objects skipped as invalid",
            m.invalid_objects.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts a NACK.
    pub fn nack(&self, type_url: &str) {
        self.nacks
            .get_or_create(&TypeLabels {
                type_url: type_url.to_owned(),
            })
            .inc();
    }

    /// Counts input cut or refused by `bound`.
    pub fn bounded(&self, bound: &str) {
        self.bounded
            .get_or_create(&BoundLabels {
                bound: bound.to_owned(),
            })
            .inc();
    }

    /// Counts a caller of the secure xDS port refused for `reason`.
    pub fn refused(&self, reason: &str) {
        self.auth_refused
            .get_or_create(&RefusalLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a certificate request that ended in `outcome`.
    pub fn certificate_request(&self, outcome: &str) {
        self.certificate_requests
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts an ACK.
    pub fn ack(&self, type_url: &str) {
        self.acks
            .get_or_create(&TypeLabels {
                type_url: type_url.to_owned(),
            })
            .inc();
    }

    /// Shows `clusters` but the config cluster `local` as the remote cluster gauges, and drops
    /// those of clusters gone.
    pub fn set_clusters(&self, clusters: &[sextant_kube::clusters::ClusterStatus], local: &str) {
        use sextant_kube::clusters::State;
        let mut exported = self
            .remote_clusters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now: std::collections::BTreeSet<String> = clusters
            .iter()
            .filter(|c| c.cluster != local)
            .map(|c| c.cluster.clone())
            .collect();
        for gone in exported.difference(&now) {
            for state in State::ALL {
                self.remote_cluster_state.remove(&ClusterStateLabels {
                    cluster: gone.clone(),
                    state: state.as_str().to_owned(),
                });
            }
            self.remote_cluster_objects.remove(&ClusterLabels {
                cluster: gone.clone(),
            });
        }
        for c in clusters.iter().filter(|c| c.cluster != local) {
            for state in State::ALL {
                self.remote_cluster_state
                    .get_or_create(&ClusterStateLabels {
                        cluster: c.cluster.clone(),
                        state: state.as_str().to_owned(),
                    })
                    .set(i64::from(state == c.state));
            }
            self.remote_cluster_objects
                .get_or_create(&ClusterLabels {
                    cluster: c.cluster.clone(),
                })
                .set(i64::try_from(c.objects).unwrap_or(i64::MAX));
        }
        *exported = now;
    }

    /// Brings `bounded` up to the refusals of the input readers (files, admission reviews,
    /// watched objects), which count them where they refuse, below this crate.
    fn count_input_refusals(&self) {
        let _held = self
            .input_refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for bound in sextant_index::manifest::Bound::ALL {
            let counter = self.bounded.get_or_create(&BoundLabels {
                bound: bound.label().to_owned(),
            });
            let total = bound.refusals();
            if total > counter.get() {
                counter.inc_by(total - counter.get());
            }
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        self.count_input_refusals();
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
