//! Proxyless gRPC: Python's grpcio, with an xDS bootstrap from `sextant bootstrap --grpc`,
//! calls a gRPC service by its `xds:///` name and follows VirtualService routing with no
//! Envoy in between: a weighted split and a header route between two versions.
//!
//! Addresses: the client is `127.0.87.10`; the service `echo` has v1 on `127.0.87.21` and
//! v2 on `127.0.87.22`, port 9090.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use sextant_testing::{Process, Serve, grpc_python, repo, try_wait_for};

const MESH: &str = r#"apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  clusterIP: 10.96.87.20
  selector: {app: echo}
  ports: [{name: grpc, port: 9090}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-1, namespace: default, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{name: grpc, port: 9090}]
endpoints:
- addresses: ['127.0.87.21']
  targetRef: {kind: Pod, name: echo-v1-0, namespace: default}
- addresses: ['127.0.87.22']
  targetRef: {kind: Pod, name: echo-v2-0, namespace: default}
---
apiVersion: v1
kind: Pod
metadata: {name: echo-v1-0, namespace: default, labels: {app: echo, version: v1}}
spec: {containers: [{name: echo, image: x}]}
status: {podIP: '127.0.87.21'}
---
apiVersion: v1
kind: Pod
metadata: {name: echo-v2-0, namespace: default, labels: {app: echo, version: v2}}
spec: {containers: [{name: echo, image: x}]}
status: {podIP: '127.0.87.22'}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: default}
spec:
  host: echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

/// A VirtualService for `echo` with these `http` rules (YAML, indented under `http:`).
fn virtual_service(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: echo, namespace: default}}\nspec:\n  hosts: [echo]\n  http:\n{http}"
    )
}

/// What a run of the client saw: replies by backend, errors by code.
#[derive(Debug, Default)]
struct Calls {
    replies: BTreeMap<String, u64>,
    errors: BTreeMap<String, serde_json::Value>,
}

struct Fixture {
    dir: PathBuf,
    config: PathBuf,
    python: PathBuf,
    bootstrap: PathBuf,
    log: PathBuf,
    _servers: Vec<Process>,
    _sextant: Process,
}

