//! Gateways and the Secrets they name: Istio's validation (the CRD's schema and CEL rules, then
//! `ValidateGateway`), the model the index publishes, and VirtualServices bound to Gateways.

use serde_json::{Value, json};
use sextant_index::{Index, Object, check, manifest};
use sextant_model::{Kind, Protocol, ServerHost, ServerTlsMode, TlsVersion};

fn yaml(text: &str) -> Vec<Value> {
    manifest::parse_documents(text)
        .expect("YAML")
        .into_iter()
        .map(|d| d.value)
        .collect()
}

fn gateway(name: &str, spec: &str) -> Value {
    let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    yaml(&format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\n  namespace: edge\nspec:\n{indented}"
    ))
    .remove(0)
}

/// A Gateway with one server on `port` for `hosts`, with `extra` fields on the server.
fn server(port: &str, hosts: &str, extra: &str) -> Value {
    gateway(
        "gw",
        &format!("servers:\n- port: {port}\n  hosts: {hosts}\n{extra}"),
    )
}

fn check(object: &Value) -> check::Checked {
    let checked = check::check_istio_object(Kind::Gateway, object);
    assert_eq!(checked.config.is_some(), checked.errors.is_empty());
    checked
}

fn errors(object: &Value) -> Vec<String> {
    check(object)
        .errors
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn warnings(object: &Value) -> Vec<String> {
    check(object)
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn parsed(object: &Value) -> sextant_model::Gateway {
    let checked = check(object);
    match checked.config {
        Some(check::Config::Gateway(g)) => g,
        _ => panic!("valid: {:?}", checked.errors),
    }
}

const HTTP: &str = "{number: 80, name: http, protocol: HTTP}";
const HTTPS: &str = "{number: 443, name: https, protocol: HTTPS}";

#[test]
fn every_served_version_is_read_and_secrets_are_kubernetes_objects() {
    for version in ["v1", "v1beta1", "v1alpha3"] {
        assert_eq!(
            check::classify(&format!("networking.istio.io/{version}"), "Gateway"),
            check::ObjectKind::Istio(Kind::Gateway)
        );
    }
    assert_eq!(
        check::classify("networking.istio.io/v1alpha1", "Gateway"),
        check::ObjectKind::UnservedVersion(Kind::Gateway)
    );
    assert_eq!(
        check::classify("gateway.networking.k8s.io/v1", "Gateway"),
        check::ObjectKind::Other
    );
    assert_eq!(
        check::classify("v1", "Secret"),
        check::ObjectKind::Kubernetes(Kind::Secret)
    );
}

#[test]
fn istios_bookinfo_gateway_and_its_virtual_service_are_indexed() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/istio/samples/bookinfo/networking/bookinfo-gateway.yaml"
    );
    let text = std::fs::read_to_string(path).expect("Istio's sample");
    let mut index = Index::default();
    for value in yaml(&text) {
        let kind = value["kind"].as_str().map(str::to_owned);
        let checked = check::check_istio_object(
            if kind.as_deref() == Some("Gateway") {
                Kind::Gateway
            } else {
                Kind::VirtualService
            },
            &value,
        );
        assert!(checked.errors.is_empty(), "{:?}", checked.errors);
        index.apply(Object::from_json(value, "default").expect("readable"));
    }
    let (snapshot, _) = index.publish();
    assert!(snapshot.invalid.is_empty(), "{:?}", snapshot.invalid);
    let [gw] = snapshot.gateways.as_slice() else {
        panic!("one Gateway: {:?}", snapshot.gateways);
    };
    assert_eq!(gw.key(), "default/bookinfo-gateway");
    assert_eq!(
        gw.selector.get("istio").map(String::as_str),
        Some("ingressgateway")
    );
    let s = &gw.servers[0];
    assert_eq!(
        (s.port, s.port_name.as_str(), s.protocol),
        (8080, "http", Protocol::Http)
    );
    assert_eq!(
        s.hosts,
        [ServerHost {
            namespace: None,
            host: "*".into()
        }]
    );
    assert_eq!(s.tls, None);
    // A VirtualService bound only to a Gateway may have host `*`.
    let vs = &snapshot.virtual_services[0];
    assert_eq!(vs.hosts, ["*"]);
    assert_eq!(vs.gateways, ["default/bookinfo-gateway"]);
}

