//! Who gets a gateway's private keys on the Kubernetes path: the test API server (its RBAC
//! answers Sextant's SubjectAccessReviews), `sextant serve` watching it, and two real Envoys
//! that both say they are the ingress gateway (`router~` node, `istio=ingressgateway`) on the
//! secure port. One proves the gateway's service account, which a Role lets read Secrets as
//! Istio's gateway chart grants it; it gets the `credentialName` Secret and serves HTTPS with
//! it. The other proves an ordinary workload's service account of the same namespace (the
//! token any injected sidecar holds); it gets no private key.
//!
//! Addresses: `127.0.89.10` (the gateway), `127.0.89.11` (the impostor) and `127.0.89.30`
//! (productpage).

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde_json::Value;
use sextant_testing::{
    Backend, Envoy, Serve, TlsClient, envoy, example_certificates, http_get, https_request,
    kubectl, metric, openssl, repo, try_wait_for,
};

#[path = "kube_cluster.rs"]
mod kube_cluster;
use kube_cluster::Cluster;

const GATEWAY: &str = "127.0.89.10";
const IMPOSTOR: &str = "127.0.89.11";
const PRODUCTPAGE: &str = "127.0.89.30";

/// The gateway's Service and Role (as Istio's gateway chart makes them), a Gateway with an
/// HTTPS server naming `gateway-credential`, its route to productpage, and productpage.
fn manifests() -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: istio-system}}
---
apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  ports: [{{name: https, port: 443, targetPort: 8443}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: istio-ingressgateway-sds, namespace: istio-system}}
rules:
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, watch, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: istio-ingressgateway-sds, namespace: istio-system}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: istio-ingressgateway-sds}}
subjects:
- {{kind: ServiceAccount, name: istio-ingressgateway}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bookinfo, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    tls: {{mode: SIMPLE, credentialName: gateway-credential}}
    hosts: [bookinfo.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookinfo, namespace: istio-system}}
spec:
  hosts: [bookinfo.example.com]
  gateways: [bookinfo]
  http:
  - route:
    - destination: {{host: productpage.default.svc.cluster.local, port: {{number: 9080}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: productpage, namespace: default}}
spec:
  selector: {{app: productpage}}
  ports: [{{name: http, port: 9080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: productpage-1, namespace: default, labels: {{kubernetes.io/service-name: productpage}}}}
addressType: IPv4
ports: [{{name: http, port: 9080}}]
endpoints:
- addresses: ['{PRODUCTPAGE}']
"#
    )
}

/// The Secret `gateway-credential` of `istio-system` from the certificate files in `certs`.
fn credential(certs: &Path) -> String {
    use base64::Engine;
    let file = |f: &str| {
        base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(certs.join(f)).expect("certificate file"))
    };
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: gateway-credential, namespace: istio-system}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        file("bookinfo.crt"),
        file("bookinfo.key")
    )
}

/// The SDS secrets Envoy at `admin` holds: name → the kinds of secret it is
/// (`tls_certificate`, `validation_context`).
fn secrets(admin: std::net::SocketAddr) -> BTreeMap<String, Vec<String>> {
    let dump = http_get(admin, "/config_dump?resource=dynamic_active_secrets").unwrap_or_default();
    let dump: Value = serde_json::from_str(&dump).unwrap_or_default();
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let kinds = c["secret"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k.clone())
                .filter(|k| k != "name" && k != "@type")
                .collect();
            (c["name"].as_str().unwrap_or_default().to_owned(), kinds)
        })
        .collect()
}

