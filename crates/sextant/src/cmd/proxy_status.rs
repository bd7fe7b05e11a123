//! `sextant proxy-status`: every proxy connected to a running Sextant and, per xDS type,
//! whether it holds what was last sent to it (SYNCED), something older or rejected (STALE), or
//! nothing (NOT SENT), read from the admin port's `/debug/syncz`, as `istioctl proxy-status`
//! shows istiod's proxies.
//!
//! A type's version is a hash of its content; the snapshot versions beside it (`/debug/syncz`'s
//! `sent_snapshot`, `acked_snapshot`) say which published version it came from, so VERSION is
//! the published version the proxy's configuration is from (see `proxy_view`).

pub mod client;

use std::process::ExitCode;

use serde_json::{Map, Value, json};
use sextant_resources::type_url;

use super::output::{self, Format};
use client::{AdminClient, short_name};

/// The admin address `proxy-status` reads by default.
pub const DEFAULT_SERVER: &str = "127.0.0.1:15014";

/// Arguments of `sextant proxy-status`.
#[derive(Debug, clap::Args)]
pub struct ProxyStatusArgs {
    /// One proxy (its node id, or `POD.NAMESPACE`): per type, the version it holds against
    /// the latest sent, and the NACK message.
    pub proxy: Option<String>,
    /// The admin address of a running Sextant, `HOST:PORT` (its `--admin-port`).
    #[arg(long, env = "SEXTANT_ADMIN_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

/// The types shown as columns, in istioctl's order; those after the fourth only when a proxy
/// subscribed to them, except ECDS, which istioctl always shows (Sextant never sends it).
const TYPES: [(&str, &str); 7] = [
    ("CDS", type_url::CLUSTER),
    ("LDS", type_url::LISTENER),
    ("EDS", type_url::ENDPOINT),
    ("RDS", type_url::ROUTE),
    (
        "ECDS",
        "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
    ),
    ("SDS", type_url::SECRET),
    (
        "VHDS",
        "type.googleapis.com/envoy.config.route.v3.VirtualHost",
    ),
];
const ALWAYS_SHOWN: usize = 5;

/// A type URL's short name (`RDS`), or the URL itself for a type not listed.
pub fn short_type(url: &str) -> &str {
    TYPES
        .iter()
        .find(|(_, u)| *u == url)
        .map_or(url, |(name, _)| name)
}

/// A type's short name (`CDS`), or the message name of a type not in [`TYPES`].
fn type_name(url: &str) -> &str {
    TYPES
        .iter()
        .find(|(_, u)| *u == url)
        .map_or_else(|| url.rsplit('.').next().unwrap_or(url), |(n, _)| n)
}

pub fn run(args: ProxyStatusArgs) -> ExitCode {
    let ProxyStatusArgs {
        proxy,
        server,
        output,
    } = args;
    let streams = match client::runtime().and_then(|rt| {
        rt.block_on(async {
            let admin = AdminClient::new(&server)?;
            admin.syncz().await
        })
    }) {
        Ok(streams) => streams,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let view = status(&streams, proxy.as_deref());
    if let Some(name) = &proxy
        && view["proxies"].as_array().is_none_or(Vec::is_empty)
    {
        eprintln!("error: no proxy {name} is connected to {server}");
        return ExitCode::FAILURE;
    }
    match proxy {
        None => output::print(output, &view, table),
        Some(_) => output::print(output, &view, detail),
    }
    ExitCode::SUCCESS
}

/// What `proxy-status` shows of `streams` (entries of `/debug/syncz`), every proxy or only
/// `proxy` (node id or `POD.NAMESPACE`).
pub fn status(streams: &[Value], proxy: Option<&str>) -> Value {
    let chosen: Vec<&Value> = match proxy {
        Some(name) => client::find(streams, name),
        None => streams.iter().collect(),
    };
    let mut proxies: Vec<Value> = chosen.into_iter().map(proxy_view).collect();
    proxies.sort_by(|a, b| {
        (a["name"].as_str(), a["node_id"].as_str())
            .cmp(&(b["name"].as_str(), b["node_id"].as_str()))
    });
    let first = streams.first();
    json!({
        "control_plane": first.map_or(Value::Null, |s| s["control_plane"].clone()),
        "latest_snapshot": first.map_or(Value::Null, |s| s["latest_snapshot"].clone()),
        "proxies": proxies,
    })
}

/// One stream: its names and, per type, its state (in [`TYPES`]' order, then any other type
/// it subscribed to: the JSON map keeps insertion order).
fn proxy_view(stream: &Value) -> Value {
    let id = stream["proxy"].as_str().unwrap_or_default();
    let subscribed = stream["types"].as_object().cloned().unwrap_or_default();
    let mut types = Map::new();
    for (name, url) in TYPES {
        types.insert(name.to_owned(), type_view(subscribed.get(url)));
    }
    for (url, t) in &subscribed {
        if !TYPES.iter().any(|(_, u)| u == url) {
            types.insert(type_name(url).to_owned(), type_view(Some(t)));
        }
    }
    // The snapshot its configuration is from. All SYNCED: the newest it ACKed (types unchanged
    // since were not sent again, and hold what that version would send). A type STALE: the
    // oldest snapshot a STALE type's content came from (none if one never ACKed anything).
    let stale: Vec<Option<u64>> = types
        .values()
        .filter(|t| t["state"] == "STALE")
        .map(|t| t["holds_snapshot"].as_u64())
        .collect();
    let version = if stale.is_empty() {
        types
            .values()
            .filter_map(|t| t["holds_snapshot"].as_u64())
            .max()
    } else {
        stale.into_iter().min().flatten()
    };
    let nacks: Vec<Value> = types
        .iter()
        .filter(|(_, t)| t["nacked"] == true)
        .map(|(name, t)| json!({"type": name, "version": t["latest"], "error": t["error"]}))
        .collect();
    json!({
        "name": short_name(id), "node_id": id, "cluster": stream["cluster"],
        "control_plane": stream["control_plane"], "protocol": stream["protocol"],
        "identity": stream["identity"], "connected_since": stream["connected_since"],
        "version": version, "latest_snapshot": stream["latest_snapshot"],
        "types": types, "nacks": nacks,
    })
}

/// A type's state from its `/debug/syncz` entry (`None`: never subscribed).
pub fn type_view(entry: Option<&Value>) -> Value {
    let Some(t) = entry.filter(|t| !t["sent_version"].is_null()) else {
        return json!({"state": "NOT SENT", "nacked": false});
    };
    let (sent, acked) = (&t["sent_version"], &t["acked_version"]);
    let nack = &t["last_nack"];
    let nacked = sent != acked && !nack.is_null() && nack["version"] == *sent;
    let state = if sent == acked { "SYNCED" } else { "STALE" };
    let mut view = json!({
        "state": state, "nacked": nacked,
        "holds": acked, "holds_snapshot": t["acked_snapshot"],
        "latest": sent, "latest_snapshot": t["sent_snapshot"],
    });
    if nacked {
        view["error"] = nack["error"].clone();
    } else if !nack.is_null() {
        view["earlier_nack"] = nack.clone();
    }
    view
}

/// A state as a table cell.
fn cell(t: &Value) -> String {
    let state = t["state"].as_str().unwrap_or("-");
    if t["nacked"] == true {
        format!("{state} (NACKed)")
    } else {
        state.to_owned()
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// Characters of a NACK message shown in a table; `-o json` has all of it.
const TABLE_ERROR: usize = 100;

/// A message on one line, cut to `TABLE_ERROR` characters.
fn one_line(message: &str) -> String {
    let words: Vec<&str> = message.split_whitespace().collect();
    let line = words.join(" ");
    if line.chars().count() > TABLE_ERROR {
        let cut: String = line.chars().take(TABLE_ERROR).collect();
        format!("{cut}...")
    } else {
        line
    }
}

/// Every proxy, a line each, as `istioctl proxy-status` prints them.
fn table(view: &Value) -> String {
    let proxies = view["proxies"].as_array().cloned().unwrap_or_default();
    let shown: Vec<&str> = TYPES
        .iter()
        .enumerate()
        .filter(|(i, (name, _))| {
            *i < ALWAYS_SHOWN
                || proxies
                    .iter()
                    .any(|p| p["types"][*name]["state"] != "NOT SENT")
        })
        .map(|(_, (name, _))| *name)
        .collect();
    let mut headers = vec!["NAME", "CLUSTER"];
    headers.extend(&shown);
    headers.extend(["CONTROL PLANE", "VERSION", "NACK"]);
    let rows: Vec<Vec<String>> = proxies
        .iter()
        .map(|p| {
            let mut row = vec![text(&p["name"]), text(&p["cluster"])];
            row.extend(shown.iter().map(|name| cell(&p["types"][*name])));
            let nack = p["nacks"]
                .as_array()
                .and_then(|n| n.first())
                .map_or("-".to_owned(), |n| {
                    format!("{}: {}", text(&n["type"]), one_line(&text(&n["error"])))
                });
            row.extend([text(&p["control_plane"]), text(&p["version"]), nack]);
            row
        })
        .collect();
    output::columns(&headers, &rows)
}

/// One proxy (each of its streams): per type, what it holds against the latest sent, and
/// its NACK messages in full.
fn detail(view: &Value) -> String {
    let latest = text(&view["latest_snapshot"]);
    let mut sections = Vec::new();
    for p in view["proxies"].as_array().into_iter().flatten() {
        let mut s = output::columns(
            &["NAME", &text(&p["name"])],
            &[
                vec!["NODE".into(), text(&p["node_id"])],
                vec!["CLUSTER".into(), text(&p["cluster"])],
                vec!["CONTROL PLANE".into(), text(&p["control_plane"])],
                vec!["PROTOCOL".into(), text(&p["protocol"])],
                vec![
                    "VERSION".into(),
                    format!("{} (latest published {latest})", text(&p["version"])),
                ],
            ],
        );
        s.push('\n');
        let version = |v: &Value, snapshot: &Value| match (v, snapshot) {
            (Value::Null, _) => "-".to_owned(),
            (v, Value::Null) => text(v),
            (v, n) => format!("{} (snapshot {n})", text(v)),
        };
        let rows: Vec<Vec<String>> = p["types"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, t)| {
                vec![
                    name.clone(),
                    cell(t),
                    version(&t["holds"], &t["holds_snapshot"]),
                    version(&t["latest"], &t["latest_snapshot"]),
                ]
            })
            .collect();
        s.push_str(&output::columns(
            &["TYPE", "STATE", "HOLDS", "LATEST"],
            &rows,
        ));
        for n in p["nacks"].as_array().into_iter().flatten() {
            s.push_str(&format!(
                "\n{} NACKed version {}:\n{}\n",
                text(&n["type"]),
                output::printable(&text(&n["version"])),
                // Envoy's errors span lines; anything else a peer put there is escaped.
                text(&n["error"])
                    .split('\n')
                    .map(output::printable)
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        sections.push(s);
    }
    sections.join("\n")
}

#[cfg(test)]
mod tests;
