//! The real tools the tests drive, and the repository they run in.

use std::path::{Path, PathBuf};

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
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{var} is required under CI=true (make test installs it)"
        );
        eprintln!("warning: {var} not found; skipping");
    }
    found
}

/// Real Envoy (`$ENVOY` or `.venv/bin/envoy`).
pub fn envoy() -> Option<PathBuf> {
    tool("ENVOY", ".venv/bin/envoy")
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
/// it).
pub fn sextant_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test and bench executables live in target/<profile>/deps");
    let bin = dir.join(format!("sextant{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} not found: build the workspace (`make test`, or `cargo nextest run --workspace`)",
        bin.display()
    );
    bin
}
