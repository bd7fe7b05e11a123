//! Sidecars: Istio's validation (the CRD's schema, then `ValidateSidecar`), the model the index
//! publishes, which Sidecar a proxy uses, and which hosts an egress listener imports. Also the
//! mesh config: how it is read and how it reaches the snapshot.

use std::collections::BTreeMap;

use serde_json::Value;
use sextant_index::{Index, Object, check, manifest, parse};
use sextant_model::{
    Bind, CaptureMode, DefaultEndpoint, HostNamespace, Kind, OutboundTrafficPolicy, Protocol,
    Sidecar,
};

fn yaml(text: &str) -> Value {
    manifest::parse_documents(text)
        .expect("YAML")
        .remove(0)
        .value
}

fn sidecar_in(namespace: &str, name: &str, spec: &str) -> Value {
    let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    yaml(&format!(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{indented}"
    ))
}

fn sidecar(spec: &str) -> Value {
    sidecar_in("prod", "sc", spec)
}

fn check(object: &Value) -> check::Checked {
    let checked = check::check_istio_object(Kind::Sidecar, object);
    assert_eq!(checked.config.is_some(), checked.errors.is_empty());
    checked
}

fn errors(spec: &str) -> Vec<String> {
    check(&sidecar(spec))
        .errors
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn warnings(spec: &str) -> Vec<String> {
    check(&sidecar(spec))
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn parsed(spec: &str) -> Sidecar {
    match check(&sidecar(spec)).config {
        Some(check::Config::Sidecar(s)) => s,
        other => panic!("valid: {other:?}"),
    }
}

#[test]
fn every_served_version_is_read() {
    for version in ["v1", "v1beta1", "v1alpha3"] {
        assert_eq!(
            check::classify(&format!("networking.istio.io/{version}"), "Sidecar"),
            check::ObjectKind::Istio(Kind::Sidecar)
        );
    }
    assert_eq!(
        check::classify("networking.istio.io/v1alpha1", "Sidecar"),
        check::ObjectKind::UnservedVersion(Kind::Sidecar)
    );
}

#[test]
fn sidecar_validation_uses_istios_texts_at_their_fields() {
    let cases: &[(&str, &str)] = &[
        (
            "workloadSelector: {labels: {app: x}}",
            "spec: sidecar: empty configuration provided",
        ),
        (
            "egress:\n- hosts: [\"./*\"]\n- hosts: [\"*/*\"]\n- port: {number: 80, protocol: HTTP, name: http}\n  hosts: [\"./*\"]",
            "spec.egress[0]: sidecar: the egress listener with empty port should be the last listener in the list",
        ),
        (
            "egress:\n- port: {number: 80, protocol: HTTP, name: http}\n  hosts: [\"./*\"]\n- port: {number: 80, protocol: HTTP, name: http2}\n  hosts: [\"./*\"]",
            "spec.egress[1].port.number: sidecar: ports on IP bound listeners must be unique",
        ),
        (
            "egress:\n- port: {number: 0, protocol: HTTP, name: uds}\n  hosts: [\"./*\"]",
            "spec.egress[0].bind: sidecar: ports with 0 value must have a unix domain socket bind address",
        ),
        (
            "egress:\n- port: {number: 0, protocol: HTTP, name: uds}\n  bind: unix:///var/run/a.sock\n  captureMode: IPTABLES\n  hosts: [\"./*\"]",
            "spec.egress[0].captureMode: sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
        ),
        (
            "egress:\n- port: {number: 0, name: a}\n  bind: unix:///a.sock\n  hosts: [\"./*\"]\n- port: {number: 0, name: b}\n  bind: unix:///a.sock\n  hosts: [\"./*\"]",
            "spec.egress[1].bind: sidecar: unix domain socket values for listeners must be unique",
        ),
        (
            "egress:\n- hosts: []",
            "spec.egress[0].hosts: sidecar: egress listener must contain at least one host",
        ),
        (
            "egress:\n- hosts: [\"foo.com\"]",
            "spec.egress[0].hosts[0]: host must be of form namespace/dnsName",
        ),
        (
            "egress:\n- hosts: [\"~ns/*\"]",
            "spec.egress[0].hosts[0]: invalid namespace value \"~ns\" in sidecar",
        ),
        (
            "egress:\n- hosts: [\"ns/foo\"]",
            "spec.egress[0].hosts[0]: short names (non FQDN) are not allowed",
        ),
        (
            "egress:\n- hosts: [\"ns/foo*.com\"]",
            "spec.egress[0].hosts[0]: domain name \"foo*.com\" invalid (label \"foo*\" invalid)",
        ),
        (
            "egress:\n- hosts: [\"/foo.com\"]",
            "spec.egress[0].hosts[0]: config namespace and dnsName in host entry cannot be empty",
        ),
        (
            "egress:\n- port: {number: 8080, protocol: BOGUS, name: x}\n  hosts: [\"./*\"]",
            "spec.egress[0].port.protocol: unsupported protocol: BOGUS",
        ),
        (
            "egress:\n- port: {number: 8080, name: Not_A_Label}\n  hosts: [\"./*\"]",
            "spec.egress[0].port.name: invalid port name: Not_A_Label",
        ),
        (
            "egress:\n- port: {number: 8080, targetPort: 9090}\n  hosts: [\"./*\"]",
            "spec.egress[0].port.targetPort: targetPort has no impact on Sidecars",
        ),
        (
            "egress:\n- port: {number: 8080}\n  bind: not-an-ip\n  hosts: [\"./*\"]",
            "spec.egress[0].bind: not-an-ip is not a valid IP",
        ),
        (
            "ingress:\n- port: {number: 80, protocol: HTTP, name: a}\n- port: {number: 80, protocol: HTTP, name: b}",
            "spec.ingress[1].port.number: sidecar: ports on IP bound listeners must be unique",
        ),
        (
            "ingress:\n- port: {number: 80, protocol: HTTP, name: a}\n  defaultEndpoint: 10.0.0.1:8080",
            "spec.ingress[0].defaultEndpoint: sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset",
        ),
        (
            "ingress:\n- port: {number: 80, protocol: HTTP, name: a}\n  defaultEndpoint: 127.0.0.1:http",
            "spec.ingress[0].defaultEndpoint: sidecar: defaultEndpoint port (http) is not a number: strconv.Atoi: parsing \"http\": invalid syntax",
        ),
        (
            "ingress:\n- port: {number: 80, protocol: HTTP, name: a}\n  defaultEndpoint: unix://relative.sock",
            "spec.ingress[0].defaultEndpoint: relative.sock is not an absolute path to a file",
        ),
        (
            "ingress:\n- port: {number: 80, protocol: HTTP, name: a}\n  tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k}",
            "spec.ingress[0].tls: server cannot have TLS settings for non HTTPS/TLS ports",
        ),
        (
            "ingress:\n- port: {number: 443, protocol: HTTPS, name: a}\n  tls: {mode: ISTIO_MUTUAL}",
            "spec.ingress[0].tls.mode: configuration is invalid: cannot set mode to ISTIO_MUTUAL in sidecar ingress tls",
        ),
        (
            "ingress:\n- port: {number: 443, protocol: HTTPS, name: a}\n  tls: {mode: SIMPLE, credentialName: c}",
            "spec.ingress[0].tls.credentialName: sidecar: credentialName is not currently supported",
        ),
        (
            "ingress:\n- port: {number: 443, protocol: HTTPS, name: a}\n  tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k, subjectAltNames: [a]}",
            "spec.ingress[0].tls.subjectAltNames: sidecar: subjectAltNames is not supported in ingress tls",
        ),
        (
            "outboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: {host: egress.example.com, port: {number: 80}}}",
            "spec.outboundTrafficPolicy.egressProxy: sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
        ),
        (
            "outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: egress.example.com}}",
            "spec.outboundTrafficPolicy.egressProxy: sidecar: egress_proxy port must be non-nil",
        ),
        (
            "inboundConnectionPool: {}",
            "spec.inboundConnectionPool: connection pool must have at least one field",
        ),
    ];
    for (spec, expected) in cases {
        let errors = errors(spec);
        assert!(
            errors.iter().any(|e| e == expected),
            "{spec}\nexpected {expected}\ngot {errors:?}"
        );
    }
}

#[test]
fn the_schema_refuses_what_the_crd_refuses() {
    for (spec, expected) in [
        ("egress:\n- port: {number: 80}", "hosts"),
        (
            "egress:\n- hosts: [\"./*\"]\n  captureMode: SOMETIMES",
            "captureMode",
        ),
        (
            "outboundTrafficPolicy: {mode: ALLOW_ANY_DYNAMIC_DNS}",
            "mode",
        ),
        (
            "workloadSelector: {labels: {app: \"a*\"}}\negress:\n- hosts: [\"./*\"]",
            "wildcard is not supported in selector",
        ),
    ] {
        let errors = errors(spec);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{spec}: {errors:?}"
        );
    }
}

#[test]
fn warnings_are_warnings() {
    assert_eq!(
        warnings("workloadSelector: {}\negress:\n- hosts: [\"./*\"]"),
        vec![
            "spec.workloadSelector: sidecar: workload selector specified without labels, will be applied to all services in namespace"
        ]
    );
    assert_eq!(
        warnings("egress:\n- hosts: [\"prod/a.example.com\", \"./a.example.com\", \"*/*\"]"),
        vec![
            "spec.egress[0].hosts[1]: duplicated egress host: ./a.example.com",
            "spec.egress[0].hosts: `*/*` host select all resources, no other hosts can be added",
        ]
    );
    let http_pool = warnings(
        "ingress:\n- port: {number: 9000, protocol: TCP, name: tcp}\n  connectionPool: {http: {http1MaxPendingRequests: 10}}",
    );
    assert_eq!(
        http_pool,
        vec![
            "spec.ingress[0].connectionPool.http: sidecar: HTTP connection pool settings are configured for port 9000 (\"tcp\") but its protocol is not HTTP (TCP); only TCP settings will apply"
        ]
    );
}

#[test]
fn the_model_holds_parsed_listeners() {
    let s = parsed(
        "workloadSelector: {labels: {app: ratings}}
ingress:
- port: {number: 9080, protocol: HTTP, name: http}
  defaultEndpoint: 127.0.0.1:8080
- port: {number: 9081, protocol: HTTP, name: http2}
  defaultEndpoint: '[::]:8081'
- port: {number: 9082, protocol: TCP, name: tcp}
  defaultEndpoint: unix:///var/run/app.sock
- port: {number: 9083, protocol: TCP, name: tcp2}
egress:
- port: {number: 3128, protocol: HTTP_PROXY, name: proxy}
  bind: 127.0.0.1
  captureMode: NONE
  hosts: [\"*/*\"]
- hosts: [\"./*\", \"istio-system/*.example.com\", \"~/*\"]
outboundTrafficPolicy: {}",
    );
    assert_eq!(
        s.selector,
        Some(BTreeMap::from([("app".into(), "ratings".into())]))
    );
    let endpoints: Vec<&DefaultEndpoint> = s.ingress.iter().map(|i| &i.default_endpoint).collect();
    assert_eq!(
        endpoints,
        [
            &DefaultEndpoint::Loopback {
                port: 8080,
                ipv6: false
            },
            &DefaultEndpoint::PodIp {
                port: 8081,
                ipv6: true
            },
            &DefaultEndpoint::Unix("/var/run/app.sock".into()),
            &DefaultEndpoint::None,
        ]
    );
    assert_eq!(s.ingress[0].port.protocol, Protocol::Http);
    let proxy = &s.egress[0];
    let port = proxy.port.as_ref().expect("port");
    assert!(port.http_proxy && !port.matches_service_ports());
    assert_eq!(proxy.bind, Some(Bind::Ip("127.0.0.1".parse().expect("ip"))));
    assert_eq!(proxy.capture_mode, CaptureMode::None);
    let namespaces: Vec<&HostNamespace> = s.egress[1].hosts.iter().map(|h| &h.namespace).collect();
    assert_eq!(
        namespaces,
        [
            &HostNamespace::Own,
            &HostNamespace::Named("istio-system".into()),
            &HostNamespace::None
        ]
    );
    // The protobuf's zero mode is REGISTRY_ONLY.
    assert_eq!(
        s.outbound_traffic_policy.map(|p| p.mode),
        Some(OutboundTrafficPolicy::RegistryOnly)
    );
}

#[test]
fn egress_hosts_import_as_istiod_selects_services() {
    let s = parsed(
        "egress:\n- hosts: [\"./*\", \"shared/*.example.com\", \"*/api.global.com\", \"~/*\"]",
    );
    let imports = |ns: &str, host: &str| s.imports_service("prod", ns, host);
    assert!(imports("prod", "reviews.prod.svc.cluster.local"));
    assert!(!imports("other", "reviews.other.svc.cluster.local"));
    assert!(imports("shared", "a.example.com"));
    assert!(imports("shared", "*.b.example.com"));
    assert!(!imports("shared", "example.com"));
    assert!(
        !imports("shared", "*.com"),
        "a service wildcard must be a subset"
    );
    assert!(!imports("elsewhere", "a.example.com"));
    assert!(imports("anywhere", "api.global.com"));
    // `.` is the proxy's namespace: a root-namespace Sidecar applied to namespace `web`.
    assert!(s.imports_service("web", "web", "x.web.svc.cluster.local"));
    assert!(!s.imports_service("web", "prod", "x.prod.svc.cluster.local"));
    // VirtualService hosts match wildcards both ways.
    assert!(s.imports_virtual_service_host("prod", "shared", "*.com"));
    assert!(s.imports_virtual_service_host("prod", "shared", "a.example.com"));
    assert!(!s.imports_virtual_service_host("prod", "shared", "other.org"));
    // `~/*` alone imports nothing; no egress at all imports everything.
    let nothing = parsed("egress:\n- hosts: [\"~/*\"]");
    assert!(!nothing.imports_service("prod", "prod", "a.prod.svc.cluster.local"));
    let everything = parsed("outboundTrafficPolicy: {mode: ALLOW_ANY}");
    assert!(everything.imports_service("prod", "x", "a.x.svc.cluster.local"));
}

fn object(value: Value) -> Object {
    Object::from_json(value, "default").expect("object")
}

fn with_time(mut value: Value, time: &str) -> Value {
    value["metadata"]["creationTimestamp"] = Value::String(time.into());
    value
}

#[test]
fn proxies_use_istiods_sidecar_by_selector_namespace_then_root() {
    let egress = "egress:\n- hosts: [\"./*\"]";
    let mut index = Index::default();
    for (ns, name, time, selector) in [
        ("prod", "newer-default", "2024-02-01T00:00:00Z", ""),
        ("prod", "default", "2024-01-01T00:00:00Z", ""),
        (
            "prod",
            "ratings-b",
            "2024-03-01T00:00:00Z",
            "workloadSelector: {labels: {app: ratings}}\n",
        ),
        (
            "prod",
            "ratings-a",
            "2024-04-01T00:00:00Z",
            "workloadSelector: {labels: {app: ratings, version: v1}}\n",
        ),
        ("istio-system", "mesh-default", "2024-01-01T00:00:00Z", ""),
        (
            "istio-system",
            "gw",
            "2024-01-01T00:00:00Z",
            "workloadSelector: {labels: {istio: ingressgateway}}\n",
        ),
    ] {
        let value = with_time(sidecar_in(ns, name, &format!("{selector}{egress}")), time);
        index.apply(object(value));
    }
    let (snapshot, changes) = index.publish();
    assert_eq!(changes.configs.len(), 6);
    let order: Vec<&str> = snapshot
        .sidecars
        .iter()
        .map(|s| s.id.name.as_str())
        .collect();
    assert_eq!(
        order,
        [
            "gw",
            "ratings-b",
            "ratings-a",
            "default",
            "mesh-default",
            "newer-default"
        ]
    );
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    };
    let pick = |ns: &str, l: &[(&str, &str)]| {
        snapshot
            .sidecar_for(ns, &labels(l))
            .map(|s| s.id.name.clone())
    };
    // The older selector Sidecar wins even when a newer one is more specific.
    assert_eq!(
        pick("prod", &[("app", "ratings"), ("version", "v1")]).as_deref(),
        Some("ratings-b")
    );
    assert_eq!(
        pick("prod", &[("app", "reviews")]).as_deref(),
        Some("default")
    );
    assert_eq!(
        pick("web", &[("app", "web")]).as_deref(),
        Some("mesh-default")
    );
    assert!(snapshot.label_keys.contains("version"));
    // Without the root namespace's default, a namespace without Sidecars gets none.
    index.delete(Kind::Sidecar, "istio-system", "mesh-default");
    let (snapshot, _) = index.publish();
    assert!(snapshot.sidecar_for("web", &BTreeMap::new()).is_none());
}

#[test]
fn an_invalid_sidecar_is_reported_and_an_invalid_edit_keeps_the_last_good_one() {
    let mut index = Index::default();
    index.apply(object(sidecar("egress:\n- hosts: [\"./*\"]")));
    index.publish();
    index.apply(object(sidecar("egress:\n- hosts: [\"bad\"]")));
    let (snapshot, _) = index.publish();
    assert_eq!(snapshot.sidecars.len(), 1);
    assert_eq!(snapshot.sidecars[0].egress[0].hosts[0].dns_name, "*");
    let id = &snapshot.sidecars[0].id;
    assert!(
        snapshot.invalid[id][0].contains("host must be of form namespace/dnsName"),
        "{:?}",
        snapshot.invalid
    );
}

#[test]
fn the_mesh_config_is_read_with_istios_defaults() {
    let read = parse::mesh_config("").expect("empty is every default");
    assert_eq!(read.config, sextant_model::MeshConfig::default());
    assert_eq!(read.config.root_namespace, "istio-system");
    assert_eq!(read.config.trust_domain, "cluster.local");
    assert_eq!(
        read.config.outbound_traffic_policy,
        OutboundTrafficPolicy::AllowAny
    );
    let read = parse::mesh_config(
        "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\nrootNamespace: mesh-root\ntrustDomain: example.org\naccessLogFile: /dev/stdout\nbogusField: 1\ndefaultConfig:\n  discoveryAddress: sextant.mesh:15012\n  proxyMetadata: {ISTIO_META_DNS_CAPTURE: \"true\"}\n  holdApplicationUntilProxyStarts: true\nserviceSettings:\n- settings: {clusterLocal: true}\n  hosts: [\"*.internal.svc.cluster.local\"]\ndefaultServiceExportTo: [\".\"]",
    )
    .expect("valid");
    let c = &read.config;
    assert_eq!(
        c.outbound_traffic_policy,
        OutboundTrafficPolicy::RegistryOnly
    );
    assert_eq!(c.root_namespace, "mesh-root");
    assert_eq!(c.trust_domain, "example.org");
    assert_eq!(
        c.default_config.discovery_address.as_deref(),
        Some("sextant.mesh:15012")
    );
    assert_eq!(
        c.default_config.proxy_metadata["ISTIO_META_DNS_CAPTURE"],
        "true"
    );
    assert!(c.service_settings[0].cluster_local);
    assert_eq!(c.default_service_export_to, ["."]);
    let warnings: Vec<String> = read.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings, ["bogusField: unknown field, ignored"]);
    assert_eq!(c.access_log.file, "/dev/stdout", "accessLogFile is read");
    assert!(!read.ignored.contains(&"accessLogFile".to_owned()));
    assert!(
        read.ignored
            .contains(&"defaultConfig.holdApplicationUntilProxyStarts".to_owned())
    );
}

#[test]
fn a_bad_mesh_config_names_the_field() {
    for (text, expected) in [
        (
            "outboundTrafficPolicy: {mode: SOMETIMES}",
            "outboundTrafficPolicy.mode: unknown mode \"SOMETIMES\": ALLOW_ANY or REGISTRY_ONLY",
        ),
        (
            "rootNamespace: Not_A_Namespace",
            "rootNamespace: \"Not_A_Namespace\" is not a valid namespace name",
        ),
        (
            "defaultConfig: {proxyMetadata: [a]}",
            "defaultConfig.proxyMetadata: must be a map",
        ),
        (
            "defaultVirtualServiceExportTo: [\"~\"]",
            "defaultVirtualServiceExportTo[0]: only `.` and `*` are allowed, not \"~\"",
        ),
        ("- a list", "must be a map of MeshConfig fields"),
    ] {
        let error = parse::mesh_config(text).expect_err(text).to_string();
        assert!(error.contains(expected), "{text}: {error}");
    }
}

#[test]
fn the_mesh_config_reaches_the_snapshot_and_flags_win_over_it() {
    let mut index = Index::default();
    let (first, _) = index.publish();
    assert_eq!(
        first.outbound_traffic_policy,
        OutboundTrafficPolicy::AllowAny
    );
    assert_eq!(first.root_namespace, "istio-system");
    let config = parse::mesh_config(
        "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\nrootNamespace: mesh-root",
    )
    .expect("valid")
    .config;
    index.set_mesh_config(config.clone());
    let (snapshot, changes) = index.publish();
    assert!(changes.mesh_config && !changes.is_empty() && !changes.endpoints_only());
    assert_eq!(
        snapshot.outbound_traffic_policy,
        OutboundTrafficPolicy::RegistryOnly
    );
    assert_eq!(snapshot.root_namespace, "mesh-root");
    assert_eq!(*snapshot.mesh_config, config);
    // The same config again changes nothing.
    index.set_mesh_config(config.clone());
    let (again, changes) = index.publish();
    assert!(changes.is_empty());
    assert_eq!(again.version, snapshot.version);
    // An explicit root namespace wins over the mesh config's.
    let mut flagged = Index::default().with_root_namespace("flag-root");
    flagged.set_mesh_config(config);
    assert_eq!(flagged.publish().0.root_namespace, "flag-root");
    // A Sidecar's policy overrides the mesh's for its proxies.
    let mut index = Index::default();
    index.apply(object(sidecar(
        "outboundTrafficPolicy: {mode: REGISTRY_ONLY}",
    )));
    let (snapshot, _) = index.publish();
    let chosen = snapshot
        .sidecar_for("prod", &BTreeMap::new())
        .map(|s| s.as_ref());
    assert_eq!(
        snapshot.outbound_traffic_policy_for(chosen),
        OutboundTrafficPolicy::RegistryOnly
    );
    assert_eq!(
        snapshot.outbound_traffic_policy_for(None),
        OutboundTrafficPolicy::AllowAny
    );
}
