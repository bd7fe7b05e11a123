//! Mutual TLS between two sidecars configured only by Sextant, with real Envoy 1.40: a client
//! sidecar and a server sidecar in front of its backend, each holding a workload certificate
//! proven on the secure port (15012). The test moves through PeerAuthentication modes and a
//! DestinationRule by editing the configuration directory, and after each change checks what
//! the backend sees through the client sidecar (the peer's SPIFFE identity in
//! `x-forwarded-client-cert`, or none over plaintext) and what a plaintext client that talks
//! to the server sidecar directly gets.
//!
//! Addresses: the network `127.0.80.0/24`. The client sidecar is `.10`. The server workload
//! is `.20`: its sidecar's inbound listener binds there, its outbound listeners bind `.21`,
//! and its application listens on `.22` (`SEXTANT_APP_ADDRESS`, as there is no iptables).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use sextant_testing::{Backend, Envoy, Process, Serve, envoy, http_get, request, try_wait_for};

const NET: u8 = 80;

fn ip(host: u8) -> String {
    format!("127.0.{NET}.{host}")
}

/// The mesh: the server Service and its endpoint, and both Pods (the server's with a sidecar).
fn mesh() -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: server, namespace: default}}\nspec:\n  clusterIP: 10.96.{NET}.20\n  selector: {{app: server}}\n  ports: [{{name: http, port: 9080}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: server-1, namespace: default, labels: {{kubernetes.io/service-name: server}}}}\naddressType: IPv4\nports: [{{name: http, port: 9080}}]\nendpoints:\n- addresses: ['{server}']\n  targetRef: {{kind: Pod, name: server-0, namespace: default}}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: server-0\n  namespace: default\n  labels: {{app: server, security.istio.io/tlsMode: istio}}\nspec: {{serviceAccountName: server, containers: [{{name: app, image: x}}]}}\nstatus: {{podIP: '{server}'}}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: client-0\n  namespace: default\n  labels: {{app: client, security.istio.io/tlsMode: istio}}\nspec: {{serviceAccountName: client, containers: [{{name: app, image: x}}]}}\nstatus: {{podIP: '{client}'}}\n",
        server = ip(20),
        client = ip(10),
    )
}

/// A PeerAuthentication (`spec` in flow style).
fn peer_authentication(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: default}}\nspec: {spec}\n"
    )
}

/// What a request saw: its status, and the `x-forwarded-client-cert` the backend received.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Served; the XFCC header the backend got, if any.
    Served(Option<String>),
    /// Answered with this status by a proxy (the backend was not reached).
    Status(u16),
    /// The connection was refused or closed without an answer.
    Refused,
}

fn outcome(addr: SocketAddr, headers: &[(&str, &str)]) -> Outcome {
    match request(addr, "server", "/", headers) {
        None => Outcome::Refused,
        Some((200, body, head)) if body == "server" => Outcome::Served(
            head.lines()
                .find_map(|l| l.strip_prefix("x-saw-xfcc: "))
                .map(str::to_owned),
        ),
        Some((status, _, _)) => Outcome::Status(status),
    }
}

/// Whether `xfcc` names the client sidecar as the peer, verified by the server sidecar.
fn names_the_client(xfcc: &Option<String>) -> bool {
    xfcc.as_deref().is_some_and(|x| {
        x.starts_with("By=spiffe://cluster.local/ns/default/sa/server;Hash=")
            && x.ends_with(";Subject=\"\";URI=spiffe://cluster.local/ns/default/sa/client")
    })
}

struct Mesh {
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    admin: SocketAddr,
    client: Envoy,
    server: Envoy,
    /// The server sidecar's inbound listener, where a plaintext client talks to it directly.
    inbound: SocketAddr,
    _backend: Backend,
    _sextant: Process,
}

