//! `sextant proxy-config`: the exact Envoy configuration a proxy gets, from a config directory
//! (`--config-dir`) or, for a proxy connected to a running Sextant, from its admin port
//! (`--server`, `/debug/config_dump`), as a table (like `istioctl proxy-config`), JSON, YAML,
//! or (offline) a static bootstrap Envoy can validate.

mod table;

use std::{path::PathBuf, process::ExitCode};

use clap::ValueEnum;
use serde_json::Value;
use sextant_compiler::{bootstrap, json};
use sextant_model::{Proxy, Snapshot};

use super::proxy_status::client::{self, AdminClient};

/// Builds the proxy a node id and `KEY=VALUE` metadata describe, completed from its Pod.
pub fn proxy_for(snapshot: &Snapshot, node_id: &str, meta: &[String]) -> Result<Proxy, String> {
    let mut proxy = Proxy::from_node_id(node_id).map_err(|e| e.to_string())?;
    for entry in meta {
        let (k, v) = entry
            .split_once('=')
            .ok_or_else(|| format!("--meta {entry:?}: expected KEY=VALUE"))?;
        proxy.apply_metadata(k, v);
    }
    if let Some(workload) = snapshot.workload(&proxy.namespace, &proxy.workload_name) {
        proxy.complete_from(workload);
    }
    Ok(proxy)
}

