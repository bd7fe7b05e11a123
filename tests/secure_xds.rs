//! The secure xDS port (15012) with real Envoy 1.40: a proxy with a workload certificate from
//! `sextant ca issue` gets its configuration over mutual TLS and routes traffic; a certificate
//! for another namespace than the node claims is refused (PermissionDenied), and so is a caller
//! with neither a certificate nor a token (Unauthenticated), on both Envoy and a gRPC client.
//! The plaintext port keeps serving without authentication.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use sextant_testing::{
    Backend, Process, SecureClient, Serve, envoy, http_get, request, syncz, wait_for,
};

const NET: u8 = 34;

fn sextant(args: &[&str]) -> String {
    sextant_testing::run(Command::new(sextant_testing::sextant_bin()).args(args))
}

/// Issues a workload certificate for `namespace`/`sa` into `dir/name`.
fn issue(dir: &Path, name: &str, namespace: &str, sa: &str) -> PathBuf {
    let out = dir.join(name);
    sextant_testing::issue_certificate(&dir.join("ca"), &out, "cluster.local", namespace, sa);
    out
}

fn tls_args(secure: u16, certs: &Path, with_client_cert: bool) -> Vec<String> {
    let file = |f: &str| certs.join(f).to_str().expect("utf-8").to_owned();
    let mut args = vec![
        "--xds-address".to_owned(),
        format!("127.0.0.1:{secure}"),
        "--xds-root-cert".into(),
        file("root-cert.pem"),
    ];
    if with_client_cert {
        args.extend([
            "--xds-cert".into(),
            file("cert-chain.pem"),
            "--xds-key".into(),
            file("key.pem"),
        ]);
    }
    args
}

/// Envoy's gauge `control_plane.connected_state` (1 while its ADS stream is up).
fn connected(envoy_admin: std::net::SocketAddr) -> Option<String> {
    let stats = http_get(envoy_admin, "/stats?filter=control_plane.connected_state")?;
    let line = stats.lines().find(|l| l.contains("connected_state:"))?;
    Some(line.rsplit(':').next()?.trim().to_owned())
}

/// Envoy's active SDS secrets by name (the `secret` of each).
fn active_secrets(
    envoy_admin: std::net::SocketAddr,
) -> Option<std::collections::BTreeMap<String, serde_json::Value>> {
    let body = http_get(envoy_admin, "/config_dump?resource=dynamic_active_secrets")?;
    let dump: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(
        dump["configs"]
            .as_array()?
            .iter()
            .filter_map(|c| Some((c["name"].as_str()?.to_owned(), c["secret"].clone())))
            .collect(),
    )
}

/// The SPIFFE ids of a certificate chain as Envoy's config dump shows it (base64 of the PEM).
fn identities_of(inline: &str) -> Vec<String> {
    use base64::Engine;
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let pem = base64::engine::general_purpose::STANDARD
        .decode(inline)
        .expect("base64");
    let leaf = CertificateDer::from_pem_slice(&pem).expect("PEM");
    sextant_ca::certificate_identities(&leaf)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// A proxy the secure port must refuse, and the gRPC status it must see.
struct Refusal<'a> {
    /// Where its certificate, key and root are.
    certs: &'a Path,
    /// Whether it presents the certificate.
    with_cert: bool,
    /// Tells it apart: its address and files.
    tag: u8,
    /// The gRPC status code.
    code: u8,
    /// The status message.
    message: &'static str,
}