#[test]
fn a_workload_token_claiming_to_be_the_gateway_gets_no_private_key_while_the_gateway_is_served() {
    let (Some(envoy), Some(k), Some(openssl)) = (envoy(), kubectl(), openssl()) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("sextant-gateway-secrets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let account = |sa: &str| format!("system:serviceaccount:istio-system:{sa}@istio-ca");
    let tokens = BTreeMap::from([
        ("gateway-token".to_owned(), account("istio-ingressgateway")),
        ("workload-token".to_owned(), account("reviews")),
    ]);
    let cluster = Cluster::with_tokens(&dir, 0, tokens);
    cluster.kubectl(&k, &["apply", "-f", repo("crds").to_str().expect("utf-8")]);
    let certs = dir.join("certs");
    example_certificates(&openssl, &certs, &[("bookinfo", "bookinfo.example.com")]);
    let manifest = dir.join("gateway.yaml");
    std::fs::write(
        &manifest,
        format!("{}---\n{}", manifests(), credential(&certs)),
    )
    .expect("manifests");
    cluster.kubectl(&k, &["apply", "-f", manifest.to_str().expect("utf-8")]);
    let _backend = Backend::start(&format!("{PRODUCTPAGE}:9080"), "productpage").expect("backend");

    let serve = Serve::new();
    let log = dir.join("sextant.log");
    let _sextant = cluster.serve(&serve, &log, &[]);
    let root = dir.join("root.pem");
    std::fs::write(&root, cluster.sextant_root(&k)).expect("root");
    let launch = |name: &str, bind: &str, tag: u8| {
        let token = dir.join(format!("{name}-token"));
        std::fs::write(&token, format!("{name}-token")).expect("token");
        let args: Vec<String> = [
            "--xds-address",
            &format!("127.0.0.1:{}", serve.secure_xds),
            "--xds-root-cert",
            root.to_str().expect("utf-8"),
            "--xds-token",
            token.to_str().expect("utf-8"),
            "--gateway",
            "--label",
            "istio=ingressgateway",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let node = format!("router~{bind}~{name}-0.istio-system~istio-system.svc.cluster.local");
        Envoy::launch(&envoy, &dir, &node, bind, tag, &args)
    };
    let gateway = launch("gateway", GATEWAY, 89);
    let impostor = launch("workload", IMPOSTOR, 90);
    let report = |what: &str, e: String| -> ! {
        panic!(
            "{what}: {e}\nsextant's log:\n{}\ngateway secrets: {:?}\nimpostor secrets: {:?}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            secrets(gateway.admin),
            secrets(impostor.admin),
        )
    };

    // The gateway's service account may read Secrets: it gets the key and serves HTTPS.
    let served = std::fs::read(certs.join("bookinfo.crt")).expect("certificate");
    let roots = std::fs::read(certs.join("ca.crt")).expect("ca");
    let https = || {
        https_request(
            format!("{GATEWAY}:8443").parse().expect("address"),
            &TlsClient {
                server_name: "bookinfo.example.com",
                roots: &roots,
                identity: None,
            },
            "bookinfo.example.com",
            "/productpage",
        )
    };
    if let Err(e) = try_wait_for("HTTPS through the gateway", Duration::from_secs(45), || {
        https()
            .ok()
            .filter(|a| a.status == 200 && a.body == "productpage")
    }) {
        report("the gateway is served", e);
    }
    let answer = https().expect("HTTPS");
    assert_eq!(answer.server_certificate, der(&served));
    assert_eq!(
        secrets(gateway.admin).get("kubernetes://gateway-credential"),
        Some(&vec!["tls_certificate".to_owned()])
    );

    // The impostor's identity was refused (the review answered), and it holds no key.
    let refused = r#"sextant_xds_auth_refused_total{reason="gateway_secrets"}"#;
    if let Err(e) = try_wait_for("the impostor refused", Duration::from_secs(30), || {
        metric(serve.admin_addr(), refused).filter(|n| *n >= 1.0)
    }) {
        report("the impostor's review", e);
    }
    let held = secrets(impostor.admin);
    assert!(
        held.keys().all(|name| !name.starts_with("kubernetes://")),
        "the impostor holds {held:?}"
    );
    assert!(
        held.values()
            .flatten()
            .filter(|k| *k == "tls_certificate")
            .count()
            <= 1,
        "only its own workload certificate: {held:?}"
    );
    if let Err(e) = try_wait_for("the refusal logged", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).ok().filter(|l| {
            l.contains("may not list Secrets in its namespace")
                && l.contains("spiffe://cluster.local/ns/istio-system/sa/reviews")
                && l.contains(
                    "no RBAC rule lets system:serviceaccount:istio-system:reviews list secrets in namespace istio-system",
                )
        })
    }) {
        report("the refusal is explained", e);
    }
    assert_eq!(metric(serve.admin_addr(), refused), Some(1.0));
    drop((gateway, impostor));
    let _ = std::fs::remove_dir_all(&dir);
}

fn der(pem: &[u8]) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(pem)
        .expect("a PEM certificate")
        .to_vec()
}
