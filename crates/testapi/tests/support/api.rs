//! The `sextant-testapi` binary with a data directory, and kubectl against it, shared by the
//! test binaries that include this file.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

/// The server binary with a data directory, and the kubeconfig it wrote.
pub struct Api {
    child: std::process::Child,
    /// The kubeconfig the server wrote.
    pub kubeconfig: PathBuf,
}

impl Api {
    pub fn start(dir: &Path) -> Api {
        let kubeconfig = dir.join("kubeconfig");
        let mut child = Command::new(env!("CARGO_BIN_EXE_sextant-testapi"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start sextant-testapi");
        // It prints its URL once the kubeconfig is written.
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("read the server's first line");
        assert!(
            line.starts_with("http://"),
            "unexpected first line {line:?}"
        );
        Api { child, kubeconfig }
    }

    pub fn kubectl(&self, kubectl: &Path, args: &[&str]) -> Output {
        Command::new(kubectl)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.kubeconfig.parent().expect("dir"))
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// Runs kubectl and returns stdout; fails the test with stderr when kubectl fails.
    pub fn ok(&self, kubectl: &Path, args: &[&str]) -> String {
        let out = self.kubectl(kubectl, args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
