//! Command-line interface.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

use crate::cmd;

/// Sextant: a service-mesh control plane compatible with Istio's traffic-management API.
#[derive(Debug, Parser)]
#[command(name = "sextant", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check Istio manifests offline (VirtualService, DestinationRule, Gateway, ServiceEntry,
    /// WorkloadEntry, Sidecar, PeerAuthentication): schema, Istio's semantic rules, and
    /// references between the objects given.
    Validate(ValidateArgs),
    /// Run the control plane on a directory of manifests or on a cluster, serving ADS to Envoy.
    Serve(ServeArgs),
    /// Run the demo: backends, sextant serve and Envoy on the example mesh, with live route
    /// changes and the traffic split printed as it happens.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Print an Envoy bootstrap that gets its configuration from Sextant over ADS (a sidecar,
    /// or with --gateway a gateway), or with --grpc a gRPC xDS bootstrap.
    Bootstrap(BootstrapArgs),
    /// Show the Envoy configuration a proxy gets from a directory of manifests, or what a
    /// running Sextant sends a connected proxy (--server).
    ProxyConfig(cmd::proxy_config::ProxyConfigArgs),
    /// Every proxy connected to a running Sextant, and per type whether it holds the latest
    /// configuration (SYNCED), an older one (STALE) or nothing yet (NOT SENT).
    ProxyStatus(cmd::proxy_status::ProxyStatusArgs),
    /// Check the Istio objects of a live cluster, as `validate` checks files.
    Analyze(cmd::analyze::AnalyzeArgs),
    /// Follow one request through a proxy's compiled configuration: listener, filter chain,
    /// virtual host, route, cluster and endpoints, and the objects that produced each.
    Explain(cmd::explain::ExplainArgs),
    /// Create a CA directory, or issue a workload certificate from one (for proxies that
    /// connect to the secure xDS port with a client certificate).
    #[command(subcommand)]
    Ca(CaCommand),
    /// Print the CustomResourceDefinitions Sextant serves (generated from its API types).
    Crds(CrdsArgs),
    /// Register a remote cluster, as `istioctl create-remote-secret`: in the cluster of
    /// `--kubeconfig`, make sure of a ServiceAccount that may read (get, list, watch)
    /// Services, Endpoints, EndpointSlices, Pods, Namespaces and Nodes and create
    /// TokenReviews and SubjectAccessReviews (to review its workloads' tokens and its
    /// gateways' access to Secrets), and print a Secret holding a kubeconfig with its token,
    /// to apply in the control plane's namespace.
    CreateRemoteSecret(CreateRemoteSecretArgs),
    /// Set up a Pod's traffic capture in the current network namespace, as Istio's
    /// `istio-iptables` init step (same flags), or print it with --dry-run.
    Iptables(cmd::iptables::IptablesArgs),
    /// Print the version.
    Version,
}

/// Bounds on one input (a manifest file, an admission review, a watched object), shared by
/// `serve` and `validate` so both judge a file alike.
#[derive(Debug, Clone, clap::Args)]
pub struct InputArgs {
    /// Bytes of one input (a manifest file, an admission review, a watched object); larger
    /// inputs are refused, counted in `sextant_xds_bounded_total{bound="input_bytes"}` (a
    /// file of `--config-dir` refused before it is read: `bound="file_bytes"`).
    #[arg(long, env = "SEXTANT_MAX_INPUT_BYTES", default_value_t = sextant_index::manifest::MAX_INPUT_BYTES)]
    pub max_input_bytes: usize,
    /// Nesting of mappings and sequences in one input; deeper inputs are refused, counted in
    /// `sextant_xds_bounded_total{bound="input_depth"}`.
    #[arg(long, env = "SEXTANT_MAX_INPUT_DEPTH", default_value_t = sextant_index::manifest::MAX_DEPTH)]
    pub max_input_depth: usize,
    /// Nodes one input may expand to (YAML aliases counted each time used); counted in
    /// `sextant_xds_bounded_total{bound="input_nodes"}` when passed.
    #[arg(long, env = "SEXTANT_MAX_INPUT_NODES", default_value_t = sextant_index::manifest::MAX_NODES)]
    pub max_input_nodes: usize,
    /// Bytes one input expands to with aliases expanded and every field written under its
    /// full path (long keys nested deep make this grow with the square of the text); counted
    /// in `sextant_xds_bounded_total{bound="input_expanded_bytes"}` when passed.
    #[arg(long, env = "SEXTANT_MAX_INPUT_EXPANDED_BYTES", default_value_t = sextant_index::manifest::MAX_EXPANDED_BYTES)]
    pub max_input_expanded_bytes: usize,
}

