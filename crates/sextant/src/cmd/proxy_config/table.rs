//! `proxy-config`'s tables, like `istioctl proxy-config`, read from the resources as JSON with
//! Envoy's field names: what the compiler gives offline and what `/debug/config_dump` gives for
//! a connected proxy, so both show the same table.

use std::collections::BTreeMap;

use serde_json::Value;

use super::ResourceKind;

fn columns(rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| {
            rows.iter()
                .map(|r| {
                    r.get(i)
                        .map_or(0, |c| crate::cmd::output::printable(c).len())
                })
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(c, w)| {
                    // By hand: `format!`'s width panics past 65,535.
                    let c = crate::cmd::output::printable(c);
                    let pad = w.saturating_sub(c.len());
                    format!("{c}{}", " ".repeat(pad))
                })
                .collect::<Vec<_>>()
                .join("   ")
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn headers(names: &[&str]) -> Vec<String> {
    names.iter().map(|h| (*h).to_owned()).collect()
}

/// The list `key` of `all`, empty when missing.
fn list<'a>(all: &'a Value, key: &str) -> &'a [Value] {
    all[key].as_array().map_or(&[], Vec::as_slice)
}

fn str_or<'a>(v: &'a Value, default: &'a str) -> &'a str {
    v.as_str().unwrap_or(default)
}

/// A cluster's discovery type: set in a oneof, so present even when it is `STATIC`.
fn cluster_type(c: &Value) -> String {
    c["type"].as_str().unwrap_or("-").to_owned()
}

/// The DestinationRule (`NAME.NAMESPACE`) Istio's metadata names on a cluster.
fn destination_rule(c: &Value) -> String {
    c.pointer("/metadata/filter_metadata/istio/config")
        .and_then(Value::as_str)
        .and_then(|p| p.rsplit_once("/destination-rule/"))
        .map(|(ns, n)| format!("{n}.{}", ns.rsplit('/').next().unwrap_or_default()))
        .unwrap_or_else(|| "-".to_owned())
}

/// `address` and `port` of a socket address (the port in a oneof: present when set).
fn socket(address: &Value) -> Option<(String, Option<String>)> {
    let s = address.get("socket_address")?;
    let port = s.get("port_value").map(|p| p.to_string());
    Some((str_or(&s["address"], "").to_owned(), port))
}

fn clusters(all: &Value) -> String {
    let mut rows = vec![headers(&[
        "SERVICE FQDN",
        "PORT",
        "SUBSET",
        "DIRECTION",
        "TYPE",
        "DESTINATION RULE",
    ])];
    for c in list(all, "clusters") {
        let name = str_or(&c["name"], "");
        let parts: Vec<&str> = name.split('|').collect();
        let dash = |s: &str| if s.is_empty() { "-" } else { s }.to_owned();
        rows.push(if let [dir, port, subset, host] = parts.as_slice() {
            vec![
                dash(host),
                port.to_string(),
                dash(subset),
                dir.to_string(),
                cluster_type(c),
                destination_rule(c),
            ]
        } else {
            vec![
                name.to_owned(),
                "-".into(),
                "-".into(),
                "-".into(),
                cluster_type(c),
                "-".into(),
            ]
        });
    }
    columns(rows)
}

fn listeners(all: &Value) -> String {
    let mut rows = vec![headers(&["NAME", "ADDRESS", "PORT", "CHAINS"])];
    for l in list(all, "listeners") {
        let (addr, port) = match socket(&l["address"]) {
            Some((addr, port)) => (addr, port.unwrap_or_else(|| "-".into())),
            None => ("-".into(), "-".into()),
        };
        let chains =
            list(l, "filter_chains").len() + usize::from(l.get("default_filter_chain").is_some());
        rows.push(vec![
            str_or(&l["name"], "").to_owned(),
            addr,
            port,
            chains.to_string(),
        ]);
    }
    columns(rows)
}

fn routes(all: &Value) -> String {
    let mut rows = vec![headers(&["NAME", "VHOST NAME", "DOMAINS", "ROUTES"])];
    for rc in list(all, "routes") {
        for vh in list(rc, "virtual_hosts") {
            let domains: Vec<&str> = list(vh, "domains").iter().map(|d| str_or(d, "")).collect();
            let domains = match domains.as_slice() {
                [] => "-".to_owned(),
                [one] => (*one).to_owned(),
                [first, rest @ ..] => format!("{first} + {} more", rest.len()),
            };
            rows.push(vec![
                str_or(&rc["name"], "").to_owned(),
                str_or(&vh["name"], "").to_owned(),
                domains,
                list(vh, "routes").len().to_string(),
            ]);
        }
    }
    columns(rows)
}

fn endpoints(all: &Value) -> String {
    let mut rows = vec![headers(&["ENDPOINT", "STATUS", "LOCALITY", "CLUSTER"])];
    let mut by_cluster: BTreeMap<&str, Vec<Vec<String>>> = BTreeMap::new();
    for cla in list(all, "endpoints") {
        let cluster = str_or(&cla["cluster_name"], "");
        for group in list(cla, "endpoints") {
            let locality = group.get("locality").map_or_else(String::new, |l| {
                format!(
                    "{}/{}/{}",
                    str_or(&l["region"], ""),
                    str_or(&l["zone"], ""),
                    str_or(&l["sub_zone"], "")
                )
            });
            for e in list(group, "lb_endpoints") {
                let addr = match e.get("endpoint").map(|ep| socket(&ep["address"])) {
                    Some(Some((addr, Some(port)))) => format!("{addr}:{port}"),
                    Some(Some((addr, None))) => addr,
                    _ => "-".into(),
                };
                // An enum at its default (UNKNOWN) is left out of the JSON.
                let status = str_or(&e["health_status"], "UNKNOWN").to_owned();
                by_cluster.entry(cluster).or_default().push(vec![
                    addr,
                    status,
                    locality.clone(),
                    cluster.to_owned(),
                ]);
            }
        }
    }
    rows.extend(by_cluster.into_values().flatten());
    columns(rows)
}

/// The tables of `resource` from `all` (`clusters`, `endpoints`, `listeners`, `routes`).
pub fn table(resource: ResourceKind, all: &Value) -> String {
    let mut sections = Vec::new();
    let all_kinds = resource == ResourceKind::All;
    if all_kinds || resource == ResourceKind::Clusters {
        sections.push(clusters(all));
    }
    if all_kinds || resource == ResourceKind::Listeners {
        sections.push(listeners(all));
    }
    if all_kinds || resource == ResourceKind::Routes {
        sections.push(routes(all));
    }
    if all_kinds || resource == ResourceKind::Endpoints {
        sections.push(endpoints(all));
    }
    sections.join("\n\n")
}
