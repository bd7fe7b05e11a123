//! What real Envoy makes of the injected sidecar: `ISTIO_META_` values of every awkward shape
//! reach its node metadata exactly as given (the bootstrap's YAML quotes them all), and every
//! log component the injector accepts is one Envoy has.

use std::{path::Path, process::Command, time::Duration};

use serde_json::{Value, json};
use sextant::inject::{InjectConfig, values::ENVOY_LOG_COMPONENTS};
use sextant_testing::{Process, http_get};

use super::{
    kubelet::envoy_args,
    pods::{injected, productpage, proxy_of},
};

/// Values that broke the bootstrap, or came back changed, when it was written with block
/// scalars (the attacker's `yaml_values.py`), and more of the same kind.
const AWKWARD: &[&str] = &[
    "a\nb",
    " a\nb",
    "a\n  b",
    "a\n\n",
    "\nx",
    "\n",
    "a\rb",
    "a\tb",
    "a\n\tb",
    "a\u{85}b",
    "a\u{85}\nb",
    "a\u{80}b",
    "a\u{2028}b",
    "\u{feff}ab",
    "a\u{fffe}b",
    "a #b",
    "a: b",
    "\"",
    "'",
    "\\",
    "{a: 1}",
    "&a",
    "*a",
    "!!binary aGk=",
    "%YAML",
    "...",
    "---",
    "a\n---\nb",
    "a\n...\nb",
    "$(POD_NAME)$$",
    "true",
    "1e3",
    "null",
    "~",
    "",
    " ",
    "\u{1f600}",
    "é",
];

/// The sidecar of `pod`, run by real Envoy with the kubelet's expansion done, its admin and
/// listener ports moved to free ones; `/server_info`'s node.
fn running_node(envoy: &Path, pod: &Value, dir: &Path) -> Value {
    let out = injected(pod, &InjectConfig::default());
    let mut args = envoy_args(
        proxy_of(&out.pod),
        "productpage-v1-0",
        "bookinfo-productpage",
        dir,
    );
    // The admin port comes first in the bootstrap; the readiness and Prometheus listeners
    // have ports of their own.
    args[1] = args[1]
        .replacen("port_value: 15000", "port_value: 0", 1)
        .replace("port_value: 15021", "port_value: 0")
        .replace("port_value: 15090", "port_value: 0");
    let address_file = dir.join("admin-address");
    let _ = std::fs::remove_file(&address_file);
    let _envoy = Process(
        Command::new(envoy)
            .args(["--use-dynamic-base-id", "--admin-address-path"])
            .arg(&address_file)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(
                std::fs::File::create(dir.join("envoy.log")).expect("log"),
            ))
            .spawn()
            .expect("envoy starts"),
    );
    let log = || std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default();
    let admin: std::net::SocketAddr =
        sextant_testing::try_wait_for("Envoy's admin address", Duration::from_secs(20), || {
            std::fs::read_to_string(&address_file)
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|e| panic!("{e}: {}", log()));
    let info = sextant_testing::try_wait_for("/server_info", Duration::from_secs(10), || {
        http_get(admin, "/server_info")
    })
    .unwrap_or_else(|e| panic!("{e}: {}", log()));
    let info: Value = serde_json::from_str(&info).expect("JSON");
    info["node"].clone()
}

#[test]
fn awkward_metadata_values_reach_envoy_unchanged() {
    let Some(envoy) = sextant_testing::envoy() else {
        return;
    };
    let dir =
        std::env::temp_dir().join(format!("sextant-inject-round-trip-{}", std::process::id()));
    for file in ["istio/root-cert.pem", "tokens/istio-token"] {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("mount directory");
        std::fs::write(&path, "").expect("mounted file");
    }
    let metadata: serde_json::Map<String, Value> = AWKWARD
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("ISTIO_META_V{i}"), json!(v)))
        .collect();
    let mut pod = productpage();
    pod["metadata"]["annotations"] =
        json!({"proxy.istio.io/config": json!({"proxyMetadata": metadata}).to_string()});
    let node = running_node(&envoy, &pod, &dir);
    let mut changed = Vec::new();
    for (i, value) in AWKWARD.iter().enumerate() {
        let got = &node["metadata"][format!("V{i}")];
        if got != &json!(value) {
            changed.push(format!("{value:?} became {got}"));
        }
    }
    // Node identity came from the downward API, not from anything above.
    assert_eq!(
        node["id"],
        "sidecar~10.1.2.3~productpage-v1-0.default~default.svc.cluster.local"
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(changed.is_empty(), "Envoy read:\n{}", changed.join("\n"));
}

#[test]
fn every_log_component_the_injector_accepts_is_envoys() {
    let Some(envoy) = sextant_testing::envoy() else {
        return;
    };
    let levels: Vec<String> = ENVOY_LOG_COMPONENTS
        .iter()
        .map(|c| format!("{c}:debug"))
        .collect();
    let run = Command::new(&envoy)
        .args([
            "--mode",
            "validate",
            "--use-dynamic-base-id",
            "--config-yaml",
            "{}",
        ])
        .args(["--component-log-level", &levels.join(",")])
        .output()
        .expect("envoy runs");
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}