#[test]
fn server_hosts_keep_their_namespace_and_are_lower_cased() {
    let gw = parsed(&server(
        HTTP,
        "[./A.example.com, \"*/b.example.com\", c.example.com, prod/*.d.example.com, \"*\", 10.0.0.1]",
        "",
    ));
    let host = |ns: Option<&str>, h: &str| ServerHost {
        namespace: ns.map(str::to_owned),
        host: h.to_owned(),
    };
    assert_eq!(
        gw.servers[0].hosts,
        [
            host(Some("edge"), "a.example.com"),
            host(None, "b.example.com"),
            host(None, "c.example.com"),
            host(Some("prod"), "*.d.example.com"),
            host(None, "*"),
            host(None, "10.0.0.1"),
        ]
    );
}

#[test]
fn invalid_gateways_are_refused_with_istios_errors_at_their_fields() {
    let cases: Vec<(Value, &str)> = vec![
        (
            gateway("gw", "selector: {app: a}"),
            "spec.servers: gateway must have at least one server",
        ),
        (
            gateway(
                "gw.v1",
                "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [a.example.com]}]",
            ),
            "metadata.name: invalid gateway name: \"gw.v1\"",
        ),
        (
            server(HTTP, "[]", ""),
            "spec.servers[0].hosts: server config must contain at least one host",
        ),
        (
            server(HTTP, "[a.example.com, reviews]", ""),
            "spec.servers[0].hosts[1]: short names (non FQDN) are not allowed",
        ),
        // Istio also says "partial wildcard not allowed"; one error per field is shown.
        (
            server(HTTP, "[\"foo*.example.com\"]", ""),
            "spec.servers[0].hosts[0]: domain name \"foo*.example.com\" invalid (label \"foo*\" invalid)",
        ),
        (
            server(HTTP, "[Bad_NS/a.example.com]", ""),
            "spec.servers[0].hosts[0]: invalid namespace value \"Bad_NS\" in gateway",
        ),
        (
            server(HTTP, "[/a.example.com]", ""),
            "spec.servers[0].hosts[0]: config namespace and dnsName in host entry cannot be empty",
        ),
        (
            server(HTTP, "[a_b.example.com]", ""),
            "spec.servers[0].hosts[0]: domain name \"a_b.example.com\" invalid (label \"a_b\" invalid)",
        ),
        (
            server(
                "{number: 80, name: http, protocol: FTP}",
                "[a.example.com]",
                "",
            ),
            "spec.servers[0].port.protocol: invalid protocol \"FTP\", supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP",
        ),
        (
            server(
                "{number: 0, name: http, protocol: HTTP}",
                "[a.example.com]",
                "",
            ),
            "spec.servers[0].port.number: port number 0 must be in the range 1..65535",
        ),
        (
            server(
                "{number: 80, name: http, protocol: HTTP, targetPort: 8080}",
                "[a.example.com]",
                "",
            ),
            "spec.servers[0].port.targetPort: targetPort has no impact on Gateways",
        ),
        (
            server(
                "{number: 80, name: \"\", protocol: HTTP}",
                "[a.example.com]",
                "",
            ),
            "spec.servers[0].port.name: port name must be set: number:80 protocol:\"HTTP\"",
        ),
        (
            server(HTTP, "[a.example.com]", "  bind: not-an-ip"),
            "spec.servers[0].bind: not-an-ip is not a valid IP",
        ),
        (
            server(HTTP, "[a.example.com]", "  bind: unix://relative/path"),
            "spec.servers[0].bind: relative/path is not an absolute path to a file",
        ),
        (
            server(HTTP, "[a.example.com]", "  bind: unix://"),
            "spec.servers[0].bind: unix address must not be empty",
        ),
        (
            server(HTTP, "[a.example.com]", "  bind: unix:///var/run/gw.sock"),
            "spec.servers[0].bind: port number must be 0 for unix domain socket: number:80 protocol:\"HTTP\" name:\"http\"",
        ),
        (
            server(HTTPS, "[a.example.com]", ""),
            "spec.servers[0]: server must have TLS settings for HTTPS/TLS protocols",
        ),
        (
            server(
                HTTP,
                "[a.example.com]",
                "  tls: {mode: SIMPLE, credentialName: cert}",
            ),
            "spec.servers[0].tls: server cannot have TLS settings for plain text HTTP ports",
        ),
        (
            server(
                "{number: 9000, name: tcp, protocol: TCP}",
                "[a.example.com]",
                "  tls: {mode: SIMPLE, credentialName: cert}",
            ),
            "spec.servers[0].tls: server cannot have TLS settings for non HTTPS/TLS ports",
        ),
        (
            server(
                HTTPS,
                "[a.example.com]",
                "  tls: {mode: ISTIO_MUTUAL, credentialName: cert}",
            ),
            "spec.servers[0].tls.credentialName: ISTIO_MUTUAL TLS cannot have associated credentialName",
        ),
        (
            server(
                HTTPS,
                "[a.example.com]",
                "  tls: {mode: ISTIO_MUTUAL, serverCertificate: /c, privateKey: /k, caCertificates: /ca}",
            ),
            "spec.servers[0].tls.caCertificates: ISTIO_MUTUAL TLS cannot have associated CA bundle",
        ),
        (
            server(
                HTTPS,
                "[a.example.com]",
                "  tls: {mode: SIMPLE, credentialName: cert, serverCertificate: /c, privateKey: /k}",
            ),
            "spec.servers[0].tls: only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified",
        ),
        (
            server(HTTPS, "[a.example.com]", "  tls: {mode: SIMPLE}"),
            "spec.servers[0].tls.serverCertificate: SIMPLE TLS requires a server certificate",
        ),
        (
            server(
                HTTPS,
                "[a.example.com]",
                "  tls: {mode: SIMPLE, serverCertificate: /c}",
            ),
            "spec.servers[0].tls.privateKey: SIMPLE TLS requires a private key",
        ),
        (
            server(
                HTTPS,
                "[a.example.com]",
                "  tls: {mode: MUTUAL, serverCertificate: /c, privateKey: /k}",
            ),
            "spec.servers[0].tls.caCertificates: MUTUAL TLS requires a client CA bundle",
        ),
        (
            server(
                HTTPS,
                "[a.example.com]",
                "  tls: {mode: OPTIONAL_MUTUAL, tlsCertificates: [{serverCertificate: /c, privateKey: /k}, {serverCertificate: /c2}], caCertificates: /ca}",
            ),
            "spec.servers[0].tls.tlsCertificates[1].privateKey: MUTUAL TLS requires a private key",
        ),
        (
            server(
                HTTPS,
                "[a.example.com]",
                "  tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k, caCrl: /crl}",
            ),
            "spec.servers[0].tls.caCrl: CRL is not supported with SIMPLE TLS",
        ),
        (
            server(
                HTTPS,
                "[a.example.com]",
                "  tls: {credentialName: a, caCrl: /crl}",
            ),
            "spec.servers[0].tls.caCrl: CRL is not supported with credentialName. CRL has to be specified in the credential",
        ),
        // The CRD's CEL rules.
        (
            server(
                HTTPS,
                "[a.example.com]",
                "  tls: {mode: SIMPLE, credentialName: a, credentialNames: [b]}",
            ),
            "only one of credentialName or credentialNames can be set",
        ),
        (
            server(
                HTTPS,
                "[a.example.com]",
                "  tls: {mode: SIMPLE, credentialNames: [a], tlsCertificates: [{serverCertificate: /c, privateKey: /k}]}",
            ),
            "only one of credentialNames or tlsCertificates can be set",
        ),
        (
            server(
                HTTPS,
                "[a.example.com]",
                "  tls: {mode: SIMPLE, credentialNames: [a, b, c]}",
            ),
            "spec.servers[0].tls.credentialNames",
        ),
        (
            server(HTTPS, "[a.example.com]", "  tls: {mode: SOMETIMES}"),
            "spec.servers[0].tls.mode",
        ),
        (
            gateway("gw", "servers: [{hosts: [a.example.com]}]"),
            "spec.servers[0].port",
        ),
    ];
    for (object, expected) in cases {
        let errors = errors(&object);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{}\nexpected {expected:?}, got {errors:#?}",
            object["spec"]
        );
    }
    let two = gateway(
        "gw",
        "servers:\n- {port: {number: 80, name: web, protocol: HTTP}, hosts: [a.example.com]}\n- {port: {number: 81, name: web, protocol: HTTP}, hosts: [b.example.com]}",
    );
    assert_eq!(
        errors(&two),
        ["spec.servers[1].port.name: port names in servers must be unique: duplicate name web"]
    );
}

