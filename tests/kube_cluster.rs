//! The test API server for the end-to-end tests on the Kubernetes path, and kubectl against
//! it. Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

/// The test API server on its own runtime: stopping it drops every connection, as a real API
/// server going away would.
pub struct Cluster {
    pub addr: SocketAddr,
    dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Cluster {
    pub fn start(dir: &Path, port: u16) -> Cluster {
        Cluster::with_tokens(dir, port, BTreeMap::new())
    }

    /// With bearer tokens that TokenReview accepts (token → user name).
    pub fn with_tokens(dir: &Path, port: u16, tokens: BTreeMap<String, String>) -> Cluster {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let options = sextant_testapi::Options {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            data_dir: Some(dir.join("data")),
            kubeconfig: Some(dir.join("kubeconfig")),
            tokens,
            ..Default::default()
        };
        std::fs::create_dir_all(dir.join("data")).expect("data dir");
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let handle = sextant_testapi::start(options)
                    .await
                    .expect("test API server");
                let _ = ready_tx.send(handle.addr);
                let _ = stopped.await;
            });
            // Dropping the runtime ends every connection task.
        });
        let addr = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the test API server starts");
        Cluster {
            addr,
            dir: dir.to_owned(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// `sextant serve` watching this cluster through its kubeconfig, with `extra` flags and
    /// its log in `log`, once ready (else the test fails, showing the log).
    pub fn serve(
        &self,
        serve: &sextant_testing::Serve,
        log: &Path,
        extra: &[&str],
    ) -> sextant_testing::Process {
        let process = sextant_testing::Process(
            serve
                .command(&sextant_testing::sextant_bin())
                .env("KUBECONFIG", self.kubeconfig())
                .args(["--debounce-after-ms", "50"])
                .args(extra)
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(log).expect("log file"))
                .spawn()
                .expect("sextant serve starts"),
        );
        if let Err(e) = serve.wait_ready(Duration::from_secs(30)) {
            panic!(
                "{e}\nsextant's log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        process
    }

    pub fn kubectl_command(&self, kubectl: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(kubectl);
        c.env("KUBECONFIG", self.kubeconfig())
            .env("HOME", &self.dir)
            .args(args);
        c
    }

    pub fn kubectl(&self, kubectl: &Path, args: &[&str]) -> String {
        sextant_testing::run(&mut self.kubectl_command(kubectl, args))
    }

    /// Sextant's root as a user fetches it: `ca.crt` of the Secret `sextant-ca`, PEM.
    pub fn sextant_root(&self, kubectl: &Path) -> String {
        use base64::Engine;
        let encoded = self.kubectl(
            kubectl,
            &[
                "get",
                "secret",
                "sextant-ca",
                "-o",
                "jsonpath={.data.ca\\.crt}",
            ],
        );
        let pem = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .expect("base64");
        String::from_utf8(pem).expect("PEM")
    }

    /// Runs kubectl expecting it to fail; returns what it printed on stderr.
    pub fn kubectl_fails(&self, kubectl: &Path, args: &[&str]) -> String {
        sextant_testing::run_fails(&mut self.kubectl_command(kubectl, args))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The chart's MutatingWebhookConfiguration for sidecar injection, as `helm template` renders
/// it with the defaults, each webhook pointed at `url` instead of the chart's Service (the
/// test API server has no cluster network to reach a Service through), as JSON.
pub fn chart_injector_config(helm: &Path, url: &str) -> String {
    let rendered = sextant_testing::run(
        Command::new(helm)
            .args(["template", "sextant"])
            .arg(sextant_testing::repo("charts/sextant"))
            .args(["--show-only", "templates/injector.yaml"]),
    );
    let docs = sextant_index::manifest::parse_documents(&rendered).expect("the chart's YAML");
    let mut config = docs
        .into_iter()
        .map(|d| d.value)
        .find(|v| v["kind"] == "MutatingWebhookConfiguration")
        .expect("the chart renders the injector's configuration");
    for hook in config["webhooks"].as_array_mut().into_iter().flatten() {
        hook["clientConfig"] = serde_json::json!({ "url": url });
    }
    config.to_string()
}
