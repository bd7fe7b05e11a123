//! Ingress through a plain Envoy gateway configured only by Sextant, with real Envoy 1.40:
//! Istio's bookinfo Gateway and VirtualService from Istio's samples, unchanged, then HTTPS
//! with a `credentialName` Secret, mutual TLS at the gateway, `httpsRedirect`, and a renewed
//! Secret reaching Envoy without a restart.
//!
//! The gateway runs as Istio's ingress gateway does: node type `router` in `istio-system`,
//! labels `istio=ingressgateway`, behind the Service `istio-ingressgateway` (80 → 8080,
//! 443 → 8443), and authenticated on the secure port so that it may get its namespace's
//! Secrets. Addresses: `127.0.84.10` (the gateway) and `127.0.84.30` (productpage).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use sextant_testing::{
    Backend, Envoy, Process, Serve, TlsClient, envoy, example_certificates, https_request, openssl,
    repo, request, try_wait_for,
};

const GATEWAY: &str = "127.0.84.10";
const PRODUCTPAGE: &str = "127.0.84.30";

/// productpage and the gateway's Service.
fn mesh() -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: productpage, namespace: default}}\nspec:\n  clusterIP: 10.96.84.30\n  selector: {{app: productpage}}\n  ports: [{{name: http, port: 9080}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: productpage-1, namespace: default, labels: {{kubernetes.io/service-name: productpage}}}}\naddressType: IPv4\nports: [{{name: http, port: 9080}}]\nendpoints:\n- addresses: ['{PRODUCTPAGE}']\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: istio-ingressgateway, namespace: istio-system}}\nspec:\n  clusterIP: 10.96.84.10\n  selector: {{istio: ingressgateway}}\n  ports:\n  - {{name: http2, port: 80, targetPort: 8080}}\n  - {{name: https, port: 443, targetPort: 8443}}\n"
    )
}

/// HTTPS for bookinfo.example.com, mutual TLS for mtls.example.com (both on 443), and a
/// redirect to HTTPS on 80, as Istio's secure-ingress instructions write them.
const HTTPS: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-https
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    tls:
      mode: SIMPLE
      credentialName: bookinfo-credential
    hosts:
    - bookinfo.example.com
  - port:
      number: 443
      name: https-mtls
      protocol: HTTPS
    tls:
      mode: MUTUAL
      credentialName: bookinfo-mtls-credential
    hosts:
    - mtls.example.com
  - port:
      number: 80
      name: http-redirect
      protocol: HTTP
    tls:
      httpsRedirect: true
    hosts:
    - bookinfo.example.com
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo-https
spec:
  hosts:
  - bookinfo.example.com
  - mtls.example.com
  gateways:
  - bookinfo-https
  http:
  - match:
    - uri:
        exact: /productpage
    route:
    - destination:
        host: productpage
        port:
          number: 9080
"#;

/// A Secret in the gateway's namespace with `keys` (name, PEM file in `certs`).
fn secret(name: &str, certs: &Path, keys: &[(&str, &str)]) -> String {
    use base64::Engine;
    let mut data = String::new();
    for (key, file) in keys {
        let pem = std::fs::read(certs.join(file)).expect("certificate file");
        data.push_str(&format!(
            "  {key}: {}\n",
            base64::engine::general_purpose::STANDARD.encode(pem)
        ));
    }
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\ntype: kubernetes.io/tls\ndata:\n{data}"
    )
}

struct Ingress {
    dir: PathBuf,
    config: PathBuf,
    certs: PathBuf,
    openssl: PathBuf,
    log: PathBuf,
    gateway: Envoy,
    _backend: Backend,
    _sextant: Process,
}