impl InputArgs {
    /// The bounds, as the readers take them.
    pub fn limits(&self) -> sextant_index::manifest::Limits {
        sextant_index::manifest::Limits {
            input_bytes: self.max_input_bytes,
            depth: self.max_input_depth,
            nodes: self.max_input_nodes,
            expanded_bytes: self.max_input_expanded_bytes,
        }
    }
}

/// Arguments of `sextant validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Files or directories to check (`-` reads standard input). Directories are read
    /// recursively for `.yaml`, `.yml` and `.json` files.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Treat warnings as errors.
    #[arg(long)]
    pub strict: bool,
    /// Largest RE2 program size (instructions) a regex may compile to: Envoy's runtime
    /// `re2.max_program_size.error_level`, as Istio's bootstrap and `sextant bootstrap` set it
    /// (Envoy's own default is 100); a larger regex is an error.
    #[arg(long, env = "SEXTANT_MAX_REGEX_PROGRAM_SIZE", default_value_t = sextant_index::parse::re2::ENVOY_MAX_PROGRAM_SIZE)]
    pub max_regex_program_size: usize,
    /// Bounds on each file read.
    #[command(flatten)]
    pub input: InputArgs,
}

/// How `validate` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// `path:line: severity: message`, like a compiler.
    Text,
    /// One JSON document for tools.
    Json,
}

