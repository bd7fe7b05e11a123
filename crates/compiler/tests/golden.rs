//! Golden tests: each file in `tests/cases/` is a set of manifests compiled for one proxy on top
//! of a bookinfo mesh (Istio's `bookinfo.yaml` Services plus `cases/base/`). The output is an
//! insta snapshot reviewed like code, and every case's full configuration must also pass real
//! Envoy's `--mode validate` (as a static bootstrap with everything inlined), but for a
//! proxyless gRPC client's (`# meta: GENERATOR=grpc`).
//!
//! Header lines of a case:
//! - `# proxy: NODE_ID` (default: the productpage sidecar)
//! - `# meta: KEY=VALUE` (repeatable)
//! - `# show: clusters|endpoints|listeners|routes [NAME-SUBSTRING]` (repeatable; default all)
//! - `# istio-samples: PATH` (repeatable): also load a file from Istio's samples
//! - `# certificate: true`: the proxy holds a workload certificate (as on the secure port)

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use sextant_compiler::{bootstrap, compile, json};
use sextant_index::{Index, Object, manifest};
use sextant_model::Proxy;

const DEFAULT_PROXY: &str = "sidecar~10.1.0.10~productpage-v1-10.default~default.svc.cluster.local";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn samples_dir() -> PathBuf {
    std::env::var_os("SEXTANT_ISTIO_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("../../tests/fixtures/istio"))
}

fn load(index: &mut Index, path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for doc in
        manifest::parse_documents(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    {
        if doc.value.is_null() {
            continue;
        }
        if let Ok(object) = Object::from_json(doc.value, "default") {
            index.apply(object);
        }
    }
}

struct Case {
    name: String,
    proxy: String,
    meta: Vec<String>,
    show: Vec<(String, Option<String>)>,
    samples: Vec<String>,
    certificate: bool,
    path: PathBuf,
}

fn read_case(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).expect("case readable");
    let mut case = Case {
        name: path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name")
            .to_owned(),
        proxy: DEFAULT_PROXY.to_owned(),
        meta: Vec::new(),
        show: Vec::new(),
        samples: Vec::new(),
        certificate: false,
        path: path.to_path_buf(),
    };
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        let line = line.trim_start_matches('#').trim();
        if let Some(v) = line.strip_prefix("proxy:") {
            case.proxy = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("meta:") {
            case.meta.push(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("show:") {
            let mut parts = v.split_whitespace();
            let kind = parts.next().expect("show: KIND").to_owned();
            case.show.push((kind, parts.next().map(str::to_owned)));
        } else if let Some(v) = line.strip_prefix("istio-samples:") {
            case.samples.push(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("certificate:") {
            case.certificate = v.trim() == "true";
        }
    }
    case
}

fn cases() -> Vec<Case> {
    let dir = manifest_dir().join("tests/cases");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("cases dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| read_case(p)).collect()
}

fn build(case: &Case) -> (sextant_compiler::Resources, Proxy, Vec<String>) {
    let mut index = Index::default();
    let samples = samples_dir();
    load(
        &mut index,
        &samples.join("samples/bookinfo/platform/kube/bookinfo.yaml"),
    );
    for base in ["pods.yaml", "endpointslices.yaml"] {
        load(
            &mut index,
            &manifest_dir().join("tests/cases/base").join(base),
        );
    }
    for sample in &case.samples {
        load(&mut index, &samples.join(sample));
    }
    load(&mut index, &case.path);
    let (snapshot, _) = index.publish();
    let mut problems: Vec<String> = snapshot
        .invalid
        .iter()
        .map(|(o, e)| format!("invalid {o}: {}", e.join("; ")))
        .collect();
    problems.extend(
        snapshot
            .warnings
            .iter()
            .map(|(o, w)| format!("warning {o}: {}", w.join("; "))),
    );
    let mut proxy = Proxy::from_node_id(&case.proxy).expect("valid node id");
    for m in &case.meta {
        let (k, v) = m.split_once('=').expect("KEY=VALUE");
        proxy.apply_metadata(k, v);
    }
    if let Some(w) = snapshot.workload(&proxy.namespace, &proxy.workload_name) {
        proxy.complete_from(w);
    }
    proxy.holds_certificate |= case.certificate;
    (compile(&snapshot, &proxy), proxy, problems)
}

fn shown(case: &Case, resources: &sextant_compiler::Resources) -> Value {
    let all = json::resources(resources);
    if case.show.is_empty() {
        return all;
    }
    let mut out = serde_json::Map::new();
    for (kind, filter) in &case.show {
        let name_key = match kind.as_str() {
            "endpoints" => "cluster_name",
            _ => "name",
        };
        let items: Vec<Value> = all[kind.as_str()]
            .as_array()
            .unwrap_or_else(|| panic!("{}: unknown show kind {kind}", case.name))
            .iter()
            .filter(|r| {
                filter
                    .as_ref()
                    .is_none_or(|f| r[name_key].as_str().is_some_and(|n| n.contains(f.as_str())))
            })
            .cloned()
            .collect();
        if let Some(Value::Array(shown)) = out.get_mut(kind.as_str()) {
            shown.extend(items);
        } else {
            out.insert(kind.clone(), Value::Array(items));
        }
    }
    Value::Object(out)
}

#[test]
fn compiled_configuration_matches_golden_files() {
    let cases = cases();
    assert!(
        cases.len() >= 30,
        "expected a case per feature, found {}",
        cases.len()
    );
    for case in &cases {
        let (resources, _, problems) = build(case);
        let output =
            serde_json::json!({ "problems": problems, "resources": shown(case, &resources) });
        insta::with_settings!({
            snapshot_path => "cases/snapshots",
            prepend_module_to_snapshot => false,
            description => format!("tests/cases/{}.yaml", case.name),
        }, {
            insta::assert_yaml_snapshot!(case.name.clone(), output);
        });
    }
}

#[test]
fn every_golden_configuration_passes_envoy_validate() {
    let Some(envoy) = sextant_testing::envoy() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("sextant-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut failures = Vec::new();
    for case in cases() {
        let (resources, proxy, _) = build(&case);
        // A proxyless gRPC client's configuration is for gRPC, not Envoy (its listeners are
        // API listeners, one per dialled name); tests/proxyless_grpc.rs runs it with grpcio.
        if proxy.proxyless {
            continue;
        }
        let bootstrap = bootstrap::static_bootstrap(&proxy.id, &resources, 15000);
        let file = dir.join(format!("{}.json", case.name));
        std::fs::write(&file, json::to_json(&bootstrap).to_string()).expect("write bootstrap");
        let out = Command::new(&envoy)
            .args(["--mode", "validate", "--log-level", "error", "-c"])
            .arg(&file)
            .arg("--use-dynamic-base-id")
            .output()
            .expect("envoy runs");
        if !out.status.success() {
            failures.push(format!(
                "{}: {}{}",
                case.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "Envoy rejected:\n{}",
        failures.join("\n")
    );
}
