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

/// The network of each test.
const NET: u8 = 80;
const RENEWAL_NET: u8 = 81;
const ROTATION_NET: u8 = 82;
const NO_OVERLAP_NET: u8 = 83;

fn ip(net: u8, host: u8) -> String {
    format!("127.0.{net}.{host}")
}

/// The mesh: the server Service and its endpoint, and both Pods (the server's with a sidecar).
fn mesh(net: u8) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: server, namespace: default}}\nspec:\n  clusterIP: 10.96.{net}.20\n  selector: {{app: server}}\n  ports: [{{name: http, port: 9080}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: server-1, namespace: default, labels: {{kubernetes.io/service-name: server}}}}\naddressType: IPv4\nports: [{{name: http, port: 9080}}]\nendpoints:\n- addresses: ['{server}']\n  targetRef: {{kind: Pod, name: server-0, namespace: default}}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: server-0\n  namespace: default\n  labels: {{app: server, security.istio.io/tlsMode: istio}}\nspec: {{serviceAccountName: server, containers: [{{name: app, image: x}}]}}\nstatus: {{podIP: '{server}'}}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: client-0\n  namespace: default\n  labels: {{app: client, security.istio.io/tlsMode: istio}}\nspec: {{serviceAccountName: client, containers: [{{name: app, image: x}}]}}\nstatus: {{podIP: '{client}'}}\n",
        server = ip(net, 20),
        client = ip(net, 10),
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
    /// The CA directory of each replica (one, or the client's and the server's).
    cas: Vec<PathBuf>,
    _backend: Backend,
    _sextants: Vec<Process>,
}

/// `sextant ca rotate` steps: on the CA, then on each replica's copy of it.
struct Rotation {
    shared: &'static [&'static str],
    client: &'static [&'static str],
    server: &'static [&'static str],
}

impl Mesh {
    /// The mesh on network `net`, `sextant serve` with `extra` flags.
    fn start(envoy: &Path, net: u8, extra: &[&str]) -> Mesh {
        Mesh::start_rotated(envoy, net, extra, None)
    }

