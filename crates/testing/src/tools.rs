//! The real tools the tests drive, and the repository they run in.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
    time::SystemTime,
};

/// A path under the repository root.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// A tool: `$VAR`, else `default` under the repository root. Under `CI=true` a missing tool
/// fails the test; elsewhere the test is skipped with a note.
pub fn tool(var: &str, default: &str) -> Option<PathBuf> {
    let found = std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| Some(repo(default)))
        .filter(|p| p.is_file());
    found.or_else(|| missing(&format!("{var} is required (make test installs it)")))
}

/// A tool the test cannot run without: a failure under `CI=true`, else a skip with a note.
fn missing<T>(why: &str) -> Option<T> {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "under CI=true: {why}"
    );
    eprintln!("warning: {why}; skipping");
    None
}

/// Whether `program` with `args` runs and succeeds (its output discarded).
fn runs(program: &Path, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Real Envoy (`$ENVOY` or `.venv/bin/envoy`).
pub fn envoy() -> Option<PathBuf> {
    tool("ENVOY", ".venv/bin/envoy")
}

/// Python with grpcio, grpcio-tools and cryptography (`$PYTHON` or `.venv/bin/python`, as
/// `make tools` installs them), for clients built by a toolchain other than Sextant's.
pub fn grpc_python() -> Option<PathBuf> {
    let python = tool("PYTHON", ".venv/bin/python")?;
    if runs(&python, &["-c", "import grpc, grpc_tools, cryptography"]) {
        Some(python)
    } else {
        missing(&format!(
            "{} lacks grpcio, grpcio-tools or cryptography (make tools installs them)",
            python.display()
        ))
    }
}

/// OpenSSL's command line (`$OPENSSL`, else `openssl` on the PATH).
pub fn openssl() -> Option<PathBuf> {
    let openssl =
        std::env::var_os("OPENSSL").map_or_else(|| PathBuf::from("openssl"), PathBuf::from);
    if runs(&openssl, &["version"]) {
        Some(openssl)
    } else {
        missing("openssl is required")
    }
}

/// Real kubectl 1.35 (`$KUBECTL` or `.tools/kubectl/kubectl`).
pub fn kubectl() -> Option<PathBuf> {
    tool("KUBECTL", ".tools/kubectl/kubectl")
}

/// Real helm 4 (`$HELM` or `.tools/helm/helm`).
pub fn helm() -> Option<PathBuf> {
    tool("HELM", ".tools/helm/helm")
}

/// The `sextant` binary of this build. Cargo gives a test only its own package's binaries, so
/// it is found beside the running executable (`target/<profile>/deps/..`), where building the
/// workspace's tests or benchmarks puts it (`crates/sextant` has tests of its own, which build
/// it). A binary older than a source file of the workspace's crates is refused: building one
/// package's tests does not rebuild it. `$SEXTANT_BIN`, when set, is used unchecked.
pub fn sextant_bin() -> PathBuf {
    static CHECKED: OnceLock<PathBuf> = OnceLock::new();
    CHECKED.get_or_init(find_sextant_bin).clone()
}

fn find_sextant_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SEXTANT_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the running executable's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test and bench executables live in target/<profile>/deps");
    let bin = dir.join(format!("sextant{}", std::env::consts::EXE_SUFFIX));
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} not found: build the workspace (`make test`, or `cargo nextest run --workspace`)",
                bin.display()
            )
        });
    if let Some(newer) = newest_source(&repo("crates")).filter(|(t, _)| *t > built) {
        panic!(
            "{} is older than {}: build the workspace (`make test`, or `cargo nextest run --workspace`)",
            bin.display(),
            newer.1.display()
        );
    }
    bin
}

/// The most recently modified `.rs` file in a `src` directory under `dir`, and when.
fn newest_source(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.components().any(|c| c.as_os_str() == "src")
                && let Ok(t) = meta.modified()
                && newest.as_ref().is_none_or(|(n, _)| t > *n)
            {
                newest = Some((t, path));
            }
        }
    }
    newest
}

