//! Istio's certificate service (`istio.v1.auth.IstioCertificateService/CreateCertificate`)
//! on the secure port, called by a client that Python's grpcio-tools builds from
//! `proto/istio/v1/auth/ca.proto`: another toolchain than Sextant's, as istio-agent is.
//! Chains are checked with `openssl verify`. Directory mode: tokens come from `--token-file`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use sextant_testing::{Process, Serve, grpc_python, metric, openssl, repo, run, sextant_bin};

const TOKENS: &str = "# TOKEN NAMESPACE/SERVICE_ACCOUNT [AUDIENCE,...]\ngood-token default/reviews istio-ca\nother-audience default/reviews kubernetes\n";

fn identity(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/default/sa/{sa}")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sextant-csr-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("config")).expect("scratch dir");
    dir
}

/// `sextant serve` on `dir/config`, with a token file and the CA in `ca_dir` (`None`: the
/// default state directory).
struct Sextant {
    serve: Serve,
    _process: Process,
}

fn start(dir: &Path, ca_dir: Option<&Path>, extra: &[&str]) -> Sextant {
    std::fs::write(dir.join("tokens"), TOKENS).expect("token file");
    let serve = Serve::new();
    let mut command = serve.command(&sextant_bin());
    command
        .args(["--config-dir", dir.join("config").to_str().expect("utf-8")])
        .args(["--token-file", dir.join("tokens").to_str().expect("utf-8")])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sextant.log")).expect("log"));
    if let Some(ca) = ca_dir {
        command.args(["--ca-dir", ca.to_str().expect("utf-8")]);
    }
    let process = Process(command.spawn().expect("sextant serve starts"));
    if let Err(e) = serve.wait_ready(Duration::from_secs(20)) {
        panic!(
            "{e}\n{}",
            std::fs::read_to_string(dir.join("sextant.log")).unwrap_or_default()
        );
    }
    Sextant {
        serve,
        _process: process,
    }
}

