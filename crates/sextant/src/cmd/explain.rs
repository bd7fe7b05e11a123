//! `sextant explain`: follows one request through a proxy's compiled configuration (listener,
//! filter chain, virtual host, route, cluster, endpoints) and names the VirtualService rule and
//! DestinationRule subset behind each step. Offline it compiles a directory as `proxy-config`
//! does; live it asks a running server's `/debug/explain`, which runs the same matcher on what
//! the connected proxy is sent.

pub mod follow;
pub mod listener;
pub mod live;
pub mod routing;
pub mod steps;
#[cfg(test)]
mod tests;

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use sextant_model::Snapshot;

pub use follow::explain;
pub use steps::{Explanation, Request};

use super::output::{self, Format};

/// Arguments of `sextant explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// Directory of YAML manifests to compile the proxy's configuration from (offline).
    #[arg(long, conflicts_with = "server", required_unless_present = "server")]
    pub config_dir: Option<PathBuf>,
    /// A running Sextant's admin address (`HOST:15014`): explain what the connected proxy is
    /// sent.
    #[arg(long)]
    pub server: Option<String>,
    /// The proxy's node id, `sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local` (with
    /// `--server`, a connected proxy's `POD.NAMESPACE` too, as `proxy-status` names it).
    #[arg(long)]
    pub proxy: String,
    /// Istio's mesh config (as `serve --mesh-config`; offline only).
    #[arg(long, conflicts_with = "server")]
    pub mesh_config: Option<PathBuf>,
    /// A workload label, `KEY=VALUE` (as `proxy-config --label`; offline only).
    #[arg(long = "label", conflicts_with = "server")]
    pub labels: Vec<String>,
    /// Node metadata, `KEY=VALUE` (as `proxy-config --meta`; offline only).
    #[arg(long = "meta", conflicts_with = "server")]
    pub meta: Vec<String>,
    /// Namespace for objects that name none (offline only).
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The request's Host header, with or without a port.
    #[arg(long)]
    pub host: String,
    /// The port the application connects to.
    #[arg(long)]
    pub port: u16,
    /// The request's path, query string included.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// The request's method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// A request header, `NAME:VALUE` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// The destination address the application connects to. For an iptables-captured proxy,
    /// a Service host's cluster IP when this is not given; a proxy with bound listeners is
    /// reached on the listener of the port.
    #[arg(long)]
    pub address: Option<IpAddr>,
    /// The TLS server name, when the application speaks TLS itself.
    #[arg(long)]
    pub sni: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

/// `NAME:VALUE` pairs of `--header`.
pub fn parse_headers(headers: &[String]) -> Result<Vec<(String, String)>, String> {
    headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("--header {h:?}: expected NAME:VALUE"))
        })
        .collect()
}

/// The cluster IP of the Service `host` names (its port dropped) as seen from `namespace`,
/// resolved as the cluster's DNS would: a short name, `name.namespace`, or the full name.
pub fn service_address(snapshot: &Snapshot, host: &str, namespace: &str) -> Option<IpAddr> {
    let name = match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
    .to_ascii_lowercase();
    if let Ok(ip) = name.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Some(ip);
    }
    let suffix = &snapshot.domain_suffix;
    [
        name.clone(),
        format!("{name}.{namespace}.svc.{suffix}"),
        format!("{name}.svc.{suffix}"),
        format!("{name}.{suffix}"),
    ]
    .iter()
    .find_map(|h| snapshot.services.get(h)?.cluster_ip)
}

