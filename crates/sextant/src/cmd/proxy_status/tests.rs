use serde_json::{Value, json};
use sextant_resources::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

use super::*;

fn synced(version: &str, snapshot: u64) -> Value {
    json!({"sent_version": version, "acked_version": version, "last_nack": null,
           "sent_snapshot": snapshot, "acked_snapshot": snapshot})
}

/// A `/debug/syncz` entry: clusters and endpoints ACKed at snapshot 2, listeners at 4, and
/// `routes`.
fn stream(id: &str, routes: Value) -> Value {
    json!({
        "proxy": id, "protocol": "sotw", "cluster": "Kubernetes", "control_plane": "sextant-0",
        "latest_snapshot": 4, "connected_since": 1.0, "identity": null,
        "types": {CLUSTER: synced("c1", 2), LISTENER: synced("l1", 4), ENDPOINT: synced("e1", 2),
                  ROUTE: routes},
    })
}

const GOOD: &str = "sidecar~10.0.0.1~good-0.default~default.svc.cluster.local";
const BAD: &str = "sidecar~10.0.0.2~bad-0.default~default.svc.cluster.local";

fn nacked_routes() -> Value {
    json!({"sent_version": "r2", "acked_version": "r1", "sent_snapshot": 4, "acked_snapshot": 3,
           "last_nack": {"version": "r2", "error": "regex program size 156 > 100\nsecond line"}})
}

#[test]
fn a_type_is_synced_stale_nacked_or_not_sent() {
    assert_eq!(type_view(Some(&synced("v", 1)))["state"], "SYNCED");
    let nacked = type_view(Some(&nacked_routes()));
    assert_eq!(
        (&nacked["state"], &nacked["nacked"]),
        (&json!("STALE"), &json!(true))
    );
    assert_eq!(nacked["holds"], "r1");
    assert_eq!(nacked["latest_snapshot"], 4);
    assert!(nacked["error"].as_str().is_some_and(|e| e.contains("156")));
    let waiting = json!({"sent_version": "r3", "acked_version": "r2",
                         "last_nack": {"version": "r2", "error": "old"}});
    let waiting = type_view(Some(&waiting));
    assert_eq!(
        (&waiting["state"], &waiting["nacked"]),
        (&json!("STALE"), &json!(false)),
        "a NACK of an older version is not the state of the latest"
    );
    assert_eq!(waiting["earlier_nack"]["error"], "old");
    let fixed = json!({"sent_version": "r3", "acked_version": "r3",
                       "last_nack": {"version": "r2", "error": "old"}});
    assert_eq!(type_view(Some(&fixed))["state"], "SYNCED");
    assert_eq!(type_view(None)["state"], "NOT SENT");
    assert_eq!(
        type_view(Some(&json!({"sent_version": null})))["state"],
        "NOT SENT"
    );
}

#[test]
fn every_proxy_is_listed_with_its_states_version_and_nack() {
    let streams = [stream(BAD, nacked_routes()), stream(GOOD, synced("r2", 4))];
    let view = status(&streams, None);
    assert_eq!(view["latest_snapshot"], 4);
    let proxies = view["proxies"].as_array().expect("a list");
    assert_eq!(proxies[0]["name"], "bad-0.default", "sorted by name");
    assert_eq!(
        proxies[0]["version"], 3,
        "the snapshot its STALE routes are from, though its listeners are from 4"
    );
    assert_eq!(proxies[1]["version"], 4, "all SYNCED: the newest it ACKed");
    assert_eq!(proxies[0]["nacks"][0]["type"], "RDS");
    assert_eq!(proxies[1]["types"]["ECDS"]["state"], "NOT SENT");

    let table = table(&view);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].ends_with("CONTROL PLANE  VERSION  NACK"),
        "{table}"
    );
    assert!(
        !lines[0].contains("SDS"),
        "SDS only when a proxy asks for it"
    );
    // Cells are two spaces or more apart; a state has one space inside.
    let cells = |line: &str| -> Vec<String> {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        cells(lines[1]),
        [
            "bad-0.default",
            "Kubernetes",
            "SYNCED",
            "SYNCED",
            "SYNCED",
            "STALE (NACKed)",
            "NOT SENT",
            "sextant-0",
            "3",
            "RDS: regex program size 156 > 100 second line"
        ],
        "{table}"
    );
    assert_eq!(
        cells(lines[2])[5..],
        ["SYNCED", "NOT SENT", "sextant-0", "4", "-"],
        "{table}"
    );
}

#[test]
fn one_proxy_shows_what_it_holds_against_the_latest() {
    let streams = [stream(BAD, nacked_routes()), stream(GOOD, synced("r2", 4))];
    let view = status(&streams, Some("bad-0.default"));
    assert_eq!(view["proxies"].as_array().map(Vec::len), Some(1));
    assert_eq!(status(&streams, Some(BAD))["proxies"], view["proxies"]);
    let text = detail(&view);
    assert!(
        text.lines()
            .any(|l| l == "RDS   STALE (NACKed)  r1 (snapshot 3)  r2 (snapshot 4)"),
        "{text}"
    );
    assert!(
        text.contains("RDS NACKed version r2:\nregex program size 156 > 100\nsecond line"),
        "{text}"
    );
    assert!(
        text.contains("VERSION        3 (latest published 4)"),
        "{text}"
    );
    assert!(
        status(&streams, Some("nobody.default"))["proxies"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
}

#[test]
fn long_nack_messages_are_cut_in_tables_only() {
    let long = "x ".repeat(200);
    let line = one_line(&long);
    assert_eq!(line.chars().count(), TABLE_ERROR + 3);
    assert!(line.ends_with("..."));
}
