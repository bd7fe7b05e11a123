//! Hostile configuration documents against the real binary: a 340 KB file of 100,000 keys
//! under 100 levels of long keys (which once made the YAML reader allocate past 3 GB and
//! abort) in `sextant serve`'s config directory, given to `sextant validate`, and sent to the
//! admission webhook. Each reader refuses it naming the bound; `serve` stays up, answers
//! `/ready` and counts the refusal; memory stays bounded (the child's VmRSS/VmHWM, polled).

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sextant_testing::{Process, Serve, metric, request, wait_for};

/// Far above what `sextant serve` holds for the example mesh (tens of MB in a debug build),
/// far below the 3 GB the hostile file used to cost.
const MEMORY_BOUND_KB: u64 = 400 * 1024;

const REFUSED: &str = r#"sextant_xds_bounded_total{bound="input_expanded_bytes"}"#;

/// Names a level's 1,000 short keys.
fn siblings() -> Vec<String> {
    (0..1000).map(|i| format!("k{i}")).collect()
}

/// The filed attack as YAML: 100 nested flow mappings, each with 1,000 short keys and one
/// 500-byte key holding the next level (100,000 keys, about 340 KB).
fn deep_long_keys_yaml() -> String {
    let names = siblings().join(",");
    let mut text = String::new();
    for level in 0..100 {
        text.push('{');
        text.push_str(&names);
        text.push_str(&format!(",deep{level}{}: ", "x".repeat(500)));
    }
    text.push('1');
    text.push_str(&"}".repeat(100));
    text.push('\n');
    text
}

/// The same shape as JSON, as a VirtualService's `spec` would carry it.
fn deep_long_keys_json() -> Value {
    let mut value = json!(1);
    for level in (0..100).rev() {
        let mut map: serde_json::Map<String, Value> =
            siblings().into_iter().map(|k| (k, Value::Null)).collect();
        map.insert(format!("deep{level}{}", "x".repeat(500)), value);
        value = Value::Object(map);
    }
    value
}

/// A fresh directory for this test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sextant-bounds-input-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// A line of `/proc/<pid>/status` in kB (`VmRSS`, `VmHWM`), while the process lives.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Fails the test as soon as `child` holds more than the bound.
fn assert_bounded(child: &Child) {
    if let Some(rss) = status_kb(child.id(), "VmRSS") {
        assert!(
            rss < MEMORY_BOUND_KB,
            "sextant holds {rss} kB, over {MEMORY_BOUND_KB} kB"
        );
    }
}

/// `sextant serve` on `config_dir` with its log in `log`, waiting for `/ready` while checking
/// its memory all along (the old reader grew past the bound long before it was ready).
fn serve(serve: &Serve, config_dir: &Path, log: &Path, args: &[&str]) -> Process {
    let child = serve
        .command(&sextant_testing::sextant_bin())
        .args(["--config-dir", config_dir.to_str().expect("utf-8")])
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("sextant serve starts");
    let process = Process(child);
    wait_for(
        "sextant ready, its memory bounded",
        Duration::from_secs(30),
        || {
            assert_bounded(&process.0);
            request(serve.admin_addr(), "localhost", "/ready", &[]).filter(|r| r.0 == 200)
        },
    );
    process
}

/// `/ready` answers 200 within 2 s (a stalled server would not).
fn ready_quickly(serve: &Serve) {
    let start = Instant::now();
    let ready = request(serve.admin_addr(), "localhost", "/ready", &[]);
    assert_eq!(ready.map(|r| r.0), Some(200));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

fn copy_examples(to: &Path) {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for entry in std::fs::read_dir(examples).expect("examples") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, to.join(path.file_name().expect("a file"))).expect("copied");
    }
}