#[test]
fn only_proxies_proving_the_identity_their_node_claims_get_configuration_over_tls() {
    let Some(envoy) = envoy() else { return };
    let dir = std::env::temp_dir().join(format!("sextant-secure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = dir.join("config");
    std::fs::create_dir_all(&config).expect("temp dir");
    let ip = |host: u8| format!("127.0.{NET}.{host}");
    let _backend = Backend::start(&format!("{}:9080", ip(1)), "v1").expect("backend");
    std::fs::write(
        config.join("mesh.yaml"),
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: reviews}}\nspec:\n  clusterIP: 10.96.{NET}.1\n  selector: {{app: reviews}}\n  ports: [{{name: http, port: 9080}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: reviews-1, labels: {{kubernetes.io/service-name: reviews}}}}\naddressType: IPv4\nports: [{{name: http, port: 9080}}]\nendpoints:\n- addresses: ['{}']\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: productpage-0, labels: {{app: productpage}}}}\nspec: {{serviceAccountName: productpage, containers: [{{name: c, image: x}}]}}\nstatus: {{podIP: '{}'}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: ratings}}\nspec: {{clusterIP: 10.96.{NET}.2, ports: [{{name: http, port: 9080}}]}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: ratings}}\nspec: {{host: ratings, trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}}}\n",
            ip(1),
            ip(99)
        ),
    )
    .expect("mesh");

    sextant(&[
        "ca",
        "init",
        "--dir",
        dir.join("ca").to_str().expect("utf-8"),
    ]);
    let good = issue(&dir, "productpage", "default", "productpage");
    let foreign = issue(&dir, "foreign", "other", "productpage");
    let wrong_account = issue(&dir, "ratings", "default", "ratings");

    let serve = Serve::new();
    let log = dir.join("sextant.log");
    let _sextant = Process(
        serve
            .command(&sextant_testing::sextant_bin())
            .args(["--config-dir", config.to_str().expect("utf-8")])
            .args(["--ca-dir", dir.join("ca").to_str().expect("utf-8")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("sextant serve starts"),
    );
    serve.wait_ready(Duration::from_secs(20)).expect("ready");
    let admin = serve.admin_addr();
    let node = format!(
        "sidecar~{}~productpage-0.default~default.svc.cluster.local",
        ip(99)
    );

    // 1. A certificate for the node's namespace and service account (from its Pod): Envoy is
    //    configured over TLS and routes traffic; syncz names the identity it proved.
    let proxy = sextant_testing::Envoy::launch(
        &envoy,
        &dir,
        &node,
        &ip(100),
        1,
        &tls_args(serve.secure_xds, &good, true),
    );
    if let Err(e) = sextant_testing::try_wait_for(
        "traffic through Envoy over TLS xDS",
        Duration::from_secs(45),
        || request(proxy.listener, "reviews", "/", &[]).filter(|(s, b, _)| *s == 200 && b == "v1"),
    ) {
        panic!(
            "{e}\nsextant log:\n{}\nsyncz: {:?}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            http_get(admin, "/debug/syncz")
        );
    }
    let entry = wait_for("the proxy in syncz", Duration::from_secs(10), || {
        syncz(admin, &node)
    });
    assert_eq!(
        entry["identity"], "spiffe://cluster.local/ns/default/sa/productpage",
        "{entry}"
    );
    assert_eq!(connected(proxy.admin).as_deref(), Some("1"));

    // SDS over the same stream: ISTIO_MUTUAL to ratings makes Envoy ask for Istio's secrets;
    // `default` is a certificate for the identity it proved, `ROOTCA` Sextant's root.
    let secrets = sextant_testing::try_wait_for(
        "ROOTCA and default active in Envoy",
        Duration::from_secs(20),
        || {
            let s = active_secrets(proxy.admin)?;
            (s.contains_key("ROOTCA") && s.contains_key("default")).then_some(s)
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nEnvoy's secrets: {:?}\nwarming: {:?}\nsyncz: {:?}",
            http_get(proxy.admin, "/config_dump?resource=dynamic_active_secrets"),
            http_get(proxy.admin, "/config_dump?resource=dynamic_warming_secrets"),
            syncz(admin, &node)
        )
    });
    let chain = secrets["default"]["tls_certificate"]["certificate_chain"]["inline_bytes"]
        .as_str()
        .expect("an inline certificate chain");
    assert_eq!(
        identities_of(chain),
        ["spiffe://cluster.local/ns/default/sa/productpage"]
    );
    let root = std::fs::read_to_string(good.join("root-cert.pem")).expect("root");
    let trusted = secrets["ROOTCA"]["validation_context"]["trusted_ca"]["inline_bytes"]
        .as_str()
        .expect("an inline root");
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(trusted)
            .expect("base64"),
        root.as_bytes()
    );

    // 2. Refused: a certificate of another namespace, one of another service account than
    //    the node's Pod runs as, and no certificate at all. Each Envoy stays unconfigured.
    let refused = [
        Refusal {
            certs: &foreign,
            with_cert: true,
            tag: 2,
            code: 7,
            message: "no identities (spiffe://cluster.local/ns/other/sa/productpage) matched default/productpage",
        },
        Refusal {
            certs: &wrong_account,
            with_cert: true,
            tag: 3,
            code: 7,
            message: "no identities (spiffe://cluster.local/ns/default/sa/ratings) matched default/productpage",
        },
        Refusal {
            certs: &good,
            with_cert: false,
            tag: 4,
            code: 16,
            message: "no client certificate with a SPIFFE identity",
        },
    ];
    for Refusal {
        certs,
        with_cert,
        tag,
        code,
        message,
    } in refused
    {
        let other_node = format!(
            "sidecar~{}~productpage-0.default~default.svc.cluster.local",
            ip(100 + tag)
        );
        let refused_proxy = sextant_testing::Envoy::launch(
            &envoy,
            &dir,
            &other_node,
            &ip(100 + tag),
            tag,
            &tls_args(serve.secure_xds, certs, with_cert),
        );
        // What the refusal leaves behind, rather than the absence of a connection (an Envoy
        // whose stream opened before the refusal reads as connected for a moment): the status
        // Envoy saw (gRPC code and message), Sextant's log of it, and nothing configured.
        let closed = format!("gRPC config stream to xds-grpc closed: {code}, ");
        let sent = message.replace(' ', "%20"); // as grpc-message carries it
        let saw = sextant_testing::try_wait_for(message, Duration::from_secs(20), || {
            std::fs::read_to_string(&refused_proxy.log)
                .ok()?
                .lines()
                .any(|l| l.contains(&closed) && l.contains(&sent))
                .then_some(())
        });
        if let Err(e) = saw {
            panic!(
                "{e}: Envoy's log:\n{}",
                std::fs::read_to_string(&refused_proxy.log).unwrap_or_default()
            );
        }
        if message.starts_with("no identities") {
            wait_for(message, Duration::from_secs(20), || {
                std::fs::read_to_string(&log)
                    .ok()?
                    .contains(message)
                    .then_some(())
            });
        }
        assert!(
            syncz(admin, &other_node).is_none(),
            "{other_node} was served"
        );
        let listeners = http_get(refused_proxy.admin, "/listeners").unwrap_or_default();
        assert!(
            !listeners.contains("9080"),
            "refused proxy has listeners: {listeners}"
        );
        // Envoy reads as connected for a moment when its stream opened before the refusal;
        // after the refusal it settles on not connected.
        wait_for(
            "the refused Envoy not connected",
            Duration::from_secs(20),
            || (connected(refused_proxy.admin).as_deref() != Some("1")).then_some(()),
        );
    }

    // 3. The same rules for a gRPC client, with the exact statuses.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let read = |certs: &Path, f: &str| std::fs::read_to_string(certs.join(f)).expect("pem");
    let client = |certs: &Path, with_cert: bool| SecureClient {
        root_pem: read(certs, "root-cert.pem"),
        identity: with_cert.then(|| (read(certs, "cert-chain.pem"), read(certs, "key.pem"))),
        token: None,
    };
    runtime.block_on(async {
        let ok = client(&good, true)
            .clusters(serve.secure_xds, &node)
            .await
            .expect("served");
        assert!(!ok.resources.is_empty());
        let denied = client(&foreign, true)
            .clusters(serve.secure_xds, &node)
            .await
            .expect_err("refused");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
        let anonymous = client(&good, false)
            .clusters(serve.secure_xds, &node)
            .await
            .expect_err("refused");
        assert_eq!(
            anonymous.code(),
            tonic::Code::Unauthenticated,
            "{anonymous:?}"
        );
        // In directory mode there is no API server to review tokens: refused with a reason.
        let token = SecureClient {
            token: Some("a-token".into()),
            ..client(&good, false)
        }
        .clusters(serve.secure_xds, &node)
        .await
        .expect_err("refused");
        assert_eq!(token.code(), tonic::Code::Unauthenticated);
        assert!(
            token.message().contains("present a client certificate"),
            "{token:?}"
        );
    });

    // 4. The plaintext port does no authentication.
    let plain_node = format!(
        "sidecar~{}~productpage-0.default~default.svc.cluster.local",
        ip(110)
    );
    let plain =
        sextant_testing::Envoy::start(&envoy, &dir, &plain_node, serve.xds, &ip(110), false, 10);
    sextant_testing::try_wait_for(
        "traffic through Envoy over plaintext xDS",
        Duration::from_secs(30),
        || request(plain.listener, "reviews", "/", &[]).filter(|(s, b, _)| *s == 200 && b == "v1"),
    )
    .expect("plaintext still serves");
    // Without a proved identity: the root, never a workload certificate.
    wait_for(
        "ROOTCA active over plaintext",
        Duration::from_secs(20),
        || {
            active_secrets(plain.admin)?
                .contains_key("ROOTCA")
                .then_some(())
        },
    );
    // What Sextant sent it, once Envoy has ACKed it: one secret, and Envoy holds no other.
    let secret_type = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
    let sent = wait_for("the secrets ACKed", Duration::from_secs(20), || {
        let status = syncz(admin, &plain_node)?["types"][secret_type].clone();
        (status["acked_version"].is_string() && status["acked_version"] == status["sent_version"])
            .then_some(status)
    });
    assert_eq!(sent["resources"], 1, "{sent}");
    assert!(
        !active_secrets(plain.admin)
            .expect("secrets")
            .contains_key("default"),
        "a certificate over the unauthenticated port"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