/// Arguments of `sextant serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Directory of YAML manifests, watched for changes. Without it, Sextant watches the
    /// Kubernetes cluster of its in-cluster configuration or `KUBECONFIG`.
    #[arg(long, env = "SEXTANT_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// Namespace for objects that name none (as `kubectl apply` would place them).
    #[arg(long, env = "SEXTANT_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Plaintext xDS port.
    #[arg(long, env = "SEXTANT_XDS_PORT", default_value_t = 15010)]
    pub xds_port: u16,
    /// TLS xDS port. Callers authenticate with a client certificate from Sextant's CA or a
    /// service-account token, and may only ask as that identity.
    #[arg(long, env = "SEXTANT_SECURE_XDS_PORT", default_value_t = 15012)]
    pub secure_xds_port: u16,
    /// Audiences a bearer token on the secure xDS port must be issued for.
    #[arg(
        long,
        env = "TOKEN_AUDIENCES",
        default_value = "istio-ca",
        value_delimiter = ','
    )]
    pub token_audiences: Vec<String>,
    /// Bytes of a proxy's NACK error text kept (in `/debug/syncz`, CSDS and the log); the
    /// rest is cut and counted in `sextant_xds_bounded_total{bound="nack_message"}`.
    #[arg(long, env = "SEXTANT_MAX_NACK_MESSAGE_BYTES", default_value_t = sextant_xds::protocol::DEFAULT_NACK_MESSAGE_BYTES)]
    pub max_nack_message_bytes: usize,
    /// Names one xDS subscription (a stream's names of one type) may hold; a request that
    /// would pass it ends its stream with RESOURCE_EXHAUSTED, counted in
    /// `sextant_xds_bounded_total{bound="subscription_names"}`.
    #[arg(long, env = "SEXTANT_MAX_SUBSCRIPTION_NAMES", default_value_t = sextant_xds::protocol::DEFAULT_SUBSCRIPTION_NAMES)]
    pub max_subscription_names: usize,
    /// TokenReview answers kept (by a hash of the token), so a proxy reconnecting is not
    /// reviewed again; refusals are kept 10 s and take no room from accepted tokens.
    #[arg(
        long,
        env = "SEXTANT_TOKEN_REVIEW_CACHE_SIZE",
        default_value_t = 10_000
    )]
    pub token_review_cache_size: usize,
    /// Longest an accepted token's review is kept (never past the token's own expiry).
    #[arg(
        long,
        env = "SEXTANT_TOKEN_REVIEW_CACHE_SECONDS",
        default_value_t = 300
    )]
    pub token_review_cache_seconds: u64,
    /// Callers of the secure xDS port waiting for a TokenReview, shared fairly among the
    /// clusters whose API servers review them (16 reviews run at once per cluster; all
    /// clusters together never hold more than twice this); one more is refused at once with
    /// UNAVAILABLE, counted in `sextant_xds_bounded_total{bound="token_reviews"}`.
    #[arg(
        long,
        env = "SEXTANT_MAX_TOKEN_REVIEWS_WAITING",
        default_value_t = 1024
    )]
    pub max_token_reviews_waiting: usize,
    /// Bounds on every input read (files, admission reviews, watched objects).
    #[command(flatten)]
    pub input: InputArgs,
    /// VirtualServices and DestinationRules held back at once after a proxy rejected them
    /// (NACK isolation); a further rejection is left as it is, counted in
    /// `sextant_xds_bounded_total{bound="held_objects"}`.
    #[arg(long, env = "SEXTANT_MAX_HELD_OBJECTS", default_value_t = crate::quarantine::DEFAULT_MAX_HELD_OBJECTS)]
    pub max_held_objects: usize,
    /// Lets NACKs from the plaintext port (unauthenticated proxies) hold objects back too.
    /// Off by default: anyone who reaches that port could otherwise hold back other teams'
    /// newest VirtualServices and DestinationRules by rejecting them. NACKs from the secure
    /// port (a proven identity) always can.
    #[arg(long, env = "SEXTANT_HOLD_ON_PLAINTEXT_NACKS")]
    pub hold_on_plaintext_nacks: bool,
    /// Largest RE2 program size (instructions) a VirtualService regex may compile to, for
    /// validation here and in the webhook: Envoy's runtime `re2.max_program_size.error_level`,
    /// which Istio's bootstrap and `sextant bootstrap` set to 32768 (Envoy's own default is
    /// 100: use that for Envoys started otherwise). Envoy rejects a larger one, and with it
    /// every route of the port.
    #[arg(long, env = "SEXTANT_MAX_REGEX_PROGRAM_SIZE", default_value_t = sextant_index::parse::re2::ENVOY_MAX_PROGRAM_SIZE)]
    pub max_regex_program_size: usize,
    /// Largest xDS request accepted; a larger one ends its stream with OUT_OF_RANGE, counted
    /// in `sextant_xds_bounded_total{bound="request_bytes"}`.
    #[arg(long, env = "SEXTANT_MAX_REQUEST_BYTES", default_value_t = sextant_xds::server::DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    /// Time an xDS request may take to arrive beyond its size at
    /// `--min-request-bytes-per-second` (ms); a slower one ends its stream with
    /// DEADLINE_EXCEEDED, counted as `bound="request_progress"`.
    #[arg(long, env = "SEXTANT_REQUEST_GRACE_MS", default_value_t = sextant_xds::grpc::DEFAULT_REQUEST_GRACE.as_millis() as u64)]
    pub request_grace_ms: u64,
    /// Slowest pace an xDS request may arrive at, once its first bytes have (bytes/s).
    #[arg(long, env = "SEXTANT_MIN_REQUEST_BYTES_PER_SECOND", default_value_t = sextant_xds::grpc::DEFAULT_MIN_REQUEST_BYTES_PER_SECOND)]
    pub min_request_bytes_per_second: u64,
    /// Connections each xDS port (plaintext and TLS) holds at once; further ones are closed
    /// as they arrive, counted as `bound="connections"`.
    #[arg(long, env = "SEXTANT_MAX_CONNECTIONS", default_value_t = crate::listen::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Connections the webhook port holds at once.
    #[arg(long, env = "SEXTANT_MAX_WEBHOOK_CONNECTIONS", default_value_t = crate::listen::DEFAULT_MAX_WEBHOOK_CONNECTIONS)]
    pub max_webhook_connections: usize,
    /// Connections the admin port holds at once (not part of the total, so `/ready` answers
    /// when the other ports are full).
    #[arg(long, env = "SEXTANT_MAX_ADMIN_CONNECTIONS", default_value_t = crate::listen::DEFAULT_MAX_ADMIN_CONNECTIONS)]
    pub max_admin_connections: usize,
    /// Connections the xDS and webhook ports hold together; further ones are closed, counted
    /// as `bound="connections_total"`. Default: the open-files limit less the admin
    /// connections and 128 descriptors for everything else.
    #[arg(long, env = "SEXTANT_MAX_CONNECTIONS_TOTAL")]
    pub max_connections_total: Option<usize>,
    /// TLS handshakes in progress at once per TLS port; past it the oldest is dropped,
    /// counted as `bound="handshakes"`.
    #[arg(long, env = "SEXTANT_MAX_HANDSHAKES", default_value_t = crate::tls::DEFAULT_MAX_HANDSHAKES)]
    pub max_handshakes: usize,
    /// Time a TLS handshake may take (ms); a slower one is dropped, counted as
    /// `bound="handshake_deadline"`.
    #[arg(long, env = "SEXTANT_HANDSHAKE_TIMEOUT_MS", default_value_t = crate::tls::DEFAULT_HANDSHAKE_TIMEOUT.as_millis() as u64)]
    pub handshake_timeout_ms: u64,
    /// Streams one connection to an xDS port may hold; a further one is refused with
    /// RESOURCE_EXHAUSTED, counted as `bound="streams"`.
    #[arg(long, env = "SEXTANT_MAX_STREAMS_PER_CONNECTION", default_value_t = crate::streams::DEFAULT_MAX_STREAMS_PER_CONNECTION)]
    pub max_streams_per_connection: usize,
    /// Admin HTTP port (`/ready`, `/metrics`, `/debug/*`).
    #[arg(long, env = "SEXTANT_ADMIN_PORT", default_value_t = 15014)]
    pub admin_port: u16,
    /// Address the servers listen on.
    #[arg(long, env = "SEXTANT_LISTEN_ADDRESS", default_value = "0.0.0.0")]
    pub listen_address: std::net::IpAddr,
    /// Push once changes have been quiet this long (ms).
    #[arg(long, env = "SEXTANT_DEBOUNCE_AFTER_MS", default_value_t = 100)]
    pub debounce_after_ms: u64,
    /// Push at the latest this long after the first change (ms).
    #[arg(long, env = "SEXTANT_DEBOUNCE_MAX_MS", default_value_t = 1000)]
    pub debounce_max_ms: u64,
    /// DNS suffix of the cluster.
    #[arg(long, env = "SEXTANT_DOMAIN_SUFFIX", default_value = "cluster.local")]
    pub domain_suffix: String,
    /// SPIFFE trust domain of workload identities (`spiffe://TRUST_DOMAIN/ns/NS/sa/SA`). Wins
    /// over the mesh config's `trustDomain` (default `cluster.local`), which is read at start.
    #[arg(long, env = "SEXTANT_TRUST_DOMAIN")]
    pub trust_domain: Option<String>,
    /// Istio's root namespace: its DestinationRules, PeerAuthentications and Sidecars without
    /// a selector apply mesh-wide. Wins over the mesh config's `rootNamespace` (default
    /// `istio-system`).
    #[arg(long, env = "SEXTANT_ROOT_NAMESPACE")]
    pub root_namespace: Option<String>,
    /// Istio's mesh config (`MeshConfig` YAML, as the `mesh` key of ConfigMap `istio`), for
    /// directory mode; watched, so an edit applies without a restart (`trustDomain` at the
    /// next start). With a cluster, ConfigMap `istio` in `POD_NAMESPACE` is watched instead.
    #[arg(long, env = "SEXTANT_MESH_CONFIG")]
    pub mesh_config: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "SEXTANT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level or filter (`info`, `sextant_xds=debug`).
    #[arg(long, env = "SEXTANT_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Sextant's own namespace: the Lease that elects the replica writing to the cluster, the
    /// CA Secrets, and the names of its serving certificate (`istiod.NS.svc`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// How long a Lease holder stays leader without renewing (Kubernetes only).
    #[arg(long, env = "SEXTANT_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Bytes of one API server response other than a watch event: a list page (of at most
    /// 500 objects) or a get, from the config cluster or a remote cluster. A larger response
    /// is cut: that watch fails naming this flag, is retried with backoff and keeps what it
    /// held. Each watch event is bounded by `--max-input-bytes`.
    #[arg(long, env = "SEXTANT_MAX_LIST_BYTES", default_value_t = sextant_kube::client::DEFAULT_MAX_LIST_BYTES)]
    pub max_list_bytes: usize,
    /// HTTPS port of the validating admission webhook (`/validate`).
    #[arg(long, env = "SEXTANT_WEBHOOK_PORT", default_value_t = 15017)]
    pub webhook_port: u16,
    /// The ValidatingWebhookConfiguration whose `caBundle` the Lease holder keeps current.
    #[arg(
        long,
        env = "SEXTANT_WEBHOOK_CONFIG",
        default_value = "sextant-validator"
    )]
    pub webhook_config: String,
    /// Service name in the webhook's serving certificate (`NAME.NAMESPACE.svc`).
    #[arg(long, env = "SEXTANT_SERVICE_NAME", default_value = "sextant")]
    pub service_name: String,
    /// Where the CA is kept: Istio's plug-in layout (`ca-cert.pem`, `ca-key.pem`,
    /// `root-cert.pem`, `cert-chain.pem`: Sextant signs as that intermediate), or Sextant's
    /// root (`ca.crt`, `ca.key`, generated there when missing). Default: the Secret `cacerts`,
    /// else `sextant-ca` (created if missing) in the Lease namespace; without a cluster,
    /// `$XDG_STATE_HOME/sextant/ca` (`~/.local/state/sextant/ca`).
    #[arg(long, env = "SEXTANT_CA_DIR")]
    pub ca_dir: Option<PathBuf>,
    /// Without a cluster, the service-account tokens the secure port accepts, one a line:
    /// `TOKEN NAMESPACE/SERVICE_ACCOUNT [AUDIENCE,...]` (with a cluster, TokenReview decides).
    #[arg(long, env = "SEXTANT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Workload certificate TTL when a request asks for none, and of the certificates served
    /// over SDS (Istio's `DEFAULT_WORKLOAD_CERT_TTL`), in seconds.
    #[arg(long, env = "SEXTANT_WORKLOAD_CERT_TTL_SECONDS", default_value_t = 24 * 3600)]
    pub workload_cert_ttl_seconds: u64,
    /// Longest workload certificate TTL granted (Istio's `MAX_WORKLOAD_CERT_TTL`); longer
    /// requests are refused, in seconds.
    #[arg(long, env = "SEXTANT_MAX_WORKLOAD_CERT_TTL_SECONDS", default_value_t = 90 * 24 * 3600)]
    pub max_workload_cert_ttl_seconds: u64,
    /// Remote clusters: how they are registered and bounded, and what becomes of one that
    /// cannot be reached.
    #[command(flatten)]
    pub remote: RemoteClusterArgs,
    /// Bounds on CPU-heavy work (webhook, debug views, scope cache).
    #[command(flatten)]
    pub heavy: HeavyWorkArgs,
    /// The webhook port's bounds on time and bytes per connection and in total.
    #[command(flatten)]
    pub webhook: crate::webhook::WebhookArgs,
    /// Sidecar injection: what each injected Pod gets.
    #[command(flatten)]
    pub inject: crate::inject::InjectArgs,
    #[command(flatten)]
    pub vhds: crate::generator::vhds::VhdsArgs,
}

