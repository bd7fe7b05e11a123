//! Istio's own manifests (`tests/fixtures/istio`, copied unmodified) against Sextant's API types,
//! generated CRD schemas and validation.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sextant::cmd::validate::{self, Severity};
use sextant_index::{
    check::{self, ObjectKind},
    manifest,
};
use sextant_model::Kind;
use sextant_schema::Schema;

fn samples_dir() -> PathBuf {
    let dir = std::env::var_os("SEXTANT_ISTIO_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/istio")
        });
    assert!(
        dir.join("SOURCE.txt").is_file(),
        "Istio samples not found at {} (set SEXTANT_ISTIO_SAMPLES)",
        dir.display()
    );
    dir
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("readable sample directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".yaml") || n.ends_with(".yaml.golden"))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every VirtualService/DestinationRule/Gateway document of the given files, with its origin.
fn istio_objects(files: &[PathBuf]) -> Vec<(String, Kind, Value)> {
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("readable sample");
        // Some files under pilot/ are Go templates, not YAML; they hold no objects we can read.
        let Ok(docs) = manifest::parse_documents(&text) else {
            continue;
        };
        for doc in docs {
            let api_version = doc
                .value
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            let kind = doc.value.get("kind").and_then(Value::as_str).unwrap_or("");
            if let ObjectKind::Istio(k) = check::classify(api_version, kind) {
                out.push((format!("{}:{}", file.display(), doc.line), k, doc.value));
            }
        }
    }
    out
}

/// The set Istio accepts: samples/, the validation dataset, and the valid CRD test cases.
fn accepted_set() -> Vec<PathBuf> {
    let s = samples_dir();
    let mut files = yaml_files(&s.join("samples"));
    files.extend(yaml_files(&s.join("pkg/test/datasets/validation/dataset")));
    files.push(s.join("pkg/config/validation/testdata/crds/destinationrule-valid.yaml"));
    files
}

/// JSON equality where `50` and `50.0` are the same number.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn accepted_samples_round_trip_through_the_api_types() {
    let objects = istio_objects(&accepted_set());
    assert!(
        objects.len() >= 40,
        "expected the whole sample set, found {}",
        objects.len()
    );
    for (origin, kind, value) in &objects {
        let back = match kind {
            Kind::VirtualService => {
                let typed: sextant_api::VirtualService = serde_json::from_value(value.clone())
                    .unwrap_or_else(|e| panic!("{origin}: {e}"));
                serde_json::to_value(&typed).expect("serializes")
            }
            Kind::Gateway => {
                let typed: sextant_api::Gateway = serde_json::from_value(value.clone())
                    .unwrap_or_else(|e| panic!("{origin}: {e}"));
                serde_json::to_value(&typed).expect("serializes")
            }
            Kind::ServiceEntry => {
                let typed: sextant_api::ServiceEntry = serde_json::from_value(value.clone())
                    .unwrap_or_else(|e| panic!("{origin}: {e}"));
                serde_json::to_value(&typed).expect("serializes")
            }
            Kind::WorkloadEntry => {
                let typed: sextant_api::WorkloadEntry = serde_json::from_value(value.clone())
                    .unwrap_or_else(|e| panic!("{origin}: {e}"));
                serde_json::to_value(&typed).expect("serializes")
            }
            _ => {
                let typed: sextant_api::DestinationRule = serde_json::from_value(value.clone())
                    .unwrap_or_else(|e| panic!("{origin}: {e}"));
                serde_json::to_value(&typed).expect("serializes")
            }
        };
        // The derived root type always writes apiVersion v1; compare the rest as written.
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("apiVersion");
            }
            v
        };
        assert!(
            same_json(&strip(value), &strip(&back)),
            "{origin}: round trip changed the object\nin:  {value}\nout: {back}"
        );
    }
}

#[test]
fn accepted_samples_pass_schema_and_semantic_validation() {
    let objects = istio_objects(&accepted_set());
    for (origin, kind, value) in &objects {
        let checked = check::check_istio_object(*kind, value);
        assert!(checked.errors.is_empty(), "{origin}: {:?}", checked.errors);
        assert!(checked.config.is_some(), "{origin}: no model value");
    }
}

#[test]
fn sextant_validate_accepts_every_accepted_sample() {
    let inputs: Vec<(String, String)> = accepted_set()
        .iter()
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(p).expect("readable"),
            )
        })
        .collect();
    let report = validate::validate(&inputs);
    let errors: Vec<String> = report
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(report.checked >= 40, "checked {}", report.checked);
}

#[test]
fn every_invalid_crd_case_is_rejected_at_the_expected_field() {
    let path =
        samples_dir().join("pkg/config/validation/testdata/crds/destinationrule-invalid.yaml");
    let text = std::fs::read_to_string(&path).expect("readable");
    let docs = manifest::parse_documents(&text).expect("valid YAML");
    assert!(docs.len() >= 3);
    for doc in docs {
        let mut value = doc.value.clone();
        let expected = value
            .as_object_mut()
            .and_then(|o| o.remove("_err"))
            .and_then(|e| e.as_str().map(str::to_owned))
            .expect("every invalid case names its error");
        let expected_path = expected.split(':').next().unwrap_or_default().to_owned();
        let checked = check::check_istio_object(Kind::DestinationRule, &value);
        assert!(
            checked.errors.iter().any(|e| e.path == expected_path),
            "line {}: expected an error at {expected_path} ({expected}), got {:?}",
            doc.line,
            checked.errors
        );
    }
}