    /// The mesh, and with `rotation` two replicas in the middle of a root rotation:
    /// `sextant ca rotate` steps taken on the CA, then more on the client's replica's copy
    /// and on the server's. Each sidecar is served by its replica.
    fn start_rotated(envoy: &Path, net: u8, extra: &[&str], rotation: Option<Rotation>) -> Mesh {
        let ip = |host: u8| ip(net, host);
        let dir = std::env::temp_dir().join(format!("sextant-mtls-{}-{net}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = dir.join("config");
        std::fs::create_dir_all(&config).expect("temp dir");
        std::fs::write(config.join("mesh.yaml"), mesh(net)).expect("mesh");
        let sextant = |args: &[&str]| {
            sextant_testing::run(
                std::process::Command::new(sextant_testing::sextant_bin()).args(args),
            )
        };
        let ca = dir.join("ca");
        sextant(&["ca", "init", "--dir", ca.to_str().expect("utf-8")]);
        let rotate = |ca: &Path, steps: &[&str]| {
            for step in steps {
                sextant(&[
                    "ca",
                    "rotate",
                    "--dir",
                    ca.to_str().expect("utf-8"),
                    "--step",
                    step,
                ]);
            }
        };
        let cas: Vec<PathBuf> = match &rotation {
            None => vec![ca.clone()],
            Some(r) => {
                rotate(&ca, r.shared);
                [("client", r.client), ("server", r.server)]
                    .iter()
                    .map(|(name, steps)| {
                        let copy = dir.join(format!("ca-{name}"));
                        std::fs::create_dir_all(&copy).expect("CA copy");
                        for f in std::fs::read_dir(&ca).expect("CA dir").flatten() {
                            std::fs::copy(f.path(), copy.join(f.file_name())).expect("copy");
                        }
                        rotate(&copy, steps);
                        copy
                    })
                    .collect()
            }
        };
        let log = dir.join("sextant.log");
        let replicas: Vec<(Serve, Process)> = cas
            .iter()
            .enumerate()
            .map(|(i, ca)| {
                let serve = Serve::new();
                let process = Process(
                    serve
                        .command(&sextant_testing::sextant_bin())
                        .args(["--config-dir", config.to_str().expect("utf-8")])
                        .args(["--ca-dir", ca.to_str().expect("utf-8")])
                        .args(extra)
                        .stdout(Stdio::null())
                        .stderr(
                            std::fs::File::create(log.with_extension(format!("{i}.log")))
                                .expect("log file"),
                        )
                        .spawn()
                        .expect("sextant serve starts"),
                );
                serve.wait_ready(Duration::from_secs(20)).expect("ready");
                (serve, process)
            })
            .collect();
        let backend = Backend::start(&format!("{}:9080", ip(22)), "server").expect("backend");
        let sidecar = |name: &str, host: u8, bind: u8, meta: &[String], delta: bool| {
            // The client on the first replica, the server on the last.
            let replica = if name == "client" {
                0
            } else {
                replicas.len() - 1
            };
            let certs = dir.join(name);
            sextant_testing::issue_certificate(
                &cas[replica],
                &certs,
                "cluster.local",
                "default",
                name,
            );
            let file = |f: &str| certs.join(f).to_str().expect("utf-8").to_owned();
            let mut args = vec![
                "--xds-address".to_owned(),
                format!("127.0.0.1:{}", replicas[replica].0.secure_xds),
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
            config,
            log: log.with_extension("0.log"),
            admin: replicas[0].0.admin_addr(),
            client,
            server,
            cas,
            dir,
            _backend: backend,
            _sextants: replicas.into_iter().map(|(_, p)| p).collect(),
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
    let mesh = Mesh::start(&envoy, NET, &[]);

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

/// The serial number and expiry (Unix seconds) of the workload certificate an Envoy holds for
/// `identity`, from its admin API's `/certs`. Its bootstrap's certificate for the secure xDS
/// port names the same identity but lasts a day: the SDS one is the one expiring first.
fn held_certificate(admin: SocketAddr, identity: &str) -> Option<(String, u64)> {
    let certs: serde_json::Value = serde_json::from_str(&http_get(admin, "/certs")?).ok()?;
    certs["certificates"]
        .as_array()?
        .iter()
        .flat_map(|c| c["cert_chain"].as_array().into_iter().flatten())
        .filter(|c| {
            c["subject_alt_names"]
                .as_array()
                .is_some_and(|sans| sans.iter().any(|s| s["uri"] == identity))
        })
        .filter_map(|c| {
            let expires = c["expiration_time"].as_str()?;
            Some((
                c["serial_number"].as_str()?.to_owned(),
                unix_seconds(expires)?,
            ))
        })
        .min_by_key(|(_, expires)| *expires)
}

/// `2026-12-04T14:00:00Z` as Unix seconds.
fn unix_seconds(rfc3339: &str) -> Option<u64> {
    let (date, time) = rfc3339.trim_end_matches('Z').split_once('T')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let t: Vec<i64> = time
        .split(['.', ':'])
        .take(3)
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let days = 365 * y + y / 4 - y / 100 + y / 400 + (153 * m + 2) / 5 + d[2] - 1 - 719_468;
    u64::try_from(days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]).ok()
}

#[test]
fn workload_certificates_renew_before_they_expire_and_traffic_keeps_flowing() {
    let Some(envoy) = envoy() else { return };
    // 16-second certificates, renewed at half their life; one request per upstream
    // connection, so that every request is a new mutual TLS handshake.
    let mesh = Mesh::start(&envoy, RENEWAL_NET, &["--workload-cert-ttl-seconds", "16"]);
    mesh.configure(&[(
        "dr.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: server, namespace: default}\nspec: {host: server, trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 1}}}}\n".to_owned(),
    )]);
    mesh.expect(
        "mTLS with short-lived certificates",
        served_with_client_identity,
        served_plaintext,
    );
    let client = "spiffe://cluster.local/ns/default/sa/client";
    let server = "spiffe://cluster.local/ns/default/sa/server";
    let mut seen: Vec<(String, u64)> = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(40) {
        let got = outcome(mesh.client.listener, &[]);
        assert!(
            served_with_client_identity(&got),
            "after {:?}: {got:?}",
            started.elapsed()
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        for (admin, id) in [(mesh.client.admin, client), (mesh.server.admin, server)] {
            let held = held_certificate(admin, id).expect("a workload certificate");
            assert!(
                held.1 > now,
                "{id}'s certificate {} is expired at {now}",
                held.0
            );
            if !seen.contains(&held) {
                seen.push(held);
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // 40 s of 16 s certificates renewed at half life: each proxy's turned over at least
    // twice (three certificates each, or more).
    assert!(seen.len() >= 6, "certificates held over 40 s: {seen:?}");
}

/// The issuer's common name of the workload certificate Envoy holds (SDS `default`).
fn default_issuer(admin: SocketAddr) -> Option<String> {
    use base64::Engine;
    let dump: serde_json::Value = serde_json::from_str(&http_get(
        admin,
        "/config_dump?resource=dynamic_active_secrets",
    )?)
    .ok()?;
    let default = dump["configs"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "default")?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(default["secret"]["tls_certificate"]["certificate_chain"]["inline_bytes"].as_str()?)
        .ok()?;
    common_name_of_issuer(&pem)
}

/// The issuer CN of the first certificate of `pem`.
fn common_name_of_issuer(pem: &[u8]) -> Option<String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let der = CertificateDer::from_pem_slice(pem).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    cert.issuer()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()
        .map(str::to_owned)
}

/// The subject CN of a root certificate file.
fn common_name(path: &Path) -> String {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let der = CertificateDer::from_pem_file(path).expect("a certificate");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("DER");
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .expect("a common name")
        .to_owned()
}

#[test]
fn proxies_on_the_old_and_the_new_root_keep_talking_through_a_rotation() {
    let Some(envoy) = envoy() else { return };
    // Two replicas mid-rotation: both trust the old and the new root; the client's replica
    // still signs with the old one (step `trust`), the server's with the new one (`sign`).
    let mesh = Mesh::start_rotated(
        &envoy,
        ROTATION_NET,
        &[],
        Some(Rotation {
            shared: &["trust"],
            client: &[],
            server: &["sign"],
        }),
    );
    mesh.expect(
        "mutual TLS across the rotation",
        served_with_client_identity,
        served_plaintext,
    );
    let old = common_name(&mesh.cas[0].join("ca.crt"));
    let new = common_name(&mesh.cas[1].join("ca.crt"));
    assert_ne!(old, new);
    assert_eq!(
        default_issuer(mesh.client.admin),
        Some(old),
        "the client holds an old-root certificate"
    );
    assert_eq!(
        default_issuer(mesh.server.admin),
        Some(new),
        "the server holds a new-root certificate"
    );
}

#[test]
fn without_the_overlap_a_new_root_is_refused() {
    let Some(envoy) = envoy() else { return };
    // The control: the client's replica never trusted the new root (no `trust` step shared),
    // so the server's new-root certificate is refused by the client.
    let mesh = Mesh::start_rotated(
        &envoy,
        NO_OVERLAP_NET,
        &[],
        Some(Rotation {
            shared: &[],
            client: &[],
            server: &["trust", "sign"],
        }),
    );
    mesh.expect(
        "the client refuses the server's certificate",
        |o| *o == Outcome::Status(503),
        served_plaintext,
    );
}