/// Bounds on work that costs CPU or memory in proportion to its input: the webhook's budget,
/// the debug views and the scope cache. Each refusal or eviction is counted in
/// `sextant_xds_bounded_total{bound=...}`.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct HeavyWorkArgs {
    /// Largest AdmissionReview the webhook reads; larger ones get 413, counted as
    /// `bound="webhook_bytes"`.
    #[arg(long, env = "SEXTANT_WEBHOOK_MAX_BYTES", default_value_t = crate::webhook::DEFAULT_MAX_BYTES)]
    pub webhook_max_bytes: usize,
    /// Time one AdmissionReview may take to answer once it has arrived (`/validate` or
    /// `/inject`); past it it is denied, naming this budget, counted as `bound="webhook_time"`.
    #[arg(long, env = "SEXTANT_WEBHOOK_TIMEOUT_MS", default_value_t = crate::webhook::DEFAULT_TIMEOUT_MS)]
    pub webhook_timeout_ms: u64,
    /// AdmissionReviews validated at once; others wait up to the time budget, then get 429,
    /// counted as `bound="webhook_concurrency"`.
    #[arg(long, env = "SEXTANT_WEBHOOK_CONCURRENCY", default_value_t = crate::webhook::DEFAULT_CONCURRENCY)]
    pub webhook_concurrency: usize,
    /// `/debug/config_dump` responses built at once; more get 429, counted as
    /// `bound="debug_dumps"`.
    #[arg(long, env = "SEXTANT_MAX_DEBUG_DUMPS", default_value_t = crate::admin::DEFAULT_DEBUG_DUMPS)]
    pub max_debug_dumps: usize,
    /// Entries one page of `/debug/syncz`, `/debug/registryz` or `/debug/configz` holds
    /// (`?start=N&limit=M` pages through; the `x-sextant-next-start` header names the next page).
    #[arg(long, env = "SEXTANT_DEBUG_PAGE_SIZE", default_value_t = crate::admin::DEFAULT_PAGE_SIZE)]
    pub debug_page_size: usize,
    /// Scopes whose compiled resources are cached; past it the least recently used (preferring
    /// ones no connected proxy holds) are evicted, counted as `bound="scope_cache"`.
    #[arg(long, env = "SEXTANT_MAX_SCOPES", default_value_t = crate::generator::DEFAULT_MAX_SCOPES)]
    pub max_scopes: usize,
}