fn istio_bundle_schema(kind: &str) -> Schema {
    let text =
        std::fs::read_to_string(samples_dir().join("manifests/charts/base/files/crd-all.gen.yaml"))
            .expect("Istio's CRD bundle");
    let docs = manifest::parse_documents(&text).expect("Istio's CRD bundle is YAML");
    let crd = docs
        .into_iter()
        .find(|d| d.value.pointer("/spec/names/kind").and_then(Value::as_str) == Some(kind))
        .expect("kind in bundle");
    let schema = crd.value["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    Schema::new(schema).expect("Istio's schema compiles")
}

fn our_schema(kind: &str) -> Schema {
    let crd = match kind {
        "VirtualService" => sextant_api::crd::virtual_service(),
        "Gateway" => sextant_api::crd::gateway(),
        "Sidecar" => sextant_api::crd::sidecar(),
        "ServiceEntry" => sextant_api::crd::service_entry(),
        "WorkloadEntry" => sextant_api::crd::workload_entry(),
        _ => sextant_api::crd::destination_rule(),
    };
    let v = serde_json::to_value(&crd).expect("CRD serializes");
    Schema::new(v["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()).expect("compiles")
}

#[test]
fn generated_schema_accepts_exactly_what_istios_schema_accepts() {
    let s = samples_dir();
    let mut objects = istio_objects(&yaml_files(&s));
    // The invalid CRD cases, without their test annotation, must be rejected by both.
    let invalid = s.join("pkg/config/validation/testdata/crds/destinationrule-invalid.yaml");
    for (origin, kind, mut value) in istio_objects(&[invalid]) {
        if let Some(o) = value.as_object_mut() {
            o.remove("_err");
        }
        objects.push((origin, kind, value));
    }
    let mut compared = 0;
    let mut rejected = 0;
    for kind in [
        "VirtualService",
        "DestinationRule",
        "Gateway",
        "Sidecar",
        "ServiceEntry",
        "WorkloadEntry",
    ] {
        let (ours, theirs) = (our_schema(kind), istio_bundle_schema(kind));
        for (origin, k, value) in objects.iter().filter(|(_, k, _)| k.as_str() == kind) {
            let a = ours.validate(value);
            let b = theirs.validate(value);
            assert_eq!(
                a.is_empty(),
                b.is_empty(),
                "{origin} ({k:?}): ours {a:?} vs Istio's {b:?}"
            );
            compared += 1;
            rejected += usize::from(!a.is_empty());
        }
    }
    assert!(compared >= 100, "compared only {compared} documents");
    assert!(
        rejected >= 3,
        "the comparison must include rejected documents"
    );
}

#[test]
fn generated_schema_is_structurally_istios() {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| k.as_str() != "description")
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            Value::Number(n) => serde_json::json!(n.as_f64()),
            other => other.clone(),
        }
    }
    let text =
        std::fs::read_to_string(samples_dir().join("manifests/charts/base/files/crd-all.gen.yaml"))
            .expect("bundle");
    let bundle = manifest::parse_documents(&text).expect("YAML");
    for crd in sextant_api::crd::all() {
        let ours = serde_json::to_value(&crd).expect("serializes");
        let kind = ours["spec"]["names"]["kind"].clone();
        let theirs = bundle
            .iter()
            .find(|d| d.value.pointer("/spec/names/kind") == Some(&kind))
            .expect("kind in bundle");
        let ours_versions = ours["spec"]["versions"].as_array().expect("versions");
        let theirs_versions = theirs.value["spec"]["versions"]
            .as_array()
            .expect("versions");
        assert_eq!(
            ours_versions.len(),
            theirs_versions.len(),
            "{kind} versions"
        );
        for a in ours_versions {
            let version = a["name"].as_str().expect("version name");
            assert_eq!(a["storage"], version == "v1");
            let b = theirs.value["spec"]["versions"]
                .as_array()
                .and_then(|vs| vs.iter().find(|v| v["name"] == version))
                .expect("version in bundle");
            assert_eq!(
                strip(&a["schema"]["openAPIV3Schema"]),
                strip(&b["schema"]["openAPIV3Schema"]),
                "{kind} {version}"
            );
            let columns = |v: &Value| -> Vec<(Value, Value)> {
                v["additionalPrinterColumns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| (c["name"].clone(), c["jsonPath"].clone()))
                    .collect()
            };
            assert_eq!(columns(a), columns(b), "{kind} {version} printer columns");
        }
        assert_eq!(ours["spec"]["names"], theirs.value["spec"]["names"]);
    }
}

#[test]
fn crds_directory_matches_the_generated_crds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    for (name, text) in sextant::cmd::crds::rendered() {
        let on_disk = std::fs::read_to_string(dir.join(&name))
            .unwrap_or_else(|e| panic!("crds/{name}: {e}; run `make crds`"));
        assert!(
            on_disk == text,
            "crds/{name} is out of date; run `make crds`"
        );
    }
}