pub fn run(args: ProxyConfigArgs) -> ExitCode {
    let ProxyConfigArgs {
        resource,
        config_dir,
        server,
        proxy,
        mut meta,
        output,
        namespace,
        mesh_config,
        labels,
    } = args;
    if !labels.is_empty() {
        meta.push(format!("LABELS={}", labels.join(",")));
    }
    let shown = match (config_dir, server) {
        (Some(dir), _) => offline(
            resource,
            &dir,
            mesh_config,
            &proxy,
            &meta,
            output,
            &namespace,
        ),
        (None, Some(server)) => connected(resource, &server, &proxy, output),
        (None, None) => Err("one of --config-dir or --server is needed".to_owned()),
    };
    match shown {
        Ok(text) => {
            crate::cmd::out(format_args!("{}\n", text.trim_end()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// What a proxy gets from the manifests in `config_dir`.
fn offline(
    resource: ResourceKind,
    config_dir: &std::path::Path,
    mesh_config: Option<PathBuf>,
    proxy: &str,
    meta: &[String],
    output: ProxyConfigOutput,
    namespace: &str,
) -> Result<String, String> {
    let (mut index, skipped) =
        sextant_source::files::load_index(config_dir, namespace).map_err(|e| e.to_string())?;
    for s in skipped {
        eprintln!("warning: {}: skipped: {}", s.location, s.reason);
    }
    if let Some(file) = mesh_config {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("--mesh-config {}: {e}", file.display()))?;
        if !sextant_kube::mesh_config::apply(&mut index, &text, &file.display().to_string()) {
            return Err(format!(
                "--mesh-config {}: not a valid mesh config",
                file.display()
            ));
        }
    }
    let (snapshot, _) = index.publish();
    for (object, errors) in &snapshot.invalid {
        eprintln!("warning: {object} skipped: {}", errors.join("; "));
    }
    let proxy = proxy_for(&snapshot, proxy, meta)?;
    let resources = sextant_compiler::compile(&snapshot, &proxy);
    if output == ProxyConfigOutput::EnvoyStatic {
        let b = bootstrap::static_bootstrap(&proxy.id, &resources, 15000);
        return Ok(sextant_index::manifest::to_yaml(&[json::to_json(&b)]));
    }
    Ok(show(resource, &json::resources(&resources), output))
}

/// What a proxy connected to the Sextant whose admin port is `server` was sent: the proxy
/// named by node id or `POD.NAMESPACE` among `/debug/syncz`'s streams, its configuration from
/// `/debug/config_dump`.
fn connected(
    resource: ResourceKind,
    server: &str,
    proxy: &str,
    output: ProxyConfigOutput,
) -> Result<String, String> {
    if output == ProxyConfigOutput::EnvoyStatic {
        return Err("-o envoy-static is for --config-dir; a connected proxy's own Envoy serves its configuration".into());
    }
    let all = client::runtime()?.block_on(async {
        let admin = AdminClient::new(server)?;
        let streams = admin.syncz().await?;
        let node_id = match client::find(&streams, proxy).first() {
            Some(stream) => stream["proxy"].as_str().unwrap_or_default().to_owned(),
            None => return Err(format!("no proxy {proxy} is connected to {server}")),
        };
        let answer = admin
            .get(&format!(
                "/debug/config_dump?proxy={}",
                client::query_escape(&node_id)
            ))
            .await?;
        // Compiled for the stream's own node (metadata, locality): unless it went away
        // meanwhile, and was compiled from its id alone.
        let compiled_for = answer
            .headers
            .get("x-sextant-compiled-for")
            .and_then(|v| v.to_str().ok());
        if compiled_for != Some("connected proxy") {
            return Err(format!("{node_id} is no longer connected to {server}"));
        }
        serde_json::from_slice::<Value>(&answer.body)
            .map_err(|e| format!("/debug/config_dump: not JSON: {e}"))
    })?;
    Ok(show(resource, &all, output))
}

/// `resource` of `all` (keyed `clusters`, `endpoints`, `listeners`, `routes`) as `output`.
fn show(resource: ResourceKind, all: &Value, output: ProxyConfigOutput) -> String {
    let chosen = || match resource {
        ResourceKind::All => all.clone(),
        other => all[key(other)].clone(),
    };
    match output {
        ProxyConfigOutput::Json => serde_json::to_string_pretty(&chosen()).unwrap_or_default(),
        ProxyConfigOutput::Yaml => sextant_index::manifest::to_yaml(&[chosen()]),
        ProxyConfigOutput::Table | ProxyConfigOutput::EnvoyStatic => table::table(resource, all),
    }
}

fn key(r: ResourceKind) -> &'static str {
    match r {
        ResourceKind::Clusters => "clusters",
        ResourceKind::Listeners => "listeners",
        ResourceKind::Routes => "routes",
        ResourceKind::Endpoints => "endpoints",
        ResourceKind::All => "all",
    }
}

/// Arguments of `sextant proxy-config`.
#[derive(Debug, clap::Args)]
pub struct ProxyConfigArgs {
    /// Which resources to show.
    #[arg(value_enum)]
    pub resource: ResourceKind,
    /// Directory of YAML manifests (what `serve --config-dir` reads).
    #[arg(long, required_unless_present = "server", conflicts_with = "server")]
    pub config_dir: Option<PathBuf>,
    /// The admin address (`HOST:PORT`) of a running Sextant: show what it sent the connected
    /// proxy `--proxy`.
    #[arg(long)]
    pub server: Option<String>,
    /// Istio's mesh config (as `serve --mesh-config`).
    #[arg(long, conflicts_with = "server")]
    pub mesh_config: Option<PathBuf>,
    /// The proxy's node id, `sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local`
    /// (`router~...` for a gateway); with `--server`, also `POD.NAMESPACE`.
    #[arg(long)]
    pub proxy: String,
    /// A workload label, `KEY=VALUE` (as `bootstrap --label`): what Gateway and Sidecar
    /// selectors match when the directory has no Pod for the proxy.
    #[arg(long = "label", conflicts_with = "server")]
    pub labels: Vec<String>,
    /// Node metadata, `KEY=VALUE` (e.g. `INTERCEPTION_MODE=NONE`, `ISTIO_VERSION=1.28`,
    /// `SEXTANT_BIND_ADDRESS=127.0.0.2`, `LABELS=app=a,version=v1`).
    #[arg(long = "meta", conflicts_with = "server")]
    pub meta: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ProxyConfigOutput::Table)]
    pub output: ProxyConfigOutput,
    /// Namespace for objects that name none.
    #[arg(long, default_value = "default")]
    pub namespace: String,
}

/// Resource types of `proxy-config`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ResourceKind {
    /// CDS.
    Clusters,
    /// LDS.
    Listeners,
    /// RDS.
    Routes,
    /// EDS.
    Endpoints,
    /// Everything.
    All,
}

/// Output formats of `proxy-config`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProxyConfigOutput {
    /// Columns, like `istioctl proxy-config`.
    Table,
    /// Envoy's JSON field names.
    Json,
    /// The same as YAML.
    Yaml,
    /// A complete Envoy bootstrap with the resources as static_resources (`--config-dir`).
    EnvoyStatic,
}