impl Fixture {
    fn start(python: &Path) -> Fixture {
        let dir = std::env::temp_dir().join(format!("sextant-grpc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = dir.join("config");
        std::fs::create_dir_all(&config).expect("temp dir");
        std::fs::write(config.join("mesh.yaml"), MESH).expect("mesh");
        let log = dir.join("sextant.log");
        let serve = Serve::new();
        let sextant = serve.start_dir(&config, &log, &[]);
        let servers = [("127.0.87.21:9090", "v1"), ("127.0.87.22:9090", "v2")]
            .iter()
            .map(|(addr, name)| {
                let mut child = Command::new(python)
                    .arg(repo("tests/fixtures/grpc_xds.py"))
                    .args(["server", addr, name])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("python server starts");
                let mut line = String::new();
                BufReader::new(child.stdout.take().expect("stdout"))
                    .read_line(&mut line)
                    .expect("server output");
                assert_eq!(line.trim(), "ready", "the {name} server did not start");
                Process(child)
            })
            .collect();
        let bootstrap = dir.join("grpc-bootstrap.json");
        let json = sextant_testing::run(Command::new(sextant_testing::sextant_bin()).args([
            "bootstrap",
            "--grpc",
            "--node-id",
            "sidecar~127.0.87.10~client-0.default~default.svc.cluster.local",
            "--xds-address",
            &format!("127.0.0.1:{}", serve.xds),
            "--locality",
            "region-a/zone-a/",
        ]));
        let node: serde_json::Value = serde_json::from_str(&json).expect("JSON bootstrap");
        assert_eq!(
            node["node"]["locality"],
            serde_json::json!({"region": "region-a", "zone": "zone-a", "sub_zone": ""})
        );
        std::fs::write(&bootstrap, json).expect("bootstrap");
        Fixture {
            dir,
            config,
            python: python.to_owned(),
            bootstrap,
            log,
            _servers: servers,
            _sextant: sextant,
        }
    }

    /// `calls` calls to `xds:///target` from a new client, with `metadata`.
    fn run(&self, target: &str, calls: usize, metadata: &[&str]) -> Calls {
        let out = Command::new(&self.python)
            .arg(repo("tests/fixtures/grpc_xds.py"))
            .args(["client", &format!("xds:///{target}"), &calls.to_string()])
            .args(metadata)
            .env("GRPC_XDS_BOOTSTRAP", &self.bootstrap)
            .output()
            .expect("python client runs");
        assert!(
            out.status.success(),
            "client: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "client output {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let counts = |key: &str| -> BTreeMap<String, serde_json::Value> {
            v[key]
                .as_object()
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        };
        Calls {
            replies: counts("replies")
                .into_iter()
                .map(|(k, v)| (k, v.as_u64().unwrap_or_default()))
                .collect(),
            errors: counts("errors"),
        }
    }

    /// Waits until a client run over `target` sees what `ok` accepts.
    fn expect(&self, step: &str, target: &str, metadata: &[&str], ok: impl Fn(&Calls) -> bool) {
        let mut last = Calls::default();
        let got = try_wait_for(step, Duration::from_secs(30), || {
            last = self.run(target, 40, metadata);
            ok(&last).then_some(())
        });
        if let Err(e) = got {
            panic!(
                "{e}: last run {last:?}\nsextant log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn only(calls: &Calls, name: &str) -> bool {
    calls.errors.is_empty() && calls.replies.len() == 1 && calls.replies.contains_key(name)
}

#[test]
fn a_grpcio_client_follows_weighted_and_header_routes_over_xds() {
    let Some(python) = grpc_python() else { return };
    let fx = Fixture::start(&python);

    // No VirtualService: both versions, round robin, by the short name and the full one.
    for target in ["echo:9090", "echo.default.svc.cluster.local:9090"] {
        fx.expect("both versions", target, &[], |c| {
            c.errors.is_empty()
                && c.replies.get("v1") >= Some(&10)
                && c.replies.get("v2") >= Some(&10)
        });
    }

    // A weighted split, all to v2, then 80/20.
    std::fs::write(
        fx.config.join("vs.yaml"),
        virtual_service(
            "  - route:\n    - destination: {host: echo, subset: v1}\n      weight: 0\n    - destination: {host: echo, subset: v2}\n      weight: 100\n",
        ),
    )
    .expect("vs");
    fx.expect("all to v2", "echo:9090", &[], |c| only(c, "v2"));
    std::fs::write(
        fx.config.join("vs.yaml"),
        virtual_service(
            "  - route:\n    - destination: {host: echo, subset: v1}\n      weight: 80\n    - destination: {host: echo, subset: v2}\n      weight: 20\n",
        ),
    )
    .expect("vs");
    fx.expect("80/20", "echo:9090", &[], |c| {
        let (v1, v2) = (
            c.replies.get("v1").copied().unwrap_or(0),
            c.replies.get("v2").copied().unwrap_or(0),
        );
        c.errors.is_empty() && v1 + v2 == 40 && v1 >= 20 && v2 >= 1
    });

    // A header route: x-version: v2 to v2, everything else to v1.
    std::fs::write(
        fx.config.join("vs.yaml"),
        virtual_service(
            "  - match:\n    - headers:\n        x-version: {exact: v2}\n    route:\n    - destination: {host: echo, subset: v2}\n  - route:\n    - destination: {host: echo, subset: v1}\n",
        ),
    )
    .expect("vs");
    fx.expect("header to v2", "echo:9090", &["x-version=v2"], |c| {
        only(c, "v2")
    });
    fx.expect("no header to v1", "echo:9090", &[], |c| only(c, "v1"));
}