/// Remote clusters (one control plane for several clusters). With a cluster, Secrets
/// labelled `istio/multiCluster: "true"` (or `sextant.io/multiCluster: "true"`) in
/// `POD_NAMESPACE` register them, one kubeconfig per data key named by the cluster id; in
/// directory mode only `--remote-kubeconfig` does. Their state is at `/debug/clusterz`.
#[derive(Clone, Debug, clap::Args)]
pub struct RemoteClusterArgs {
    /// A remote cluster's kubeconfig file, `CLUSTER_ID=PATH` (repeatable): its Services,
    /// EndpointSlices, Pods, Namespaces and Nodes are read under that cluster id, and tokens
    /// with metadata `clusterid: CLUSTER_ID` are reviewed by its API server.
    #[arg(long, env = "SEXTANT_REMOTE_KUBECONFIG", value_delimiter = ',', value_parser = cluster_pair::<PathBuf>)]
    pub remote_kubeconfig: Vec<(String, PathBuf)>,
    /// Remote clusters watched at most; further registrations are not watched, only counted
    /// (a few shown in `/debug/clusterz` with this bound named).
    #[arg(long, env = "SEXTANT_MAX_REMOTE_CLUSTERS", default_value_t = sextant_kube::remote::DEFAULT_MAX_CLUSTERS)]
    pub max_remote_clusters: usize,
    /// Seconds every watch of a remote cluster may fail without a break (its API server
    /// unreachable) before `--remote-stale-endpoints` applies; until then its objects are
    /// served as last seen.
    #[arg(long, env = "SEXTANT_REMOTE_GRACE_PERIOD_SECONDS", default_value_t = sextant_kube::remote::DEFAULT_GRACE.as_secs())]
    pub remote_grace_period_seconds: u64,
    /// What becomes of an unreachable remote cluster's objects after the grace period; its
    /// next successful list replaces them either way.
    #[arg(long, env = "SEXTANT_REMOTE_STALE_ENDPOINTS", value_enum, default_value_t = StaleEndpoints::Remove)]
    pub remote_stale_endpoints: StaleEndpoints,
    /// A cluster's default network, `CLUSTER_ID=NETWORK` (repeatable; the config cluster's
    /// id is `Kubernetes`).
    #[arg(long, env = "SEXTANT_CLUSTER_NETWORK", value_delimiter = ',', value_parser = cluster_pair::<String>)]
    pub cluster_network: Vec<(String, String)>,
}