/// One CreateCertificate call through the Python client: its JSON answer.
fn call(python: &Path, port: u16, root: &Path, args: &[&str]) -> Value {
    let out = run(Command::new(python)
        .arg(repo("tests/fixtures/istio_ca_client.py"))
        .args(["--address", &format!("127.0.0.1:{port}")])
        .args(["--root", root.to_str().expect("utf-8")])
        .args(["--proto-dir", repo("proto").to_str().expect("utf-8")])
        .args(args));
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The status code of an answer, and its message.
fn code(answer: &Value) -> (&str, &str) {
    (
        answer["code"].as_str().unwrap_or_default(),
        answer["message"].as_str().unwrap_or_default(),
    )
}

/// Writes the chain's certificates to `dir/NAME-I.pem` and returns the paths.
fn write_chain(dir: &Path, name: &str, answer: &Value) -> Vec<PathBuf> {
    let chain = answer["chain"].as_array().expect("a chain");
    chain
        .iter()
        .enumerate()
        .map(|(i, pem)| {
            let path = dir.join(format!("{name}-{i}.pem"));
            std::fs::write(&path, pem.as_str().expect("PEM")).expect("write");
            path
        })
        .collect()
}

/// `openssl verify` of `leaf` against `root`, with `untrusted` intermediates.
fn openssl_verify(openssl: &Path, root: &Path, untrusted: &[PathBuf], leaf: &Path) -> String {
    let mut c = Command::new(openssl);
    c.args(["verify", "-CAfile"]).arg(root);
    for u in untrusted {
        c.arg("-untrusted").arg(u);
    }
    let out = c.arg(leaf).output().expect("openssl runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The leaf's URI SANs and validity in seconds.
fn leaf_facts(pem: &str) -> (Vec<String>, i64) {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM");
    let ids = sextant_ca::certificate_identities(&der)
        .iter()
        .map(ToString::to_string)
        .collect();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("DER");
    let v = cert.validity();
    (ids, v.not_after.timestamp() - v.not_before.timestamp())
}

#[test]
fn istio_clients_get_certificates_for_their_own_identity_only() {
    let (Some(python), Some(openssl)) = (grpc_python(), openssl()) else {
        return;
    };
    let dir = scratch("own");
    let ca = dir.join("ca");
    let sextant = start(
        &dir,
        Some(&ca),
        &["--max-workload-cert-ttl-seconds", "172800"],
    );
    // The CA was generated into the empty --ca-dir.
    let root = ca.join("ca.crt");
    assert!(root.is_file());
    let port = sextant.serve.secure_xds;
    let reviews = identity("reviews");
    let with = |extra: &[&str]| {
        let mut args = vec!["--san", &reviews, "--token", "good-token"];
        args.extend_from_slice(extra);
        call(&python, port, &root, &args)
    };

    // Signed: the chain is leaf then root, the leaf names the caller and lasts the TTL asked
    // for (from two minutes back), and openssl verifies it against the root.
    let answer = with(&["--ttl", "3600", "--cluster-id", "Kubernetes"]);
    assert_eq!(code(&answer).0, "OK", "{answer}");
    let chain = write_chain(&dir, "p256", &answer);
    assert_eq!(chain.len(), 2, "{answer}");
    assert_eq!(
        std::fs::read_to_string(&chain[1]).expect("root"),
        std::fs::read_to_string(&root).expect("root")
    );
    let (sans, seconds) = leaf_facts(answer["chain"][0].as_str().expect("leaf"));
    assert_eq!(sans, std::slice::from_ref(&reviews));
    assert_eq!(seconds, 3600 + 120);
    let verified = openssl_verify(&openssl, &root, &[], &chain[0]);
    assert!(verified.contains(": OK"), "{verified}");
    // No TTL asked: the default, 24 h. RSA 2048 is accepted too.
    let answer = with(&["--key", "rsa2048"]);
    assert_eq!(code(&answer).0, "OK", "{answer}");
    let (_, seconds) = leaf_facts(answer["chain"][0].as_str().expect("leaf"));
    assert_eq!(seconds, 86_400 + 120);

    // Refused, each with its status.
    let admin = identity("admin");
    let refusals: Vec<(&str, Vec<&str>, &str, &str)> = vec![
        (
            "a CSR for another identity",
            vec!["--san", &admin, "--token", "good-token"],
            "PERMISSION_DENIED",
            "a CSR must name only the caller's identity",
        ),
        (
            "a bad token",
            vec!["--san", &reviews, "--token", "forged"],
            "UNAUTHENTICATED",
            "not in the token file",
        ),
        (
            "a token for another audience",
            vec!["--san", &reviews, "--token", "other-audience"],
            "UNAUTHENTICATED",
            "not for audience istio-ca",
        ),
        (
            "no credentials",
            vec!["--san", &reviews],
            "UNAUTHENTICATED",
            "no bearer token",
        ),
        (
            "a TTL over the maximum",
            vec![
                "--san",
                &reviews,
                "--token",
                "good-token",
                "--ttl",
                "172801",
            ],
            "INVALID_ARGUMENT",
            "greater than the max allowed TTL 172800s",
        ),
        (
            "impersonation",
            vec![
                "--san",
                &admin,
                "--token",
                "good-token",
                "--impersonate",
                &admin,
            ],
            "UNAUTHENTICATED",
            "impersonation",
        ),
        (
            "another cluster",
            vec![
                "--san",
                &reviews,
                "--token",
                "good-token",
                "--cluster-id",
                "remote",
            ],
            "UNAUTHENTICATED",
            "client claims to be in cluster \"remote\"",
        ),
        (
            "a weak key",
            vec![
                "--san",
                &reviews,
                "--token",
                "good-token",
                "--key",
                "rsa1024",
            ],
            "INVALID_ARGUMENT",
            "RSA of 1024 bits",
        ),
        (
            "a CSR that is not one",
            vec!["--san", &reviews, "--token", "good-token", "--garbage-csr"],
            "INVALID_ARGUMENT",
            "the CSR cannot be read",
        ),
    ];
    for (what, args, status, message) in refusals {
        let answer = call(&python, port, &root, &args);
        let (got, text) = code(&answer);
        assert_eq!(got, status, "{what}: {answer}");
        assert!(text.contains(message), "{what}: {text:?} lacks {message:?}");
    }

    // A client certificate from Sextant's CA authenticates as its identity, with no token.
    let certs = dir.join("ratings");
    sextant_testing::issue_certificate(&ca, &certs, "cluster.local", "default", "ratings");
    let ratings = identity("ratings");
    let answer = call(
        &python,
        port,
        &root,
        &[
            "--san",
            &ratings,
            "--client-cert",
            certs.join("cert-chain.pem").to_str().expect("utf-8"),
            "--client-key",
            certs.join("key.pem").to_str().expect("utf-8"),
        ],
    );
    assert_eq!(code(&answer).0, "OK", "{answer}");
    assert_eq!(
        leaf_facts(answer["chain"][0].as_str().expect("leaf")).0,
        [ratings]
    );
    assert_eq!(
        metric(
            sextant.serve.admin_addr(),
            "sextant_certificate_requests_total{outcome=\"signed\"}"
        ),
        Some(3.0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_plug_in_intermediate_signs_chains_that_verify_against_the_operators_root() {
    let (Some(python), Some(openssl)) = (grpc_python(), openssl()) else {
        return;
    };
    let dir = scratch("plugin");
    // The operator's root and an intermediate for Sextant, made with openssl as Istio's
    // plug-in CA instructions do, in Istio's `cacerts` layout.
    let ca = dir.join("cacerts");
    sextant_testing::plugin_ca(&openssl, &ca);

    let sextant = start(&dir, Some(&ca), &[]);
    let root = ca.join("root-cert.pem");
    let reviews = identity("reviews");
    // The secure port's own certificate chains to the operator's root (the client verifies
    // it against root-cert.pem alone).
    let answer = call(
        &python,
        sextant.serve.secure_xds,
        &root,
        &["--san", &reviews, "--token", "good-token"],
    );
    assert_eq!(code(&answer).0, "OK", "{answer}");
    let chain = write_chain(&dir, "leaf", &answer);
    assert_eq!(chain.len(), 3, "leaf, intermediate, root: {answer}");
    assert_eq!(
        std::fs::read_to_string(&chain[1]).expect("intermediate"),
        std::fs::read_to_string(ca.join("ca-cert.pem")).expect("ca-cert")
    );
    let verified = openssl_verify(&openssl, &root, &chain[1..2], &chain[0]);
    assert!(verified.contains(": OK"), "{verified}");
    // Without the intermediate the leaf does not verify: it is signed by the intermediate.
    let alone = openssl_verify(&openssl, &root, &[], &chain[0]);
    assert!(!alone.contains(": OK"), "{alone}");
    // The expiry of the operator's root and of the intermediate are metrics.
    let not_after = |file: &str| {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let der = CertificateDer::from_pem_file(ca.join(file)).expect("certificate");
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("DER");
        cert.validity().not_after.timestamp() as f64
    };
    for (name, file) in [("root", "root-cert.pem"), ("intermediate", "ca-cert.pem")] {
        assert_eq!(
            metric(
                sextant.serve.admin_addr(),
                &format!("sextant_certificate_expiry_timestamp_seconds{{certificate=\"{name}\"}}")
            ),
            Some(not_after(file)),
            "{name}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_restart_keeps_the_root_in_every_directory_mode() {
    let Some(python) = grpc_python() else { return };
    let dir = scratch("restart");
    let reviews = identity("reviews");
    // The root a running Sextant serves: the last element of a signed chain (the client
    // checks the secure port against the root file the CA was stored in).
    let served_root = |sextant: &Sextant, trust: &Path| {
        let answer = call(
            &python,
            sextant.serve.secure_xds,
            trust,
            &["--san", &reviews, "--token", "good-token"],
        );
        assert_eq!(code(&answer).0, "OK", "{answer}");
        answer["chain"][1].as_str().expect("root").to_owned()
    };
    // --ca-dir: generated on the first start, read on the second.
    let ca = dir.join("ca");
    let first = {
        let s = start(&dir, Some(&ca), &[]);
        served_root(&s, &ca.join("ca.crt"))
    };
    let second = {
        let s = start(&dir, Some(&ca), &[]);
        served_root(&s, &ca.join("ca.crt"))
    };
    assert_eq!(first, second, "--ca-dir keeps its root");
    // No --ca-dir in directory mode: the state directory ($XDG_STATE_HOME/sextant/ca).
    let state = std::env::temp_dir()
        .join(format!("sextant-state-{}", std::process::id()))
        .join("sextant/ca/ca.crt");
    let first = {
        let s = start(&dir, None, &[]);
        served_root(&s, &state)
    };
    let second = {
        let s = start(&dir, None, &[]);
        served_root(&s, &state)
    };
    assert_eq!(first, second, "the state directory keeps its root");
    assert_eq!(first, std::fs::read_to_string(&state).expect("state root"));
    // Where no root can be stored (a read-only file system), Sextant still starts, with a
    // root of its own for as long as it runs, and says so.
    let serve = Serve::new();
    let log = dir.join("read-only.log");
    let _sextant = Process(
        serve
            .command(&sextant_bin())
            .env("XDG_STATE_HOME", "/proc/self/no-such-dir")
            .args(["--config-dir", dir.join("config").to_str().expect("utf-8")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("sextant serve starts"),
    );
    serve
        .wait_ready(Duration::from_secs(20))
        .expect("ready without a place for its root");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("cannot store a root CA there"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