impl Mesh {
    fn start(envoy: &Path) -> Mesh {
        let dir = std::env::temp_dir().join(format!("sextant-mtls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = dir.join("config");
        std::fs::create_dir_all(&config).expect("temp dir");
        std::fs::write(config.join("mesh.yaml"), mesh()).expect("mesh");
        let ca = dir.join("ca");
        sextant_testing::run(
            std::process::Command::new(sextant_testing::sextant_bin()).args([
                "ca",
                "init",
                "--dir",
                ca.to_str().expect("utf-8"),
            ]),
        );
        let serve = Serve::new();
        let log = dir.join("sextant.log");
        let sextant = Process(
            serve
                .command(&sextant_testing::sextant_bin())
                .args(["--config-dir", config.to_str().expect("utf-8")])
                .args(["--ca-dir", ca.to_str().expect("utf-8")])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("sextant serve starts"),
        );
        serve.wait_ready(Duration::from_secs(20)).expect("ready");
        let backend = Backend::start(&format!("{}:9080", ip(22)), "server").expect("backend");
        let sidecar = |name: &str, host: u8, bind: u8, meta: &[String], delta: bool| {
            let certs = dir.join(name);
            sextant_testing::issue_certificate(&ca, &certs, "cluster.local", "default", name);
            let file = |f: &str| certs.join(f).to_str().expect("utf-8").to_owned();
            let mut args = vec![
                "--xds-address".to_owned(),
                format!("127.0.0.1:{}", serve.secure_xds),
                "--xds-root-cert".into(),
                file("root-cert.pem"),
                "--xds-cert".into(),
                file("cert-chain.pem"),
                "--xds-key".into(),
                file("key.pem"),
            ];
            if delta {
                args.push("--delta".into());
            }
            for m in meta {
                args.extend(["--meta".to_owned(), m.clone()]);
            }
            let node = format!(
                "sidecar~{}~{name}-0.default~default.svc.cluster.local",
                ip(host)
            );
            Envoy::launch(envoy, &dir, &node, &ip(bind), host, &args)
        };
        let client = sidecar("client", 10, 10, &[], true);
        let server = sidecar(
            "server",
            20,
            21,
            &[format!("SEXTANT_APP_ADDRESS={}", ip(22))],
            false,
        );
        Mesh {
            inbound: format!("{}:9080", ip(20)).parse().expect("address"),
            dir,
            config,
            log,
            admin: serve.admin_addr(),
            client,
            server,
            _backend: backend,
            _sextant: sextant,
        }
    }

    /// Replaces the policy files (everything but the mesh) with `files`.
    fn configure(&self, files: &[(&str, String)]) {
        for entry in std::fs::read_dir(&self.config)
            .expect("config dir")
            .flatten()
        {
            if entry.file_name() != "mesh.yaml" {
                std::fs::remove_file(entry.path()).expect("remove policy");
            }
        }
        for (name, text) in files {
            std::fs::write(self.config.join(name), text).expect("write policy");
        }
    }

    /// Waits until requests through the client sidecar and straight to the server sidecar
    /// see what `expected` accepts, for `step`.
    fn expect(
        &self,
        step: &str,
        via_client: impl Fn(&Outcome) -> bool,
        direct: impl Fn(&Outcome) -> bool,
    ) {
        let got = try_wait_for(step, Duration::from_secs(30), || {
            let a = outcome(self.client.listener, &[]);
            let b = outcome(self.inbound, &[]);
            (via_client(&a) && direct(&b)).then_some(())
        });
        if let Err(e) = got {
            panic!(
                "{e}\nthrough the client: {:?}\nstraight to the server: {:?}\nsextant log:\n{}\nclient envoy log:\n{}\nserver envoy log:\n{}\nserver listeners: {:?}",
                outcome(self.client.listener, &[]),
                outcome(self.inbound, &[]),
                std::fs::read_to_string(&self.log).unwrap_or_default(),
                std::fs::read_to_string(&self.client.log).unwrap_or_default(),
                std::fs::read_to_string(&self.server.log).unwrap_or_default(),
                http_get(self.server.admin, "/config_dump?resource=dynamic_listeners"),
            );
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn served_with_client_identity(o: &Outcome) -> bool {
    matches!(o, Outcome::Served(xfcc) if names_the_client(xfcc))
}

fn served_plaintext(o: &Outcome) -> bool {
    *o == Outcome::Served(None)
}

fn refused(o: &Outcome) -> bool {
    *o == Outcome::Refused
}

#[test]
fn sidecars_speak_mutual_tls_as_peer_authentication_and_destination_rules_say() {
    let Some(envoy) = envoy() else { return };
    let mesh = Mesh::start(&envoy);

    // 1. No policy: PERMISSIVE. Through the client sidecar the request travels over mutual
    //    TLS (auto mTLS: the server Pod carries a sidecar), and the backend sees the client's
    //    SPIFFE identity; a plaintext client is served too, without one.
    mesh.expect(
        "PERMISSIVE: mTLS from the sidecar, plaintext straight",
        served_with_client_identity,
        served_plaintext,
    );
    // A plaintext client cannot forge the header: Envoy drops it from plaintext connections.
    assert_eq!(
        outcome(
            mesh.inbound,
            &[(
                "x-forwarded-client-cert",
                "URI=spiffe://cluster.local/ns/default/sa/admin"
            )]
        ),
        Outcome::Served(None)
    );
    assert!(
        sextant_testing::syncz(
            mesh.admin,
            "sidecar~127.0.80.10~client-0.default~default.svc.cluster.local"
        )
        .is_some_and(|e| e["identity"] == "spiffe://cluster.local/ns/default/sa/client")
    );

    // 2. STRICT for the namespace: the plaintext client is refused, the sidecar still served.
    let strict = peer_authentication("default", "{mtls: {mode: STRICT}}");
    mesh.configure(&[("pa.yaml", strict.clone())]);
    mesh.expect(
        "STRICT: plaintext refused",
        served_with_client_identity,
        refused,
    );

    // 3. A DestinationRule with `tls.mode: DISABLE` turns auto mTLS off for the host: under
    //    STRICT the server now refuses the client sidecar's plaintext (the client's Envoy
    //    answers 503); under PERMISSIVE it is served, without an identity.
    let dr_disable = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: server, namespace: default}\nspec: {host: server, trafficPolicy: {tls: {mode: DISABLE}}}\n".to_owned();
    mesh.configure(&[("pa.yaml", strict.clone()), ("dr.yaml", dr_disable.clone())]);
    mesh.expect(
        "DestinationRule DISABLE under STRICT: refused",
        |o| *o == Outcome::Status(503),
        refused,
    );
    mesh.configure(&[
        (
            "pa.yaml",
            peer_authentication("default", "{mtls: {mode: PERMISSIVE}}"),
        ),
        ("dr.yaml", dr_disable),
    ]);
    mesh.expect(
        "DestinationRule DISABLE under PERMISSIVE: plaintext",
        served_plaintext,
        served_plaintext,
    );
    mesh.configure(&[]);
    mesh.expect(
        "no DestinationRule: auto mTLS again",
        served_with_client_identity,
        served_plaintext,
    );

    // 4. DISABLE for the namespace: the server takes plaintext only and the client, told by
    //    the namespace's policy, sends plaintext.
    mesh.configure(&[(
        "pa.yaml",
        peer_authentication("default", "{mtls: {mode: DISABLE}}"),
    )]);
    mesh.expect(
        "DISABLE: plaintext both ways",
        served_plaintext,
        served_plaintext,
    );

    // 5. Port level: the namespace is STRICT, and the server workload's own policy DISABLEs
    //    its port 9080. The port takes plaintext, and the client sidecar, seeing the
    //    endpoint's workload DISABLE it, sends plaintext too.
    mesh.configure(&[("pa.yaml", strict.clone())]);
    mesh.expect("STRICT again", served_with_client_identity, refused);
    mesh.configure(&[
        ("pa.yaml", strict),
        (
            "server.yaml",
            peer_authentication(
                "server",
                "{selector: {matchLabels: {app: server}}, portLevelMtls: {'9080': {mode: DISABLE}}}",
            ),
        ),
    ]);
    mesh.expect(
        "port 9080 DISABLEd by the workload's policy",
        served_plaintext,
        served_plaintext,
    );

    // 6. The workload's policy overrides the namespace's: STRICT for the server workload in
    //    a PERMISSIVE namespace.
    mesh.configure(&[
        (
            "pa.yaml",
            peer_authentication("default", "{mtls: {mode: PERMISSIVE}}"),
        ),
        (
            "server.yaml",
            peer_authentication(
                "server",
                "{selector: {matchLabels: {app: server}}, mtls: {mode: STRICT}}",
            ),
        ),
    ]);
    mesh.expect(
        "workload STRICT in a PERMISSIVE namespace",
        served_with_client_identity,
        refused,
    );
}