#[test]
fn a_config_file_of_long_keys_nested_deep_is_refused_while_serve_stays_up() {
    let dir = scratch("serve");
    let config = dir.join("config");
    std::fs::create_dir_all(&config).expect("config dir");
    copy_examples(&config);
    std::fs::write(config.join("hostile.yaml"), deep_long_keys_yaml()).expect("written");
    let log = dir.join("sextant.log");
    let ports = Serve::new();
    // The file is there at start: the server still starts, bounded.
    let sextant = serve(&ports, &config, &log, &[]);
    let admin = ports.admin_addr();
    let refused = wait_for("the refusal counted", Duration::from_secs(10), || {
        metric(admin, REFUSED).filter(|n| *n >= 1.0)
    });
    let text = std::fs::read_to_string(&log).expect("log");
    let line = text
        .lines()
        .find(|l| l.contains("hostile.yaml"))
        .unwrap_or_else(|| panic!("the log names the file:\n{text}"));
    assert!(line.contains("--max-input-expanded-bytes"), "{line}");

    // Another one arrives while it runs: refused again, and the server answers throughout.
    std::fs::write(config.join("hostile-2.yaml"), deep_long_keys_yaml()).expect("written");
    wait_for(
        "the second refusal counted",
        Duration::from_secs(10),
        || {
            assert_bounded(&sextant.0);
            ready_quickly(&ports);
            metric(admin, REFUSED).filter(|n| *n > refused)
        },
    );
    assert_bounded(&sextant.0);
    drop(sextant);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn validate_refuses_long_keys_nested_deep_with_a_clear_error_and_bounded_memory() {
    let dir = scratch("validate");
    let file = dir.join("hostile.yaml");
    std::fs::write(&file, deep_long_keys_yaml()).expect("written");
    let mut child = Command::new(sextant_testing::sextant_bin())
        .args(["validate", "-f", file.to_str().expect("utf-8")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sextant validate starts");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let status = wait_for("sextant validate exits", Duration::from_secs(60), || {
        if let Some(peak) = status_kb(child.id(), "VmHWM")
            && peak >= MEMORY_BOUND_KB
        {
            let _ = child.kill();
            panic!("sextant validate reached {peak} kB");
        }
        child.try_wait().expect("waits")
    });
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .map(|mut e| e.read_to_string(&mut stderr));
    let stdout = reader.join().expect("stdout read");
    // Exits with a finding, not a signal (an abort on allocation failure has no code).
    assert_eq!(status.code(), Some(1), "{status:?}\n{stdout}\n{stderr}");
    let finding = stdout
        .lines()
        .find(|l| l.contains("hostile.yaml"))
        .unwrap_or_else(|| panic!("the file is named:\n{stdout}\n{stderr}"));
    assert!(finding.contains("--max-input-expanded-bytes"), "{finding}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// POSTs `body` to the webhook over TLS (trusting `root_pem`): the status and the body.
fn post_webhook(port: u16, root_pem: &str, body: &[u8]) -> (u16, String) {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(root_pem.as_bytes()).expect("root PEM"))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(head.as_bytes()).await?;
        tls.write_all(body).await?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(20), exchange).await })
        .expect("answered in time")
        .expect("exchange");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn the_webhook_denies_an_object_of_long_keys_nested_deep_naming_the_bound() {
    let dir = scratch("webhook");
    let ca = dir.join("ca");
    sextant_testing::run(Command::new(sextant_testing::sextant_bin()).args([
        "ca",
        "init",
        "--dir",
        ca.to_str().expect("utf-8"),
    ]));
    let root_pem = std::fs::read_to_string(ca.join("ca.crt")).expect("root");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let ports = Serve::new();
    let sextant = serve(
        &ports,
        &examples,
        &dir.join("sextant.log"),
        &["--ca-dir", ca.to_str().expect("utf-8")],
    );
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "hostile-1", "operation": "CREATE", "object": {
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "hostile", "namespace": "default"},
            "spec": deep_long_keys_json(),
        }},
    });
    let body = serde_json::to_vec(&review).expect("JSON");
    let (status, answer) = post_webhook(ports.webhook, &root_pem, &body);
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("an AdmissionReview");
    let response = &answer["response"];
    assert_eq!(response["uid"], "hostile-1");
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().expect("a message");
    let start: String = message.chars().take(400).collect();
    assert!(message.contains("--max-input-expanded-bytes"), "{start}");
    assert!(metric(ports.admin_addr(), REFUSED).is_some_and(|n| n >= 1.0));
    ready_quickly(&ports);
    assert_bounded(&sextant.0);
    drop(sextant);
    let _ = std::fs::remove_dir_all(&dir);
}
