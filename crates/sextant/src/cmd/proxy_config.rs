//! `sextant proxy-config`: the exact Envoy configuration a proxy gets, from a config directory,
//! as a table (like `istioctl proxy-config`), JSON, or a static bootstrap Envoy can validate.

use std::{collections::BTreeMap, process::ExitCode};

use envoy_types::pb::envoy::config::{
    cluster::v3::{Cluster, cluster::ClusterDiscoveryType, cluster::DiscoveryType},
    core::v3::{address, socket_address},
    endpoint::v3::lb_endpoint,
};
use serde_json::Value;
use sextant_compiler::{Resources, bootstrap, json};
use sextant_model::{Proxy, Snapshot};

use crate::cli::{ProxyConfigArgs, ProxyConfigOutput, ResourceKind};

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
    let (mut index, skipped) = match sextant_source::files::load_index(&config_dir, &namespace) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for s in skipped {
        eprintln!("warning: {}: skipped: {}", s.location, s.reason);
    }
    if let Some(file) = mesh_config {
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                if !sextant_kube::mesh_config::apply(&mut index, &text, &file.display().to_string())
                {
                    eprintln!(
                        "error: --mesh-config {}: not a valid mesh config",
                        file.display()
                    );
                    return ExitCode::from(2);
                }
            }
            Err(e) => {
                eprintln!("error: --mesh-config {}: {e}", file.display());
                return ExitCode::from(2);
            }
        }
    }
    let (snapshot, _) = index.publish();
    for (object, errors) in &snapshot.invalid {
        eprintln!("warning: {object} skipped: {}", errors.join("; "));
    }
    let proxy = match proxy_for(&snapshot, &proxy, &meta) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let resources = sextant_compiler::compile(&snapshot, &proxy);
    let text = match output {
        ProxyConfigOutput::Json => {
            let all = json::resources(&resources);
            let v = match resource {
                ResourceKind::All => all,
                other => all[key(other)].clone(),
            };
            serde_json::to_string_pretty(&v).unwrap_or_default()
        }
        ProxyConfigOutput::EnvoyStatic => {
            let b = bootstrap::static_bootstrap(&proxy.id, &resources, 15000);
            sextant_index::manifest::to_yaml(&[json::to_json(&b)])
        }
        ProxyConfigOutput::Table => table(resource, &resources),
    };
    crate::cmd::out(format_args!("{}\n", text.trim_end()));
    ExitCode::SUCCESS
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

fn columns(rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("   ")
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn cluster_type(c: &Cluster) -> &'static str {
    match c.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) => match DiscoveryType::try_from(t) {
            Ok(DiscoveryType::Eds) => "EDS",
            Ok(DiscoveryType::Static) => "STATIC",
            Ok(DiscoveryType::StrictDns) => "STRICT_DNS",
            Ok(DiscoveryType::LogicalDns) => "LOGICAL_DNS",
            Ok(DiscoveryType::OriginalDst) => "ORIGINAL_DST",
            Err(_) => "-",
        },
        _ => "-",
    }
}