/// `--remote-stale-endpoints`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StaleEndpoints {
    /// Removed until the cluster answers again.
    Remove,
    /// Served as last seen until the cluster answers again.
    Keep,
}

/// `CLUSTER_ID=VALUE`, neither part empty.
fn cluster_pair<T: From<String>>(arg: &str) -> Result<(String, T), String> {
    match arg.split_once('=') {
        Some((id, value)) if !id.is_empty() && !value.is_empty() => {
            Ok((id.to_owned(), T::from(value.to_owned())))
        }
        _ => Err(format!("{arg:?}: expected CLUSTER_ID=VALUE")),
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Arguments of `sextant demo`.
#[cfg(feature = "demo")]
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The example mesh (copied to a temporary directory; the original is not modified).
    #[arg(long, default_value = "examples")]
    pub config_dir: PathBuf,
    /// The Envoy binary.
    #[arg(long, env = "ENVOY", default_value = ".venv/bin/envoy")]
    pub envoy: PathBuf,
    /// Requests per step.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
}

/// Arguments of `sextant bootstrap`.
#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// Node id, `sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local` (`router~...` for a
    /// gateway).
    #[arg(long)]
    pub node_id: String,
    /// Sextant's xDS address, `HOST:PORT`.
    #[arg(long, default_value = "127.0.0.1:15010")]
    pub xds_address: String,
    #[command(flatten)]
    pub ads: crate::cmd::bootstrap::AdsArgs,
    /// Envoy's admin port (on 127.0.0.1).
    #[arg(long, default_value_t = 15000)]
    pub admin_port: u32,
    /// Address outbound listeners bind to without interception; give each proxy on one
    /// machine its own loopback address.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: String,
    /// `INTERCEPTION_MODE`: NONE (no iptables: real listeners) or REDIRECT.
    #[arg(long, default_value = "NONE")]
    pub interception: String,
    /// Extra node metadata, `KEY=VALUE`.
    #[arg(long = "meta")]
    pub meta: Vec<String>,
    /// Run the Envoy as a gateway (an ingress or egress gateway, node type `router`): it
    /// gets the listeners and routes of the Gateways whose selector its labels match.
    #[arg(long)]
    pub gateway: bool,
    /// Write a gRPC xDS bootstrap (JSON, for `GRPC_XDS_BOOTSTRAP`) instead of Envoy's: a gRPC
    /// client then dials `xds:///HOST:PORT` and gets routes and endpoints from Sextant
    /// without a proxy (node metadata `GENERATOR: grpc`).
    #[arg(long, conflicts_with = "gateway")]
    pub grpc: bool,
    /// A workload label, `KEY=VALUE` (node metadata `LABELS`): what Gateway selectors and
    /// `sourceLabels` match when Sextant does not know the proxy's Pod.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// The cluster the proxy runs in (node metadata `CLUSTER_ID`; Sextant's own cluster,
    /// `Kubernetes`, when not given).
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// The network the proxy is on (node metadata `NETWORK`): endpoints on other networks are
    /// reached through their east-west gateway.
    #[arg(long)]
    pub network: Option<String>,
    /// Where the proxy runs, `REGION/ZONE/SUBZONE` (the node's `locality`), for
    /// locality-aware load balancing.
    #[arg(long)]
    pub locality: Option<String>,
    /// Connect over TLS (the secure xDS port, 15012), trusting this root (`root-cert.pem`);
    /// Sextant's certificate must name the host of `--xds-address`.
    #[arg(long)]
    pub xds_root_cert: Option<String>,
    /// The proxy's certificate chain (`cert-chain.pem` from `sextant ca issue`), to
    /// authenticate with; needs `--xds-root-cert` and `--xds-key`.
    #[arg(long, requires_all = ["xds_root_cert", "xds_key"])]
    pub xds_cert: Option<String>,
    /// The proxy's private key (`key.pem`).
    #[arg(long, requires = "xds_cert")]
    pub xds_key: Option<String>,
    /// Authenticate with the service-account token in this file (a projected token with
    /// audience `istio-ca`, such as `/var/run/secrets/tokens/istio-token`), sent as
    /// `authorization: Bearer` and read anew for every stream; needs `--xds-root-cert`. The
    /// ADS stream then uses Envoy's Google gRPC client.
    #[arg(long, requires = "xds_root_cert", conflicts_with = "grpc")]
    pub xds_token: Option<String>,
    /// The name Sextant's certificate must carry when the host of `--xds-address` is not it
    /// (an IP address): `sextant.NAMESPACE.svc`.
    #[arg(long, requires = "xds_root_cert", conflicts_with = "grpc")]
    pub xds_server_name: Option<String>,
    /// Add a sidecar's static listeners, as Istio's: port 15090 serving `/stats/prometheus`
    /// (with Istio's labels from the node; see the README's telemetry section) and 15021
    /// answering `/healthz/ready` from Envoy's own readiness (what the injected sidecar has),
    /// on `0.0.0.0`, or on `--bind-address` with `--interception NONE`.
    #[arg(long, conflicts_with = "grpc")]
    pub sidecar_listeners: bool,
}

