//! Egress through a plain Envoy sidecar (`INTERCEPTION_MODE: NONE`, bound listeners) configured
//! only by Sextant, with real Envoy: a ServiceEntry declares the external host
//! `api.external.test` (MESH_EXTERNAL, STATIC, one endpoint), a local TLS server stands in for
//! it, and a DestinationRule originates TLS to it (`SIMPLE`, `sni`, `caCertificates`). Then the
//! mesh config's `outboundTrafficPolicy`: under REGISTRY_ONLY unknown hosts are refused while
//! the ServiceEntry's host still answers; under ALLOW_ANY an intercepting sidecar passes them
//! through (a sidecar without interception has no original destination to pass through to,
//! so its HTTP catch-all refuses them either way).
//!
//! Addresses: `127.0.86.1N` (the sidecar of test N) and `127.0.86.5N` (its external server).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use sextant_testing::{
    Envoy, Process, Serve, envoy, example_certificates, http_get, openssl, request, try_wait_for,
};

const HOST: &str = "api.external.test";

/// The ServiceEntry, its DestinationRule originating TLS with the test CA, and nothing else.
fn config(server: &str, ca: &Path) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP, targetPort: 8443}}]
  endpoints: [{{address: {server}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy:
    tls: {{mode: SIMPLE, sni: {HOST}, caCertificates: {}}}
"#,
        ca.display()
    )
}

fn mesh_config(mode: &str) -> String {
    format!("outboundTrafficPolicy:\n  mode: {mode}\n")
}

/// An HTTPS server answering every request with `api-external`, recording the SNI it saw.
struct TlsServer {
    sni: Arc<Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

impl TlsServer {
    fn start(addr: &str, certs: &Path) -> TlsServer {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let chain = CertificateDer::pem_file_iter(certs.join("api.crt")).expect("certificate file");
        let chain: Vec<_> = chain.collect::<Result<_, _>>().expect("certificate PEM");
        let key = PrivateKeyDer::from_pem_file(certs.join("api.key")).expect("key PEM");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .expect("TLS server binds");
        let sni = Arc::new(Mutex::new(Vec::new()));
        let seen = sni.clone();
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if let Some(name) = tls.get_ref().1.server_name() {
                        seen.lock().expect("lock").push(name.to_owned());
                    }
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = "api-external";
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        TlsServer {
            sni,
            _runtime: runtime,
        }
    }
}

struct Egress {
    log: PathBuf,
    mesh: PathBuf,
    serve: Serve,
    sidecar: Envoy,
    server: TlsServer,
    _sextant: Process,
}

impl Egress {
    /// Sextant, the external server and the sidecar of test `n`, under `mode`.
    fn start(envoy: &Path, openssl: &Path, n: u8, mode: &str) -> Egress {
        let dir = std::env::temp_dir().join(format!("sextant-egress-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config_dir = dir.join("config");
        std::fs::create_dir_all(&config_dir).expect("temp dir");
        let certs = dir.join("certs");
        example_certificates(openssl, &certs, &[("api", HOST)]);
        let server_ip = format!("127.0.86.5{n}");
        let server = TlsServer::start(&format!("{server_ip}:8443"), &certs);
        std::fs::write(
            config_dir.join("egress.yaml"),
            config(&server_ip, &certs.join("ca.crt")),
        )
        .expect("config");
        let mesh = dir.join("mesh.yaml");
        std::fs::write(&mesh, mesh_config(mode)).expect("mesh config");
        let log = dir.join("sextant.log");
        let serve = Serve::new();
        let ca = dir.join("ca");
        let sextant = serve.start_dir(
            &config_dir,
            &log,
            &[
                "--mesh-config",
                mesh.to_str().expect("utf-8"),
                "--ca-dir",
                ca.to_str().expect("utf-8"),
            ],
        );
        let bind = format!("127.0.86.1{n}");
        let node = format!("sidecar~{bind}~client-{n}.default~default.svc.cluster.local");
        let sidecar = Envoy::start(envoy, &dir, &node, serve.xds, &bind, false, 86 + n);
        Egress {
            log,
            mesh,
            serve,
            sidecar,
            server,
            _sextant: sextant,
        }
    }

    /// `GET /` through the sidecar's listener for port 8080, for `host`: the status and body.
    fn get(&self, host: &str) -> Option<(u16, String)> {
        let at = SocketAddr::new(self.sidecar.listener.ip(), 8080);
        request(at, host, "/", &[]).map(|(status, body, _)| (status, body))
    }

    /// What Sextant compiles for an intercepting sidecar of the default namespace.
    fn intercepted_config(&self) -> String {
        http_get(
            self.serve.admin_addr(),
            "/debug/config_dump?proxy=sidecar~10.1.86.1~other-0.default~default.svc.cluster.local",
        )
        .unwrap_or_default()
    }

    fn wait<T>(&self, step: &str, f: impl FnMut() -> Option<T>) -> T {
        try_wait_for(step, Duration::from_secs(30), f).unwrap_or_else(|e| {
            panic!(
                "{e}\nsextant log:\n{}\nsidecar log:\n{}\nlisteners: {:?}",
                std::fs::read_to_string(&self.log).unwrap_or_default(),
                std::fs::read_to_string(&self.sidecar.log).unwrap_or_default(),
                http_get(
                    self.sidecar.admin,
                    "/config_dump?resource=dynamic_listeners"
                ),
            )
        })
    }
}

fn tools() -> Option<(PathBuf, PathBuf)> {
    Some((envoy()?, openssl()?))
}

#[test]
fn a_service_entry_host_is_reached_with_originated_tls() {
    let Some((envoy, openssl)) = tools() else {
        return;
    };
    let egress = Egress::start(&envoy, &openssl, 0, "ALLOW_ANY");
    let (status, body) = egress.wait("api.external.test through the sidecar", || {
        egress.get(HOST).filter(|(s, _)| *s == 200)
    });
    assert_eq!((status, body.as_str()), (200, "api-external"));
    // Envoy spoke TLS with the DestinationRule's SNI, verified with its CA.
    assert!(
        egress
            .server
            .sni
            .lock()
            .expect("lock")
            .iter()
            .any(|s| s == HOST)
    );
}

#[test]
fn registry_only_refuses_unknown_hosts_and_keeps_service_entry_hosts() {
    let Some((envoy, openssl)) = tools() else {
        return;
    };
    let egress = Egress::start(&envoy, &openssl, 1, "ALLOW_ANY");
    egress.wait("api.external.test through the sidecar", || {
        egress.get(HOST).filter(|(s, _)| *s == 200)
    });
    std::fs::write(&egress.mesh, mesh_config("REGISTRY_ONLY")).expect("mesh config");
    egress.wait("unknown hosts get block_all", || {
        let dump = egress.intercepted_config();
        (dump.contains("block_all") && !dump.contains("allow_any")).then_some(())
    });
    let (status, _) = egress.wait("an unknown host is refused", || egress.get("unknown.test"));
    assert_eq!(status, 502);
    let (status, body) = egress.wait("api.external.test still answers", || {
        egress.get(HOST).filter(|(s, _)| *s == 200)
    });
    assert_eq!((status, body.as_str()), (200, "api-external"));
}

#[test]
fn allow_any_passes_unknown_destinations_through() {
    let Some((envoy, openssl)) = tools() else {
        return;
    };
    let egress = Egress::start(&envoy, &openssl, 2, "ALLOW_ANY");
    let dump = egress.wait("an intercepting sidecar's configuration", || {
        let dump = egress.intercepted_config();
        dump.contains("virtualOutbound").then_some(dump)
    });
    assert!(
        dump.contains("allow_any") && !dump.contains("block_all"),
        "unknown HTTP hosts go to the PassthroughCluster: {dump}"
    );
    // Without interception the HTTP catch-all has no original destination: unknown hosts are
    // refused under either mode, and known ones answer.
    let (status, _) = egress.wait("an unknown host", || egress.get("unknown.test"));
    assert_eq!(status, 502);
    egress.wait("api.external.test through the sidecar", || {
        egress.get(HOST).filter(|(s, _)| *s == 200)
    });
}