pub fn run(args: ExplainArgs) -> ExitCode {
    let ExplainArgs {
        config_dir,
        server,
        proxy,
        mesh_config,
        labels,
        mut meta,
        namespace,
        host,
        port,
        path,
        method,
        headers,
        address,
        sni,
        output,
    } = args;
    let headers = match parse_headers(&headers) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let request = Request {
        host,
        port,
        path,
        method,
        headers,
        address,
        sni,
    };
    let explained = match (config_dir, server) {
        (Some(dir), _) => {
            if !labels.is_empty() {
                meta.push(format!("LABELS={}", labels.join(",")));
            }
            offline(
                &dir,
                mesh_config.as_deref(),
                &namespace,
                &proxy,
                &meta,
                request,
            )
        }
        (None, Some(server)) => {
            live::resolve(&server, &proxy).and_then(|id| live::fetch(&server, &id, &request))
        }
        (None, None) => Err("give --config-dir DIR or --server HOST:PORT".to_owned()),
    };
    match explained {
        Ok(e) => {
            output::print(
                output,
                &serde_json::to_value(&e).unwrap_or_default(),
                |_| table(&e),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn offline(
    dir: &std::path::Path,
    mesh_config: Option<&std::path::Path>,
    namespace: &str,
    node: &str,
    meta: &[String],
    mut request: Request,
) -> Result<Explanation, String> {
    let (mut index, skipped) =
        sextant_source::files::load_index(dir, namespace).map_err(|e| e.to_string())?;
    for s in skipped {
        eprintln!("warning: {}: skipped: {}", s.location, s.reason);
    }
    if let Some(file) = mesh_config {
        let text = std::fs::read_to_string(file)
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
    let proxy = super::proxy_config::proxy_for(&snapshot, node, meta)?;
    let resources = sextant_compiler::compile(&snapshot, &proxy);
    if request.address.is_none() && listener::captured(&resources.listeners) {
        request.address = service_address(&snapshot, &request.host, &proxy.namespace);
    }
    let mut e = explain(&resources, &proxy.id, &request);
    e.configuration = format!("compiled from {}", dir.display());
    Ok(e)
}

/// One line per stage, then the endpoints of each cluster.
pub fn table(e: &Explanation) -> String {
    let r = &e.request;
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |stage: &str, name: String, detail: String| {
        rows.push(vec![stage.to_owned(), name, detail]);
    };
    if let Some(l) = &e.listener {
        row("LISTENER", l.name.clone(), l.why.clone());
    }
    if let Some(c) = &e.filter_chain {
        row("FILTER CHAIN", c.name.clone(), c.why.clone());
    }
    if let Some(v) = &e.virtual_host {
        row("VIRTUAL HOST", v.name.clone(), v.why.clone());
    }
    if let Some(rt) = &e.route {
        let origin = match (&rt.virtual_service, rt.rule) {
            (Some(vs), Some(rule)) => match rt.rule_match {
                Some(m) => format!("VirtualService {vs} rule {rule} match {m}"),
                None => format!("VirtualService {vs} rule {rule}"),
            },
            (Some(vs), None) => format!("VirtualService {vs}"),
            _ => "no VirtualService (the service's default route)".to_owned(),
        };
        let mut detail = vec![
            format!("#{} {}", rt.index, rt.matches),
            origin,
            rt.action.clone(),
        ];
        detail.extend(rt.timeout.as_ref().map(|t| format!("timeout {t}")));
        detail.extend(rt.retries.as_ref().map(|t| format!("retries {t}")));
        if let Some(f) = &rt.fault {
            detail.extend(f.delay.clone());
            detail.extend(f.abort.clone());
        }
        row("ROUTE", rt.name.clone(), detail.join("; "));
    }
    for c in &e.clusters {
        let mut detail = Vec::new();
        detail.extend(c.weight.map(|w| format!("weight {w}")));
        detail.push(c.kind.clone());
        match (&c.destination_rule, &c.subset) {
            (Some(dr), Some(s)) => detail.push(format!("DestinationRule {dr} subset {s}")),
            (Some(dr), None) => detail.push(format!("DestinationRule {dr}")),
            _ => {}
        }
        row("CLUSTER", c.name.clone(), detail.join("; "));
        for ep in &c.endpoints {
            let mut d = vec![format!("weight {}", ep.weight)];
            if !ep.locality.is_empty() {
                d.push(format!("locality {}", ep.locality));
            }
            if ep.priority != 0 {
                d.push(format!("priority {}", ep.priority));
            }
            d.push(ep.health.clone());
            row("  ENDPOINT", ep.address.clone(), d.join("; "));
        }
    }
    let mut text = format!(
        "{} http://{}{} (port {}) through {}\n",
        r.method, r.host, r.path, r.port, e.proxy
    );
    if !e.configuration.is_empty() {
        text.push_str(&format!("configuration: {}\n", e.configuration));
    }
    text.push_str(&output::columns(&["STEP", "NAME", "WHY / WHAT"], &rows));
    text.push_str(&format!("OUTCOME: {}\n", e.outcome));
    for warning in &e.warnings {
        text.push_str(&format!("WARNING: {warning}\n"));
    }
    text
}
