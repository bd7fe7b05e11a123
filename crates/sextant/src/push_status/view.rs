//! `/debug/push_status`: the kept versions, newest first, each with its source stages, what
//! became of the proxies it was sent to, per type p50, p99 and max of each stage, and the
//! proxies worth naming (the slowest to ACK, the longest pending, the first to NACK).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Instant, SystemTime},
};

use serde_json::{Value, json};

use super::{NAMED, PushStatus, Quantiles, TYPES, VERSIONS, Version, lock, secs};

/// A proxy still owing a version its ACKs.
struct Pending {
    proxy: Arc<str>,
    since: Instant,
    outstanding: u8,
}

impl PushStatus {
    /// The push status of the kept versions, newest first (bounded: [`VERSIONS`] versions,
    /// [`NAMED`] proxies of each kind per version).
    pub fn view(&self) -> Value {
        // Copied out, so that streams' events wait for a copy, never for the rendering.
        let versions: Vec<Version> = lock(&self.versions)
            .iter()
            .rev()
            .map(|v| Version::clone(v))
            .collect();
        let pending = self.pending(&versions);
        let now = Instant::now();
        let list: Vec<Value> = versions
            .iter()
            .map(|v| version_json(v, pending.get(&v.version), now))
            .collect();
        json!({
            "versions": list,
            "kept_versions": VERSIONS,
            "named_per_version": NAMED,
            "stages": "debounce: first change to settled; read: settled to snapshot; publish: \
                       snapshot to published; send: published to the response queued; ack: \
                       that response to its ACK; total: first change to the ACK",
        })
    }

    /// The proxies longest pending for each of `versions`, longest first.
    fn pending(&self, versions: &[Version]) -> HashMap<u64, Vec<Pending>> {
        let mut pending: HashMap<u64, Vec<Pending>> =
            versions.iter().map(|v| (v.version, Vec::new())).collect();
        for shard in &self.proxies {
            for p in lock(shard).values().filter(|p| p.pending()) {
                let Some(list) = pending.get_mut(&p.version) else {
                    continue;
                };
                let since = p.first_sent.unwrap_or(p.published);
                let at = list.partition_point(|q| q.since <= since);
                if at < NAMED {
                    list.insert(
                        at,
                        Pending {
                            proxy: p.id.clone(),
                            since,
                            outstanding: p.outstanding,
                        },
                    );
                    list.truncate(NAMED);
                }
            }
        }
        pending
    }
}

fn unix_secs(t: SystemTime) -> Value {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(Value::Null, |d| json!(d.as_secs_f64()))
}

fn quantiles_json(q: &Quantiles) -> Value {
    if q.count() == 0 {
        return Value::Null;
    }
    json!({"p50": q.quantile(0.5), "p99": q.quantile(0.99), "max": q.max()})
}

fn version_json(v: &Version, pending: Option<&Vec<Pending>>, now: Instant) -> Value {
    let stages = v.source.map(|s| {
        json!({
            "debounce_seconds": secs(s.debounce()),
            "read_seconds": secs(s.read()),
            "publish_seconds": secs(s.publish(v.published)),
        })
    });
    let settled = v.acked + v.nacked + v.superseded + v.disconnected;
    let types: serde_json::Map<String, Value> = TYPES
        .iter()
        .zip(&v.types)
        .filter(|(_, t)| t.sent > 0)
        .map(|(url, t)| {
            let record = json!({
                "sent": t.sent, "acked": t.acked, "nacked": t.nacked,
                "send_seconds": quantiles_json(&t.send),
                "ack_seconds": quantiles_json(&t.ack),
                "total_seconds": quantiles_json(&t.total),
            });
            ((*url).to_owned(), record)
        })
        .collect();
    let slowest: Vec<Value> = v
        .slowest
        .iter()
        .map(|s| {
            json!({"proxy": shown(&s.proxy), "send_seconds": secs(s.send),
                   "ack_seconds": secs(s.ack), "total_seconds": secs(s.total)})
        })
        .collect();
    let pending: Vec<Value> = pending
        .into_iter()
        .flatten()
        .map(|p| {
            let types: Vec<&str> = TYPES
                .iter()
                .enumerate()
                .filter(|(i, _)| p.outstanding & (1 << i) != 0)
                .map(|(_, t)| *t)
                .collect();
            json!({"proxy": shown(&p.proxy), "waiting_seconds": secs(now.saturating_duration_since(p.since)),
                   "types": types})
        })
        .collect();
    json!({
        "version": v.version,
        "published_at": unix_secs(v.published_at),
        "stages": stages,
        "proxies": {
            "connected": v.connected, "sent": v.sent, "acked": v.acked, "nacked": v.nacked,
            "superseded": v.superseded, "disconnected": v.disconnected,
            "pending": v.sent.saturating_sub(settled),
        },
        "types": types,
        "slowest": slowest,
        "pending": pending,
        "nacked_by": v.nacked_by.iter().map(|p| shown(p)).collect::<Vec<&str>>(),
    })
}

/// Bytes of a node id the view shows: a peer chooses its node id (up to the request size
/// bound), and the view names up to 15 proxies in each of 8 versions.
pub const SHOWN_ID_BYTES: usize = 256;

/// A node id as the view shows it: at most [`SHOWN_ID_BYTES`], cut at a character boundary.
fn shown(id: &str) -> &str {
    if id.len() <= SHOWN_ID_BYTES {
        return id;
    }
    let mut end = SHOWN_ID_BYTES;
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    &id[..end]
}
