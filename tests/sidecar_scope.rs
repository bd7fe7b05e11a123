//! A Sidecar resource limiting a namespace's egress, with real Envoy 1.40: the client
//! sidecar in `team-a` sees every service until its namespace's Sidecar imports only `./*`
//! and `team-b/*` with `REGISTRY_ONLY`; then its configuration drops to those hosts, traffic
//! to `team-b` still flows, traffic to `team-c` gets the outbound policy's 502, and a
//! VirtualService edited in `team-c` pushes nothing to it (Sextant's push counters), while one
//! in `team-b` does.
//!
//! Addresses: the client sidecar binds `127.0.88.10`; the backends of `b-svc` and `c-svc` are
//! `127.0.88.20` and `127.0.88.30`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use sextant_testing::{
    Backend, Envoy, Process, Serve, envoy, http_get, metric, request, try_wait_for,
};

const MESH: &str = r#"apiVersion: v1
kind: Service
metadata: {name: b-svc, namespace: team-b}
spec:
  clusterIP: 10.96.88.20
  ports: [{name: http, port: 9080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: b-svc-1, namespace: team-b, labels: {kubernetes.io/service-name: b-svc}}
addressType: IPv4
ports: [{name: http, port: 9080}]
endpoints:
- addresses: ['127.0.88.20']
---
apiVersion: v1
kind: Service
metadata: {name: c-svc, namespace: team-c}
spec:
  clusterIP: 10.96.88.30
  ports: [{name: http, port: 9080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: c-svc-1, namespace: team-c, labels: {kubernetes.io/service-name: c-svc}}
addressType: IPv4
ports: [{name: http, port: 9080}]
endpoints:
- addresses: ['127.0.88.30']
"#;

const SIDECAR: &str = r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: team-a}
spec:
  egress:
  - hosts: ["./*", "team-b/*"]
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
"#;

/// A VirtualService for `host` in `namespace` with a `x-edit` response header, so that each
/// edit changes its routes.
fn virtual_service(namespace: &str, host: &str, edit: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {host}, namespace: {namespace}}}\nspec:\n  hosts: [{host}]\n  http:\n  - headers:\n      response:\n        set: {{x-edit: '{edit}'}}\n    route:\n    - destination: {{host: {host}}}\n"
    )
}

struct Scope {
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    serve: Serve,
    client: Envoy,
    _backends: Vec<Backend>,
    _sextant: Process,
}

impl Scope {
    fn get(&self, host: &str) -> Option<u16> {
        let at: SocketAddr = "127.0.88.10:9080".parse().expect("address");
        request(at, host, "/", &[]).map(|(s, _, _)| s)
    }

    fn clusters(&self) -> String {
        http_get(self.client.admin, "/clusters").unwrap_or_default()
    }

    fn wait(&self, step: &str, mut f: impl FnMut() -> bool) {
        if let Err(e) = try_wait_for(step, Duration::from_secs(30), || f().then_some(())) {
            panic!(
                "{e}\nsextant log:\n{}\nclient log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default(),
                std::fs::read_to_string(&self.client.log).unwrap_or_default(),
            );
        }
    }

    /// Sextant's count of responses sent, all types.
    fn pushes(&self) -> f64 {
        let text = http_get(self.serve.admin_addr(), "/metrics").unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("sextant_xds_pushes_total"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum()
    }

    fn snapshots(&self) -> f64 {
        metric(self.serve.admin_addr(), "sextant_snapshots_total").unwrap_or(0.0)
    }

    /// Writes `file` and waits until Sextant has published it and every stream has had its
    /// chance to push (a second after the snapshot).
    fn publish(&self, file: &str, text: &str) {
        let before = self.snapshots();
        std::fs::write(self.config.join(file), text).expect("write");
        self.wait("the snapshot", || self.snapshots() > before);
        std::thread::sleep(Duration::from_secs(1));
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_sidecar_limits_what_its_proxies_get_and_what_reaches_them() {
    let Some(envoy) = envoy() else { return };
    let dir = std::env::temp_dir().join(format!("sextant-sidecar-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = dir.join("config");
    std::fs::create_dir_all(&config).expect("temp dir");
    std::fs::write(config.join("mesh.yaml"), MESH).expect("mesh");
    let log = dir.join("sextant.log");
    let serve = Serve::new();
    let sextant = serve.start_dir(&config, &log, &[]);
    let backends = vec![
        Backend::start("127.0.88.20:9080", "b").expect("backend b"),
        Backend::start("127.0.88.30:9080", "c").expect("backend c"),
    ];
    let client = Envoy::start(
        &envoy,
        &dir,
        "sidecar~127.0.88.10~client-0.team-a~team-a.svc.cluster.local",
        serve.xds,
        "127.0.88.10",
        false,
        88,
    );
    let scope = Scope {
        dir,
        config,
        log,
        serve,
        client,
        _backends: backends,
        _sextant: sextant,
    };

    // No Sidecar: every service.
    scope.wait("both services without a Sidecar", || {
        scope.get("b-svc.team-b") == Some(200) && scope.get("c-svc.team-c") == Some(200)
    });
    assert!(
        scope
            .clusters()
            .contains("outbound|9080||c-svc.team-c.svc.cluster.local")
    );

    // The Sidecar: team-c's cluster is gone, its traffic refused; team-b's still flows.
    scope.publish("sidecar.yaml", SIDECAR);
    scope.wait("the Sidecar's scope", || {
        let clusters = scope.clusters();
        clusters.contains("outbound|9080||b-svc.team-b.svc.cluster.local")
            && !clusters.contains("c-svc.team-c")
    });
    assert_eq!(scope.get("b-svc.team-b"), Some(200));
    assert_eq!(
        scope.get("c-svc.team-c"),
        Some(502),
        "REGISTRY_ONLY refuses hosts outside the Sidecar's imports"
    );

    // A VirtualService in team-c: nothing is pushed to the client.
    let before = scope.pushes();
    scope.publish("vs-c.yaml", &virtual_service("team-c", "c-svc", 1));
    scope.publish("vs-c.yaml", &virtual_service("team-c", "c-svc", 2));
    assert_eq!(
        scope.pushes(),
        before,
        "changes outside the Sidecar's imports pushed something"
    );

    // One in team-b reaches it.
    scope.publish("vs-b.yaml", &virtual_service("team-b", "b-svc", 1));
    assert!(
        scope.pushes() > before,
        "a change the Sidecar imports pushed nothing"
    );
    scope.wait("team-b's VirtualService applied", || {
        request(
            "127.0.88.10:9080".parse().expect("address"),
            "b-svc.team-b",
            "/",
            &[],
        )
        .is_some_and(|(s, _, head)| s == 200 && head.contains("x-edit: 1"))
    });
}
