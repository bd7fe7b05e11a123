//! What the end-to-end tests share: finding the real tools, a real Envoy started from
//! `sextant bootstrap`, and traffic helpers.

#![allow(dead_code)] // each test binary uses its own subset

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use sextant::demo::{self, Process, request};

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

/// A path under the repository root.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

pub fn wait_for<T>(what: &str, deadline: Duration, f: impl FnMut() -> Option<T>) -> T {
    demo::wait_for(what, deadline, f).unwrap_or_else(|e| panic!("{e}"))
}

pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    request(addr, "localhost", path, &[])
        .filter(|(s, _, _)| *s == 200)
        .map(|(_, b, _)| b)
}

/// Runs `cmd`, which must succeed; its standard output.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{cmd:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd`, which must fail; its standard error.
pub fn run_fails(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{cmd:?} succeeded: {stderr}");
    stderr
}

/// A metric's value from Sextant's admin endpoint.
pub fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    http_get(admin, "/metrics")?
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The `/debug/syncz` entry of `node`.
pub fn syncz(admin: SocketAddr, node: &str) -> Option<serde_json::Value> {
    let all: serde_json::Value = serde_json::from_str(&http_get(admin, "/debug/syncz")?).ok()?;
    all.as_array()?.iter().find(|c| c["proxy"] == node).cloned()
}

/// How `n` requests for `reviews` through `addr` were answered: by body, or `status N`.
pub fn split(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let (status, body, _) = request(addr, "reviews", "/", &[]).expect("request through Envoy");
        let key = if status == 200 {
            body
        } else {
            format!("status {status}")
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// Sends 200 requests and checks they split evenly between `a` and `b`: Binomial(200, 0.5)
/// within 4.5 standard deviations either side.
pub fn assert_even_split(listener: SocketAddr, a: &str, b: &str) {
    let counts = split(listener, 200);
    let (na, nb) = (
        counts.get(a).copied().unwrap_or(0),
        counts.get(b).copied().unwrap_or(0),
    );
    assert_eq!(na + nb, 200, "{counts:?}");
    assert!(
        (68..=132).contains(&nb),
        "50/50 split outside tolerance: {counts:?}"
    );
}

/// A real Envoy with a bootstrap from `sextant bootstrap`.
pub struct Envoy {
    /// Its outbound listener for port 9080.
    pub listener: SocketAddr,
    /// Its admin address.
    pub admin: SocketAddr,
    /// Bootstrap, admin address and log files, removed when done.
    files: Vec<PathBuf>,
    _process: Process,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

impl Envoy {
    /// Starts Envoy for `node` against the xDS port, its listeners bound to `bind`; files go
    /// beside `dir`, named by `tag`.
    pub fn start(
        envoy: &Path,
        dir: &Path,
        node: &str,
        xds: u16,
        bind: &str,
        delta: bool,
        tag: u8,
    ) -> Envoy {
        let mut xds_args = vec!["--xds-address".to_owned(), format!("127.0.0.1:{xds}")];
        if delta {
            xds_args.push("--delta".into());
        }
        Envoy::launch(envoy, dir, node, bind, tag, &xds_args)
    }

    /// Starts Envoy for `node` with these `sextant bootstrap` arguments for reaching the
    /// control plane (`--xds-address`, `--delta`, TLS files).
    pub fn launch(
        envoy: &Path,
        dir: &Path,
        node: &str,
        bind: &str,
        tag: u8,
        xds_args: &[String],
    ) -> Envoy {
        let mut args = vec![
            "bootstrap".to_owned(),
            "--node-id".into(),
            node.to_owned(),
            "--bind-address".into(),
            bind.to_owned(),
            "--admin-port".into(),
            "0".into(),
        ];
        args.extend_from_slice(xds_args);
        let yaml = run(Command::new(env!("CARGO_BIN_EXE_sextant")).args(&args));
        let bootstrap = dir
            .join("..")
            .join(format!("envoy-{}-{tag}.yaml", std::process::id()));
        std::fs::write(&bootstrap, yaml).expect("write bootstrap");
        // Envoy's admin binds port 0 and reports the port it got: no race for free ports.
        let admin_path = bootstrap.with_extension("admin");
        let envoy_log = bootstrap.with_extension("log");
        let _ = std::fs::remove_file(&admin_path);
        let process = Process(
            Command::new(envoy)
                .args([
                    "-c",
                    bootstrap.to_str().expect("utf-8"),
                    "--use-dynamic-base-id",
                ])
                .args([
                    "--concurrency",
                    "1",
                    "-l",
                    "warning",
                    "--admin-address-path",
                ])
                .arg(&admin_path)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&envoy_log).expect("log file"))
                .spawn()
                .expect("envoy starts"),
        );
        let admin: SocketAddr =
            demo::wait_for("Envoy's admin address", Duration::from_secs(30), || {
                std::fs::read_to_string(&admin_path)
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|e| {
                panic!(
                    "{e}; Envoy's log:\n{}",
                    std::fs::read_to_string(&envoy_log).unwrap_or_default()
                )
            });
        Envoy {
            listener: format!("{bind}:9080").parse().expect("addr"),
            admin,
            files: vec![bootstrap.clone(), admin_path, envoy_log],
            _process: process,
        }
    }
}

/// How a test client authenticates to the secure xDS port.
pub struct SecureClient {
    /// The root that signed Sextant's serving certificate (PEM).
    pub root_pem: String,
    /// A client certificate chain and key (PEM), if any.
    pub identity: Option<(String, String)>,
    /// A bearer token, if any.
    pub token: Option<String>,
}

impl SecureClient {
    /// Opens a state-of-the-world stream on the secure xDS port at `port` as `node`, asks for
    /// clusters and returns the first response, or the status the server refused with.
    pub async fn clusters(
        &self,
        port: u16,
        node: &str,
    ) -> Result<envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse, tonic::Status>
    {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.root_pem.as_bytes()).expect("root PEM"))
            .expect("root");
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(chain.as_bytes())
                        .collect::<Result<_, _>>()
                        .expect("chain PEM"),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key PEM"),
                )
                .expect("client certificate"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1")
            .connect_with_connector(tower::service_fn(move |_| {
                let connector = connector.clone();
                async move {
                    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                    let name = rustls::pki_types::ServerName::IpAddress(
                        std::net::Ipv4Addr::LOCALHOST.into(),
                    );
                    let tls = connector.connect(name, tcp).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                }
            }))
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connecting: {e:?}")))?;
        first_clusters(channel, node, self.token.as_deref()).await
    }
}

/// Opens a state-of-the-world stream on `channel` as `node` (with a bearer `token`, if any),
/// asks for clusters and returns the first response, or the status the server refused with.
pub async fn first_clusters(
    channel: tonic::transport::Channel,
    node: &str,
    token: Option<&str>,
) -> Result<envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse, tonic::Status> {
    use envoy_types::pb::envoy::{
        config::core::v3::Node,
        service::discovery::v3::{
            DiscoveryRequest, aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
        },
    };
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let first = DiscoveryRequest {
        node: Some(Node {
            id: node.to_owned(),
            ..Default::default()
        }),
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".to_owned(),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(first).await.expect("queued");
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header value"),
        );
    }
    let mut responses = client
        .stream_aggregated_resources(request)
        .await?
        .into_inner();
    let response = responses.message().await?;
    drop(tx);
    response.ok_or_else(|| tonic::Status::unknown("the stream ended without a response"))
}