/// Issues a workload certificate for `spiffe://trust_domain/ns/namespace/sa/service_account`
/// from the CA in `ca_dir` into `out_dir` (`cert-chain.pem`, `key.pem`, `root-cert.pem`), with
/// `sextant ca issue` as a user runs it.
pub fn issue_certificate(
    ca_dir: &Path,
    out_dir: &Path,
    trust_domain: &str,
    namespace: &str,
    service_account: &str,
) {
    let path = |p: &Path| p.to_str().expect("a UTF-8 path").to_owned();
    crate::run(std::process::Command::new(sextant_bin()).args([
        "ca",
        "issue",
        "--ca-dir",
        &path(ca_dir),
        "--trust-domain",
        trust_domain,
        "--namespace",
        namespace,
        "--service-account",
        service_account,
        "--out-dir",
        &path(out_dir),
    ]));
}

/// An operator's plug-in CA made with `openssl` as Istio's instructions make one: a P-256 root
/// and an intermediate for the mesh, written into `dir` in Istio's `cacerts` layout
/// (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`); the root's key and the
/// scratch files go to `dir/../operator`, outside the layout.
pub fn plugin_ca(openssl: &Path, dir: &Path) {
    let scratch = dir.join("../operator");
    std::fs::create_dir_all(dir).expect("cacerts dir");
    std::fs::create_dir_all(&scratch).expect("operator dir");
    let o = |args: &[&str]| {
        let out = std::process::Command::new(openssl)
            .current_dir(&scratch)
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let key = |out: &str| {
        o(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            out,
        ]);
    };
    key("root-key.pem");
    o(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "root-key.pem",
        "-subj",
        "/O=Operator/CN=Operator Root CA",
        "-days",
        "3650",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        "root-cert.pem",
    ]);
    key("ca-key.pem");
    o(&[
        "req",
        "-new",
        "-key",
        "ca-key.pem",
        "-subj",
        "/O=Operator/CN=Mesh Intermediate CA",
        "-out",
        "ca.csr",
    ]);
    std::fs::write(
        scratch.join("ext.cnf"),
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .expect("extensions");
    o(&[
        "x509",
        "-req",
        "-in",
        "ca.csr",
        "-CA",
        "root-cert.pem",
        "-CAkey",
        "root-key.pem",
        "-CAcreateserial",
        "-days",
        "730",
        "-extfile",
        "ext.cnf",
        "-out",
        "ca-cert.pem",
    ]);
    let read = |f: &str| std::fs::read_to_string(scratch.join(f)).expect("openssl's output");
    for f in ["ca-cert.pem", "ca-key.pem", "root-cert.pem"] {
        std::fs::write(dir.join(f), read(f)).expect("cacerts file");
    }
    std::fs::write(
        dir.join("cert-chain.pem"),
        format!("{}{}", read("ca-cert.pem"), read("root-cert.pem")),
    )
    .expect("cert-chain.pem");
}

/// Certificates for a gateway made with `openssl` as Istio's secure-ingress instructions make
/// them, in `dir`: a CA `example.com` (`ca.crt`, `ca.key`), and for each `(name, san)` a
/// certificate `NAME.crt` with key `NAME.key` signed by it, carrying the DNS name `san`
/// (a server's host, or a client's name). Serials are random, so a certificate made again
/// under the same name differs.
pub fn example_certificates(openssl: &Path, dir: &Path, leaves: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).expect("certificates dir");
    let o = |args: &[&str]| {
        let out = std::process::Command::new(openssl)
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    if !dir.join("ca.crt").exists() {
        let mut args = vec!["req", "-x509", "-sha256", "-days", "365"];
        args.extend(ec);
        args.extend([
            "-subj",
            "/O=example Inc./CN=example.com",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ]);
        o(&args);
    }
    for (name, san) in leaves {
        let (key, csr, crt, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        let mut args = vec!["req", "-out", &csr];
        args.extend(ec);
        let subject = format!("/CN={san}/O={name} organization");
        args.extend(["-keyout", &key, "-subj", &subject]);
        o(&args);
        std::fs::write(
            dir.join(&ext),
            format!("subjectAltName=DNS:{san}\nbasicConstraints=CA:FALSE\n"),
        )
        .expect("extensions");
        o(&[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "365",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &random_serial(),
            "-in",
            &csr,
            "-extfile",
            &ext,
            "-out",
            &crt,
        ]);
    }
}

fn random_serial() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (h.finish() >> 1).to_string()
}
