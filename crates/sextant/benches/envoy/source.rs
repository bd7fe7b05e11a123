//! Where the mesh comes from, and how the benchmark's one VirtualService is changed: a
//! directory (`serve --config-dir`, the VirtualService in a file of its own, rewritten), or
//! the test API server (`sextant-testapi`, release build) holding the mesh, changed with real
//! `kubectl apply`.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use serde_json::Value;
use sextant_synthetic::{Shape, virtual_service};
use sextant_testing::{Process, Serve, sextant_bin};

use super::{create::create, proxies::now_ms};

/// Which source `sextant serve` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `serve --config-dir`.
    Dir,
    /// `serve` against the test API server, changed with `kubectl apply`.
    Kube,
}

impl Kind {
    /// How the tables name it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Dir => "directory",
            Kind::Kube => "kubectl",
        }
    }
}

/// One change as it was made.
pub struct Change {
    /// When it began (the file write, or kubectl's start), ms since the epoch.
    pub started_ms: u64,
    /// How long `kubectl apply` ran (ms), on the Kubernetes path.
    pub kubectl_ms: Option<f64>,
}

/// The mesh's source, with the changed VirtualService's service.
pub struct Source {
    /// Which one.
    pub kind: Kind,
    shape: Shape,
    changed: usize,
    /// The config directory, or the directory of the test API server's kubeconfig.
    dir: PathBuf,
    /// The file the changed VirtualService is written to.
    file: PathBuf,
    kubectl: Option<PathBuf>,
    testapi: Option<Process>,
}

impl Source {
    /// Writes the mesh into `work/config`: every object in `mesh.yaml` except the changed
    /// VirtualService, which has a file of its own.
    pub fn dir(work: &Path, shape: &Shape, changed: usize) -> Source {
        let dir = work.join("config");
        std::fs::create_dir_all(&dir).expect("config dir");
        let changed_vs = virtual_service(shape, changed, 90);
        let mut text = String::new();
        for object in sextant_synthetic::manifests(shape) {
            if object == changed_vs {
                continue;
            }
            text.push_str("---\n");
            text.push_str(&object.to_string());
            text.push('\n');
        }
        std::fs::write(dir.join("mesh.yaml"), text).expect("mesh written");
        let file = dir.join(format!("virtual-service-svc-{changed}.yaml"));
        std::fs::write(&file, changed_vs.to_string()).expect("VirtualService written");
        Source {
            kind: Kind::Dir,
            shape: *shape,
            changed,
            dir,
            file,
            kubectl: None,
            testapi: None,
        }
    }

    /// Starts the test API server (`testapi`, its kubeconfig in `work`) and creates Istio's
    /// CRDs, the namespaces and every object of the mesh through its HTTP API.
    pub fn kube(
        work: &Path,
        shape: &Shape,
        changed: usize,
        testapi: &Path,
        kubectl: &Path,
    ) -> Source {
        let kubeconfig = work.join("kubeconfig");
        let mut child = Command::new(testapi)
            .args(["--port", "0", "--kubeconfig"])
            .arg(&kubeconfig)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(work.join("testapi.log")).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", testapi.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the test API server's URL");
        let testapi = Process(child);
        let started = Instant::now();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let count = runtime.block_on(load(&kubeconfig, shape));
        println!(
            "test API server: {count} objects created in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let source = Source {
            kind: Kind::Kube,
            shape: *shape,
            changed,
            dir: work.to_owned(),
            file: work.join(format!("virtual-service-svc-{changed}.yaml")),
            kubectl: Some(kubectl.to_owned()),
            testapi: Some(testapi),
        };
        // kubectl's discovery cache filled, and the object given kubectl's last-applied
        // annotation, before anything is measured.
        source.change(90);
        source
    }

    /// The test API server's process id, on the Kubernetes path.
    pub fn testapi_pid(&self) -> Option<u32> {
        self.testapi.as_ref().map(|p| p.0.id())
    }

    /// `sextant serve` on `serve`'s ports reading this source, with the default debounce.
    pub fn serve_command(&self, serve: &Serve) -> Command {
        let mut c = serve.command(&sextant_bin());
        match self.kind {
            Kind::Dir => {
                c.arg("--config-dir").arg(&self.dir);
            }
            Kind::Kube => {
                c.env("KUBECONFIG", self.dir.join("kubeconfig"));
            }
        }
        c
    }

    /// Sets the changed VirtualService's split to `weight_v1` percent to v1: the file
    /// rewritten, or `kubectl apply` of it.
    pub fn change(&self, weight_v1: u32) -> Change {
        let text = virtual_service(&self.shape, self.changed, weight_v1).to_string();
        match (self.kind, &self.kubectl) {
            (Kind::Kube, Some(kubectl)) => {
                std::fs::write(&self.file, text).expect("VirtualService written");
                let started_ms = now_ms();
                let started = Instant::now();
                sextant_testing::run(
                    Command::new(kubectl)
                        .env("KUBECONFIG", self.dir.join("kubeconfig"))
                        .env("HOME", &self.dir)
                        .arg("apply")
                        .arg("-f")
                        .arg(&self.file),
                );
                Change {
                    started_ms,
                    kubectl_ms: Some(started.elapsed().as_secs_f64() * 1e3),
                }
            }
            _ => {
                let started_ms = now_ms();
                std::fs::write(&self.file, text).expect("VirtualService rewritten");
                Change {
                    started_ms,
                    kubectl_ms: None,
                }
            }
        }
    }
}

/// Creates the CRDs, then the namespaces, then the mesh; how many objects in all.
async fn load(kubeconfig: &Path, shape: &Shape) -> usize {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig"),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    let client = kube::Client::try_from(config).expect("client");
    let mut crds = Vec::new();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crds");
    for entry in std::fs::read_dir(dir).expect("crds/") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        let docs = sextant_index::manifest::parse_documents(&text).expect("YAML");
        crds.extend(docs.into_iter().map(|d| d.value));
    }
    let mesh = sextant_synthetic::manifests(shape);
    let namespaces: BTreeSet<String> = mesh
        .iter()
        .filter_map(|o| o["metadata"]["namespace"].as_str().map(str::to_owned))
        .filter(|ns| ns != "default")
        .collect();
    let namespaces: Vec<Value> = namespaces
        .into_iter()
        .map(|ns| serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
        .collect();
    let count = crds.len() + namespaces.len() + mesh.len();
    for batch in [crds, namespaces, mesh] {
        create(&client, batch).await;
    }
    count
}
