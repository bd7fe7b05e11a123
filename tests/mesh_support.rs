//! What the sidecar tests share: the bookinfo-like application `mesh-app` run in Pods'
//! network namespaces, requests made from inside a Pod, and Envoy's counters read there.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;
use sextant_testing::netns::Netns;

/// The application binary (`tests/bin/mesh_app.rs`).
pub const MESH_APP: &str = env!("CARGO_BIN_EXE_mesh-app");
/// How long the mesh may take to settle after a change.
pub const WAIT: Duration = Duration::from_secs(30);

/// Service addresses (no interface holds them: only the capture rules make them work).
pub fn vip(app: &str) -> &'static str {
    match app {
        "productpage" => "10.96.0.10",
        "reviews" => "10.96.0.11",
        _ => "10.96.0.12",
    }
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sextant-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// One GET from inside `pod` (as root, so captured): the status and the JSON body.
pub fn get(pod: &Netns, url: &str) -> Result<(u16, Value), String> {
    let out = pod
        .command(MESH_APP)
        .args(["get", url])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, body) = text.split_once('\n').unwrap_or((&text, ""));
    Ok((
        status.parse().map_err(|_| format!("status {status:?}"))?,
        serde_json::from_str(body.trim()).unwrap_or(Value::String(body.trim().to_owned())),
    ))
}

/// Envoy's counter or gauge `name` in `pod` (its admin port is on the Pod's loopback).
pub fn stat(pod: &Netns, name: &str) -> u64 {
    let (_, body) = get(pod, "http://127.0.0.1:15000/stats").expect("Envoy's admin answers");
    let prefix = format!("{name}: ");
    body.as_str()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix(prefix.as_str())))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The productpage page, asked on productpage's own loopback (not captured): what its calls
/// to reviews and ratings by Service address returned.
pub fn productpage(pod: &Netns) -> Option<Value> {
    match get(pod, "http://127.0.0.1:9080/productpage") {
        Ok((200, page)) => Some(page),
        _ => None,
    }
}

pub fn call<'a>(page: &'a Value, app: &str) -> &'a Value {
    page["calls"]
        .as_array()
        .and_then(|calls| {
            calls
                .iter()
                .find(|c| c["url"].as_str().is_some_and(|u| u.contains(vip(app))))
        })
        .unwrap_or(&Value::Null)
}