fn table(resource: ResourceKind, r: &Resources) -> String {
    let mut sections = Vec::new();
    if matches!(resource, ResourceKind::Clusters | ResourceKind::All) {
        let mut rows = vec![
            vec![
                "SERVICE FQDN",
                "PORT",
                "SUBSET",
                "DIRECTION",
                "TYPE",
                "DESTINATION RULE",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>(),
        ];
        for c in &r.clusters {
            let parts: Vec<&str> = c.name.split('|').collect();
            let dr = json::to_json(c)
                .pointer("/metadata/filter_metadata/istio/config")
                .and_then(Value::as_str)
                .and_then(|p| {
                    p.rsplit_once("/destination-rule/")
                        .map(|(ns, n)| (ns.to_owned(), n.to_owned()))
                })
                .map(|(ns, n)| format!("{n}.{}", ns.rsplit('/').next().unwrap_or_default()))
                .unwrap_or_else(|| "-".to_owned());
            let row = if let [dir, port, subset, host] = parts.as_slice() {
                vec![
                    if host.is_empty() { "-" } else { host }.to_owned(),
                    port.to_string(),
                    if subset.is_empty() { "-" } else { subset }.to_owned(),
                    dir.to_string(),
                    cluster_type(c).to_owned(),
                    dr,
                ]
            } else {
                vec![
                    c.name.clone(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    cluster_type(c).to_owned(),
                    "-".into(),
                ]
            };
            rows.push(row);
        }
        sections.push(columns(rows));
    }
    if matches!(resource, ResourceKind::Listeners | ResourceKind::All) {
        let mut rows = vec![vec![
            "NAME".to_owned(),
            "ADDRESS".into(),
            "PORT".into(),
            "CHAINS".into(),
        ]];
        for l in &r.listeners {
            let (addr, port) = match l.address.as_ref().and_then(|a| a.address.as_ref()) {
                Some(address::Address::SocketAddress(s)) => (
                    s.address.clone(),
                    match s.port_specifier {
                        Some(socket_address::PortSpecifier::PortValue(p)) => p.to_string(),
                        _ => "-".into(),
                    },
                ),
                _ => ("-".into(), "-".into()),
            };
            let chains = l.filter_chains.len() + usize::from(l.default_filter_chain.is_some());
            rows.push(vec![l.name.clone(), addr, port, chains.to_string()]);
        }
        sections.push(columns(rows));
    }
    if matches!(resource, ResourceKind::Routes | ResourceKind::All) {
        let mut rows = vec![vec![
            "NAME".to_owned(),
            "VHOST NAME".into(),
            "DOMAINS".into(),
            "ROUTES".into(),
        ]];
        for rc in &r.routes {
            for vh in &rc.virtual_hosts {
                let domains = match vh.domains.as_slice() {
                    [] => "-".to_owned(),
                    [one] => one.clone(),
                    [first, rest @ ..] => format!("{first} + {} more", rest.len()),
                };
                rows.push(vec![
                    rc.name.clone(),
                    vh.name.clone(),
                    domains,
                    vh.routes.len().to_string(),
                ]);
            }
        }
        sections.push(columns(rows));
    }
    if matches!(resource, ResourceKind::Endpoints | ResourceKind::All) {
        let mut rows = vec![vec![
            "ENDPOINT".to_owned(),
            "STATUS".into(),
            "LOCALITY".into(),
            "CLUSTER".into(),
        ]];
        let mut by_cluster: BTreeMap<&str, Vec<Vec<String>>> = BTreeMap::new();
        for cla in &r.endpoints {
            for group in &cla.endpoints {
                let locality = group
                    .locality
                    .as_ref()
                    .map(|l| format!("{}/{}/{}", l.region, l.zone, l.sub_zone))
                    .unwrap_or_default();
                for e in &group.lb_endpoints {
                    let addr = match &e.host_identifier {
                        Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => {
                            match ep.address.as_ref().and_then(|a| a.address.as_ref()) {
                                Some(address::Address::SocketAddress(s)) => {
                                    match s.port_specifier {
                                        Some(socket_address::PortSpecifier::PortValue(p)) => {
                                            format!("{}:{p}", s.address)
                                        }
                                        _ => s.address.clone(),
                                    }
                                }
                                _ => "-".into(),
                            }
                        }
                        _ => "-".into(),
                    };
                    let status = envoy_types::pb::envoy::config::core::v3::HealthStatus::try_from(
                        e.health_status,
                    )
                    .map(|h| h.as_str_name().to_owned())
                    .unwrap_or_default();
                    by_cluster.entry(&cla.cluster_name).or_default().push(vec![
                        addr,
                        status,
                        locality.clone(),
                        cla.cluster_name.clone(),
                    ]);
                }
            }
        }
        rows.extend(by_cluster.into_values().flatten());
        sections.push(columns(rows));
    }
    sections.join("\n\n")
}