impl Ingress {
    fn start(envoy: &Path, openssl: &Path) -> Ingress {
        let dir = std::env::temp_dir().join(format!("sextant-ingress-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = dir.join("config");
        std::fs::create_dir_all(&config).expect("temp dir");
        std::fs::write(config.join("mesh.yaml"), mesh()).expect("mesh");
        // Istio's sample, byte for byte.
        std::fs::copy(
            repo("tests/fixtures/istio/samples/bookinfo/networking/bookinfo-gateway.yaml"),
            config.join("bookinfo-gateway.yaml"),
        )
        .expect("bookinfo sample");
        let ca = dir.join("ca");
        sextant_testing::run(
            std::process::Command::new(sextant_testing::sextant_bin()).args([
                "ca",
                "init",
                "--dir",
                ca.to_str().expect("utf-8"),
            ]),
        );
        let log = dir.join("sextant.log");
        let serve = Serve::new();
        let sextant = serve.start_dir(&config, &log, &["--ca-dir", ca.to_str().expect("utf-8")]);
        let backend =
            Backend::start(&format!("{PRODUCTPAGE}:9080"), "productpage").expect("backend");
        let identity = dir.join("gateway-identity");
        sextant_testing::issue_certificate(
            &ca,
            &identity,
            "cluster.local",
            "istio-system",
            "istio-ingressgateway",
        );
        let file = |f: &str| identity.join(f).to_str().expect("utf-8").to_owned();
        let args: Vec<String> = [
            "--xds-address",
            &format!("127.0.0.1:{}", serve.secure_xds),
            "--xds-root-cert",
            &file("root-cert.pem"),
            "--xds-cert",
            &file("cert-chain.pem"),
            "--xds-key",
            &file("key.pem"),
            "--gateway",
            "--label",
            "istio=ingressgateway",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let node = format!(
            "router~{GATEWAY}~istio-ingressgateway-0.istio-system~istio-system.svc.cluster.local"
        );
        let gateway = Envoy::launch(envoy, &dir, &node, GATEWAY, 84, &args);
        let certs = dir.join("certs");
        example_certificates(
            openssl,
            &certs,
            &[
                ("bookinfo", "bookinfo.example.com"),
                ("mtls", "mtls.example.com"),
                ("client", "client.example.com"),
            ],
        );
        Ingress {
            dir,
            config,
            certs,
            openssl: openssl.to_owned(),
            log,
            gateway,
            _backend: backend,
            _sextant: sextant,
        }
    }

    fn at(&self, port: u16) -> SocketAddr {
        format!("{GATEWAY}:{port}").parse().expect("address")
    }

    fn pem(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.certs.join(file)).expect("certificate file")
    }

    /// Writes the Secrets from the certificates as they are now.
    fn write_secrets(&self) {
        let text = [
            secret(
                "bookinfo-credential",
                &self.certs,
                &[("tls.crt", "bookinfo.crt"), ("tls.key", "bookinfo.key")],
            ),
            secret(
                "bookinfo-mtls-credential",
                &self.certs,
                &[
                    ("tls.crt", "mtls.crt"),
                    ("tls.key", "mtls.key"),
                    ("ca.crt", "ca.crt"),
                ],
            ),
        ]
        .join("---\n");
        std::fs::write(self.config.join("secrets.yaml"), text).expect("secrets");
    }

    /// An HTTPS request for `host` on the gateway's 443 (8443), as `client` if given.
    fn https(&self, host: &str, client: bool) -> Result<sextant_testing::HttpsAnswer, String> {
        let roots = self.pem("ca.crt");
        let (chain, key) = (self.pem("client.crt"), self.pem("client.key"));
        https_request(
            self.at(8443),
            &TlsClient {
                server_name: host,
                roots: &roots,
                identity: client.then_some((chain.as_slice(), key.as_slice())),
            },
            host,
            "/productpage",
        )
    }

    fn wait(&self, step: &str, mut f: impl FnMut() -> bool) {
        if let Err(e) = try_wait_for(step, Duration::from_secs(30), || f().then_some(())) {
            panic!(
                "{e}\nsextant log:\n{}\ngateway log:\n{}\nlisteners: {:?}\nroutes: {:?}",
                std::fs::read_to_string(&self.log).unwrap_or_default(),
                std::fs::read_to_string(&self.gateway.log).unwrap_or_default(),
                sextant_testing::http_get(
                    self.gateway.admin,
                    "/config_dump?resource=dynamic_listeners"
                ),
                sextant_testing::http_get(
                    self.gateway.admin,
                    "/config_dump?resource=dynamic_route_configs"
                ),
            );
        }
    }
}

impl Drop for Ingress {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn der(pem: &[u8]) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(pem)
        .expect("a PEM certificate")
        .to_vec()
}

#[test]
fn bookinfo_ingress_over_http_https_and_mutual_tls_with_live_secret_renewal() {
    let (Some(envoy), Some(openssl)) = (envoy(), openssl()) else {
        return;
    };
    let ingress = Ingress::start(&envoy, &openssl);
    let get = |port: u16, host: &str, path: &str| request(ingress.at(port), host, path, &[]);

    // Istio's sample: any host on 8080, only the sample's paths.
    ingress.wait("bookinfo over HTTP", || {
        get(8080, "anything.example", "/productpage")
            .is_some_and(|(s, body, _)| s == 200 && body == "productpage")
    });
    assert_eq!(
        get(8080, "anything.example", "/reviews").map(|r| r.0),
        Some(404)
    );

    ingress.write_secrets();
    std::fs::write(ingress.config.join("https.yaml"), HTTPS).expect("https gateway");

    // Port 80 is the Service's port for 8080: the redirect server shares the sample's
    // listener, and its host gets a 301 to HTTPS.
    ingress.wait("httpsRedirect", || {
        get(8080, "bookinfo.example.com", "/productpage").is_some_and(|(s, _, head)| {
            s == 301 && head.contains("location: https://bookinfo.example.com/productpage")
        })
    });
    assert_eq!(
        get(8080, "anything.example", "/productpage").map(|r| r.0),
        Some(200),
        "other hosts still reach the sample's routes"
    );

    // SIMPLE: the Secret's certificate, served over SDS.
    let first = der(&ingress.pem("bookinfo.crt"));
    ingress.wait("HTTPS with the credential", || {
        ingress.https("bookinfo.example.com", false).is_ok_and(|a| {
            a.status == 200 && a.body == "productpage" && a.server_certificate == first
        })
    });

    // MUTUAL on the same port, by SNI: no client certificate, no answer.
    ingress.wait("mutual TLS with a client certificate", || {
        ingress.https("mtls.example.com", true).is_ok_and(|a| {
            a.status == 200
                && a.head.contains("x-saw-xfcc: ")
                && a.head.contains("DNS=client.example.com")
        })
    });
    let anonymous = ingress.https("mtls.example.com", false);
    assert!(
        anonymous.as_ref().is_err(),
        "MUTUAL served a client without a certificate: {anonymous:?}"
    );

    // A renewed Secret (a new certificate under the same name) reaches Envoy live.
    example_certificates(
        &ingress.openssl,
        &ingress.certs,
        &[("bookinfo", "bookinfo.example.com")],
    );
    let renewed = der(&ingress.pem("bookinfo.crt"));
    assert_ne!(first, renewed);
    ingress.write_secrets();
    ingress.wait("the renewed certificate", || {
        ingress
            .https("bookinfo.example.com", false)
            .is_ok_and(|a| a.status == 200 && a.server_certificate == renewed)
    });
}