#[test]
fn accepted_gateways_carry_their_warnings_and_settings() {
    let gw = server(
        HTTPS,
        "[a.example.com]",
        "  name: main\n  tls:\n    mode: MUTUAL\n    credentialName: front\n    minProtocolVersion: TLSV1_1\n    maxProtocolVersion: TLSV1_3\n    cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, NOT-A-CIPHER, ECDHE-RSA-AES128-GCM-SHA256, \"-AES128-SHA\"]\n    subjectAltNames: [spiffe://a]\n    caCertCredentialName: clients",
    );
    assert_eq!(
        warnings(&gw),
        [
            "spec.servers[0].tls.cipherSuites: ignoring invalid cipher suites: [NOT-A-CIPHER]",
            "spec.servers[0].tls.cipherSuites: ignoring duplicate cipher suites: [ECDHE-RSA-AES128-GCM-SHA256]",
        ]
    );
    let tls = parsed(&gw).servers[0].tls.clone().expect("tls");
    assert_eq!(tls.mode, ServerTlsMode::Mutual);
    assert_eq!(tls.credential_names, ["front"]);
    assert_eq!(tls.ca_credential_name.as_deref(), Some("clients"));
    assert_eq!(
        (tls.min_protocol_version, tls.max_protocol_version),
        (TlsVersion::V1_1, TlsVersion::V1_3)
    );
    assert_eq!(
        tls.cipher_suites,
        ["ECDHE-RSA-AES128-GCM-SHA256", "-AES128-SHA"]
    );
    assert_eq!(tls.subject_alt_names, ["spiffe://a"]);

    let low = server(
        HTTPS,
        "[a.example.com]",
        "  tls: {mode: SIMPLE, credentialNames: [rsa, ecdsa], minProtocolVersion: TLSV1_0}",
    );
    assert_eq!(
        warnings(&low),
        [
            "spec.servers[0].tls.minProtocolVersion: TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers."
        ]
    );
    assert_eq!(
        parsed(&low).servers[0]
            .tls
            .as_ref()
            .map(|t| t.credential_names.clone()),
        Some(vec!["rsa".to_owned(), "ecdsa".to_owned()])
    );

    let files = parsed(&server(
        HTTPS,
        "[a.example.com]",
        "  tls: {mode: SIMPLE, tlsCertificates: [{serverCertificate: /rsa.crt, privateKey: /rsa.key}, {serverCertificate: /ec.crt, privateKey: /ec.key}]}",
    ));
    let tls = files.servers[0].tls.clone().expect("tls");
    assert_eq!(
        tls.files
            .iter()
            .map(|f| (f.certificate.as_str(), f.private_key.as_str()))
            .collect::<Vec<_>>(),
        [("/rsa.crt", "/rsa.key"), ("/ec.crt", "/ec.key")]
    );

    // A redirect is the one TLS setting a plain-text HTTP server may have; on a TLS server
    // Istio only warns about it.
    let redirect = server(HTTP, "[a.example.com]", "  tls: {httpsRedirect: true}");
    assert!(warnings(&redirect).is_empty());
    assert_eq!(
        parsed(&redirect).servers[0]
            .tls
            .as_ref()
            .map(|t| t.https_redirect),
        Some(true)
    );
    let passthrough = server(
        "{number: 443, name: tls, protocol: TLS}",
        "[a.example.com]",
        "  tls: {mode: PASSTHROUGH, httpsRedirect: true, credentialName: x}",
    );
    assert_eq!(
        warnings(&passthrough),
        [
            "spec.servers[0].tls: PASSTHROUGH mode does not use certificates, they will be ignored",
            "spec.servers[0].tls.httpsRedirect: tls.httpsRedirect should only be used with http servers",
        ]
    );
    assert_eq!(parsed(&passthrough).servers[0].protocol, Protocol::Tls);
    let uds = parsed(&server(
        "{number: 0, name: uds, protocol: http}",
        "[a.example.com]",
        "  bind: unix:///var/run/gw.sock",
    ));
    assert_eq!(
        uds.servers[0].bind.as_deref(),
        Some("unix:///var/run/gw.sock")
    );
}