/// `sextant ca ...`.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Write a new root (`ca.crt`, `ca.key`) into a directory, for `serve --ca-dir`.
    Init {
        /// The directory (created if missing); existing files are not overwritten.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a workload certificate: `cert-chain.pem`, `key.pem` and `root-cert.pem`, as
    /// Istio names them.
    Issue(IssueArgs),
    /// Rotate the root of a CA directory in three steps (trust, sign, retire), restarting
    /// every replica after each, so workloads keep connecting while certificates turn over.
    Rotate {
        /// The CA directory (`serve --ca-dir`).
        #[arg(long)]
        dir: PathBuf,
        /// The step to take.
        #[arg(long, value_enum)]
        step: RotateStep,
    },
}

/// A step of `sextant ca rotate`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum RotateStep {
    /// Make a new root, trusted beside the current one (which still signs).
    Trust,
    /// The new root signs; the old one stays trusted.
    Sign,
    /// Stop trusting the old root.
    Retire,
}

/// Arguments of `sextant ca issue`.
#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    /// The CA directory (`ca.crt` and `ca.key`, or Istio's plug-in layout).
    #[arg(long, env = "SEXTANT_CA_DIR")]
    pub ca_dir: PathBuf,
    /// The workload's namespace.
    #[arg(long)]
    pub namespace: String,
    /// The workload's service account.
    #[arg(long, default_value = "default")]
    pub service_account: String,
    /// SPIFFE trust domain.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Validity in hours (Istio's default workload certificate lives 24 hours; at most 90
    /// days).
    #[arg(long, default_value_t = 24)]
    pub ttl_hours: u64,
    /// Where to write the files (created if missing).
    #[arg(long)]
    pub out_dir: PathBuf,
}

