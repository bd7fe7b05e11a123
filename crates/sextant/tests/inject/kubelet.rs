//! What the kubelet does with an injected container's arguments.

use std::{collections::BTreeMap, path::Path};

use serde_json::Value;

/// Kubernetes' expansion of container arguments: `$(NAME)` of a defined variable is its
/// value, `$$` is `$`, anything else stays as written.
fn expand(text: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some((name, after)) = rest
            .strip_prefix("$(")
            .and_then(|r| r.split_once(')'))
            .filter(|(name, _)| vars.contains_key(name))
        {
            out.push_str(vars[name]);
            rest = after;
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The `istio-proxy` container's arguments as the kubelet would run them for a Pod named
/// `pod` at 10.1.2.3, the volumes' files at `mounts` instead of `/var/run/secrets`.
pub fn envoy_args(proxy: &Value, pod: &str, service_account: &str, mounts: &Path) -> Vec<String> {
    let vars = BTreeMap::from([
        ("INSTANCE_IP", "10.1.2.3"),
        ("POD_NAME", pod),
        ("POD_NAMESPACE", "default"),
        ("SERVICE_ACCOUNT", service_account),
    ]);
    let defined: Vec<&str> = proxy["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for name in vars.keys() {
        assert!(defined.contains(name), "{name} is in the container's env");
    }
    let mounts = mounts.to_str().expect("utf-8");
    proxy["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| {
            let arg = a.as_str().expect("text");
            // Only the four downward-API variables are referenced.
            let mut unknown = arg.to_owned();
            for name in vars.keys() {
                unknown = unknown.replace(&format!("$({name})"), "");
            }
            assert!(!unknown.replace("$$", "").contains("$("), "{arg}");
            expand(arg, &vars).replace("/var/run/secrets", mounts)
        })
        .collect()
}