#[test]
fn gateways_are_published_oldest_first_and_edits_are_config_changes() {
    let mut index = Index::default();
    for (name, created) in [
        ("b", "2024-01-02T00:00:00Z"),
        ("a", "2024-01-03T00:00:00Z"),
        ("c", "2024-01-01T00:00:00Z"),
    ] {
        let mut gw = server(HTTP, "[a.example.com]", "");
        gw["metadata"]["name"] = json!(name);
        gw["metadata"]["creationTimestamp"] = json!(created);
        index.apply(Object::from_json(gw, "default").expect("readable"));
    }
    let (snapshot, changes) = index.publish();
    let names: Vec<&str> = snapshot
        .gateways
        .iter()
        .map(|g| g.id.name.as_str())
        .collect();
    assert_eq!(names, ["c", "b", "a"]);
    assert_eq!(changes.configs.len(), 3);
    assert!(changes.credentials.is_empty());
    index.delete(Kind::Gateway, "edge", "b");
    let (snapshot, changes) = index.publish();
    assert_eq!(snapshot.gateways.len(), 2);
    assert_eq!(
        changes
            .configs
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );
}

fn virtual_service(spec: &str) -> check::Checked {
    let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    let value = yaml(&format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs\n  namespace: shop\nspec:\n{indented}"
    ))
    .remove(0);
    check::check_istio_object(Kind::VirtualService, &value)
}