/// Arguments of `sextant create-remote-secret`.
#[derive(Debug, clap::Args)]
pub struct CreateRemoteSecretArgs {
    /// The remote cluster's id: the Secret's data key, its `networking.istio.io/cluster`
    /// annotation and its name (`istio-remote-secret-NAME`). `Kubernetes` is the config
    /// cluster's id and cannot be used.
    #[arg(long)]
    pub name: String,
    /// Kubeconfig of the remote cluster, with rights to create Namespaces, ServiceAccounts,
    /// ClusterRoles, ClusterRoleBindings and tokens, and to hold every right the ClusterRole
    /// grants (cluster-admin has them) (default: `KUBECONFIG`, else `~/.kube/config`).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Context of the kubeconfig (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
    /// The control plane's namespace: where the ServiceAccount is made in the remote cluster,
    /// and where the printed Secret is to be applied.
    #[arg(long, default_value = "istio-system")]
    pub namespace: String,
    /// The remote API server's URL as the control plane reaches it, when that differs from
    /// the kubeconfig's (default: the kubeconfig's server).
    #[arg(long)]
    pub server: Option<String>,
    /// Lifetime asked for the ServiceAccount's token, in seconds (the API server may grant
    /// less; the command says when it expires).
    #[arg(long, default_value_t = 365 * 24 * 3600)]
    pub token_seconds: u64,
    /// The ServiceAccount the control plane reads the remote cluster as.
    #[arg(long, default_value = "sextant-reader-service-account")]
    pub service_account: String,
}

/// Arguments of `sextant crds`.
#[derive(Debug, clap::Args)]
pub struct CrdsArgs {
    /// Write one file per CRD into this directory instead of printing them.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

impl Cli {
    /// Runs the chosen subcommand and returns the process exit code.
    pub fn run(self) -> ExitCode {
        match self.command {
            Command::Validate(args) => cmd::validate::run(args),
            Command::Crds(args) => cmd::crds::run(args),
            Command::CreateRemoteSecret(args) => cmd::create_remote_secret::run(args),
            Command::ProxyConfig(args) => cmd::proxy_config::run(args),
            Command::ProxyStatus(args) => cmd::proxy_status::run(args),
            Command::Analyze(args) => cmd::analyze::run(args),
            Command::Explain(args) => cmd::explain::run(args),
            Command::Serve(args) => cmd::serve::run(args),
            Command::Bootstrap(args) => cmd::bootstrap::run(args),
            #[cfg(feature = "demo")]
            Command::Demo(args) => crate::demo::run(args),
            Command::Ca(command) => cmd::ca::run(command),
            Command::Iptables(args) => cmd::iptables::run(args),
            Command::Version => {
                println!("sextant {}", env!("CARGO_PKG_VERSION"));
                ExitCode::SUCCESS
            }
        }
    }
}