#[test]
fn virtual_services_name_gateways_as_namespace_slash_name() {
    let checked = virtual_service(
        "hosts: [\"*\"]\ngateways: [front, edge/back, legacy.infra.svc.cluster.local, old.infra]\nhttp:\n- match: [{gateways: [front, mesh]}]\n  route: [{destination: {host: a}}]\ntcp:\n- match: [{gateways: [edge/back]}]\n  route: [{destination: {host: a}}]",
    );
    assert!(checked.errors.is_empty(), "{:?}", checked.errors);
    let Some(check::Config::VirtualService(vs)) = checked.config else {
        panic!("valid");
    };
    assert_eq!(
        vs.gateways,
        ["shop/front", "edge/back", "infra/legacy", "infra/old"]
    );
    assert_eq!(vs.http[0].matches[0].gateways, ["shop/front", "mesh"]);
    assert_eq!(vs.tcp[0].matches[0].gateways, ["edge/back"]);
    // `*` is only for VirtualServices that do not apply to sidecars.
    for gateways in ["", "gateways: [mesh]\n", "gateways: [front, mesh]\n"] {
        let checked = virtual_service(&format!(
            "hosts: [\"*\"]\n{gateways}http:\n- route: [{{destination: {{host: a}}}}]"
        ));
        assert_eq!(
            checked
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "spec.hosts[0]: wildcard host * is not allowed for virtual services bound to the mesh gateway"
            ],
            "{gateways}"
        );
    }
}

#[test]
fn pins_and_curves_envoy_would_refuse_are_refused_at_their_fields() {
    let spki = "2IEpPESU/mmC30tPsnOfbGKdwKdQfN/wZw1QWpjGlmQ=";
    let hash = "DF:6F:F7:2F:E9:11:65:21:26:8F:64:95:0D:D4:7B:B6:7B:94:1C:CA:5F:CC:5A:0F:A5:A0:0E:1B:D7:5C:F7:BF";
    let tls = |extra: &str| {
        server(
            "{number: 443, name: https, protocol: HTTPS}",
            "[a.example.com]",
            &format!("  tls: {{mode: MUTUAL, credentialName: c, {extra}}}"),
        )
    };
    assert!(errors(&tls(&format!(
        "verifyCertificateSpki: ['{spki}'], verifyCertificateHash: ['{hash}'], ecdhCurves: [X25519, P-256]"
    )))
    .is_empty());
    let bad = errors(&tls(
        "verifyCertificateSpki: ['!!!notbase64'], verifyCertificateHash: [zz], ecdhCurves: [NOTACURVE]",
    ));
    for field in [
        "spec.servers[0].tls.verifyCertificateSpki[0]",
        "spec.servers[0].tls.verifyCertificateHash[0]",
        "spec.servers[0].tls.ecdhCurves[0]",
    ] {
        assert!(bad.iter().any(|e| e.contains(field)), "{field}: {bad:?}");
    }
}
