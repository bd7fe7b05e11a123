//! ServiceEntries and WorkloadEntries: Istio's validation (the CRD's schema and CEL rules, then
//! `ValidateServiceEntry` and `validateWorkloadEntry`), and the services and endpoints the index
//! publishes for them.

use std::net::IpAddr;

use serde_json::Value;
use sextant_index::{Index, Object, check, manifest};
use sextant_model::{Kind, Location, Origin, Protocol, Resolution, Visibility};

fn yaml(text: &str) -> Vec<Value> {
    manifest::parse_documents(text)
        .expect("YAML")
        .into_iter()
        .map(|d| d.value)
        .filter(|v| !v.is_null())
        .collect()
}

fn object(kind: &str, name: &str, namespace: &str, extra_meta: &str, spec: &str) -> Value {
    let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    yaml(&format!(
        "apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: {namespace}\n{extra_meta}spec:\n{indented}"
    ))
    .remove(0)
}

fn se(spec: &str) -> Value {
    object("ServiceEntry", "se", "default", "", spec)
}

fn check(kind: Kind, object: &Value) -> check::Checked {
    let checked = check::check_istio_object(kind, object);
    assert_eq!(checked.config.is_some(), checked.errors.is_empty());
    checked
}

fn errors(object: &Value) -> Vec<String> {
    check(Kind::ServiceEntry, object)
        .errors
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn warnings(object: &Value) -> Vec<String> {
    check(Kind::ServiceEntry, object)
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn has(list: &[String], text: &str) -> bool {
    list.iter().any(|e| e.contains(text))
}

#[test]
fn istios_error_texts_name_the_field_at_fault() {
    let cases: &[(&str, &str)] = &[
        (
            "hosts: [a.example.com]\nresolution: NONE\nendpoints: [{address: 1.1.1.1}]",
            "NONE mode cannot set endpoints",
        ),
        (
            "hosts: [a.example.com]\nresolution: DNS\naddresses: [10.0.0.0/8]\nports: [{number: 80, name: http, protocol: HTTP}]",
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        ),
        (
            "hosts: [a.example.com]\naddresses: [10.0.0.300]\nports: [{number: 80, name: http, protocol: HTTP}]",
            "spec.addresses[0]: 10.0.0.300 is not a valid IP",
        ),
        (
            "hosts: [a.example.com]\naddresses: [10.0.0.0/33]\nports: [{number: 80, name: http, protocol: HTTP}]",
            "spec.addresses[0]: 10.0.0.0/33 is not a valid CIDR block",
        ),
        (
            "hosts: [a.example.com]\nresolution: STATIC\nports: [{number: 80, name: http, protocol: HTTP}]\nendpoints: [{address: a.b.com}]",
            "spec.endpoints[0].address: endpoint address \"a.b.com\" is not a valid IP address",
        ),
        (
            "hosts: [a.example.com]\nresolution: STATIC\nports: [{number: 80, name: http, protocol: HTTP}]\nendpoints: [{address: 1.1.1.1, ports: {web: 8080}}]",
            "endpoint port 8080 is not defined by the service entry",
        ),
        (
            "hosts: [a.example.com]\nresolution: DNS\nports: [{number: 80, name: http, protocol: FOO}]",
            "spec.ports[0].protocol: unsupported protocol: FOO",
        ),
        (
            "hosts: [a.example.com, b.example.com]\nresolution: DNS\nports: [{number: 5432, name: tcp, protocol: TCP}]",
            "multiple hosts provided with non-HTTP, non-TLS ports",
        ),
        (
            "hosts: [\"*.example.com\"]\nresolution: DNS\nports: [{number: 80, name: http, protocol: HTTP}]",
            "hosts must be FQDN or contain only prefix wildcards if no endpoints are provided for resolution mode DNS",
        ),
        (
            "hosts: [a.example.com]\nresolution: DNS\nports: [{number: 80, name: http, protocol: HTTP}]\nendpoints: [{address: \"bad_name\"}]",
            "endpoint address \"bad_name\" is not a valid FQDN or an IP address",
        ),
        (
            "hosts: [a.example.com]\nresolution: DNS\nports: [{number: 80, name: http, protocol: HTTP}]\nexportTo: [\"~\", \"*\"]",
            "cannot export service entry to no one (~) and someone",
        ),
    ];
    for (spec, expected) in cases {
        let errors = errors(&se(spec));
        assert!(has(&errors, expected), "{spec}: {errors:?}");
    }
}

#[test]
fn semantic_rules_hold_without_the_schema() {
    // What the CRD would already refuse, Istio's validation refuses too, in its own words.
    let cases: &[(&str, &str)] = &[
        ("hosts: []", "service entry must have at least one host"),
        ("hosts: [\"*\"]", "invalid host *"),
        (
            "hosts: [a.example.com]\nresolution: DNS_ROUND_ROBIN\nports: [{number: 80, name: http, protocol: HTTP}]\nendpoints: [{address: a.com}, {address: b.com}]",
            "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN",
        ),
        (
            "hosts: [a.example.com]\nresolution: STATIC\nworkloadSelector: {labels: {app: a}}\nendpoints: [{address: 1.1.1.1}]",
            "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
        ),
        (
            "hosts: [a.example.com]\nports: [{number: 80, name: http}, {number: 80, name: web}]",
            "service entry port 80 already defined",
        ),
    ];
    for (spec, expected) in cases {
        let value = se(spec);
        let api: sextant_api::ServiceEntry = serde_json::from_value(value).expect("shape");
        let invalid = sextant_index::parse::service_entry(&api).expect_err(spec);
        let errors: Vec<String> = invalid.errors.iter().map(ToString::to_string).collect();
        assert!(has(&errors, expected), "{spec}: {errors:?}");
    }
}

#[test]
fn warnings_are_warnings() {
    let w = warnings(&se(
        "hosts: [a.example.com]\nresolution: NONE\nports: [{number: 3306, name: tcp, protocol: TCP}]",
    ));
    assert!(
        has(
            &w,
            "addresses are required for ports serving TCP (or unset) protocol when IP Autoallocation is not enabled"
        ),
        "{w:?}"
    );
    let w = warnings(&se(
        "hosts: [a.example.com]\nresolution: STATIC\nworkloadSelector: {}\nports: [{number: 80, name: http, protocol: HTTP}]",
    ));
    assert!(
        has(
            &w,
            "service entry: workload selector specified without labels, will be applied to all services in namespace"
        ),
        "{w:?}"
    );
    // Auto-allocation gives DNS entries an address: no warning.
    let w = warnings(&se(
        "hosts: [a.example.com]\nresolution: DNS\nports: [{number: 3306, name: tcp, protocol: TCP}]",
    ));
    assert!(!has(&w, "addresses are required"), "{w:?}");
}

#[test]
fn workload_entries_are_validated_alone() {
    let we = |spec: &str| object("WorkloadEntry", "vm", "default", "", spec);
    let errors = |v: &Value| -> Vec<String> {
        check(Kind::WorkloadEntry, v)
            .errors
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert!(has(
        &errors(&we("labels: {app: vm}")),
        "Address is required"
    ));
    assert!(has(
        &errors(&we("address: \"bad_name\"")),
        "endpoint address \"bad_name\" is not a valid FQDN or an IP address"
    ));
    assert!(errors(&we("address: vm.example.com\nports: {http: 8080}")).is_empty());
    assert!(has(
        &errors(&we("address: 1.1.1.1\nports: {http: 0}")),
        "port must be between 1-65535"
    ));
}

fn index(manifests: &str) -> Index {
    let mut index = Index::default();
    for value in yaml(manifests) {
        index.apply(Object::from_json(value, "default").expect("object"));
    }
    index
}

const STATIC: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: egress, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  hosts: [api.external.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  addresses: [192.0.2.10]
  exportTo: [".", "web"]
  ports:
  - {number: 443, name: https, protocol: TLS, targetPort: 8443}
  - {number: 80, name: http, protocol: HTTP}
  endpoints:
  - {address: 127.0.86.50, labels: {version: v1}, locality: r1/z1/s1, weight: 3}
  - {address: 127.0.86.51, ports: {https: 9443}, serviceAccount: api}
"#;

#[test]
fn a_static_entry_is_a_service_with_its_endpoints() {
    let (snapshot, _) = index(STATIC).publish();
    let svc = &snapshot.services["api.external.test"];
    assert_eq!(svc.namespace, "egress");
    assert_eq!(svc.resolution, Resolution::ClientSideLb);
    assert_eq!(svc.cluster_ip, Some("192.0.2.10".parse().expect("IP")));
    assert!(svc.is_external());
    assert!(svc.export_to.allows("web") && !svc.export_to.allows("other"));
    assert_eq!(svc.ports[0].target_port, Some(8443));
    assert_eq!(svc.ports[0].protocol, Protocol::Tls);
    let eps = snapshot.endpoints("api.external.test");
    assert_eq!(eps.len(), 2);
    let https = &svc.ports[0];
    assert_eq!(eps[0].port_for(https), Some(8443));
    assert_eq!(eps[1].port_for(https), Some(9443));
    assert_eq!(eps[1].port_for(&svc.ports[1]), Some(80));
    assert_eq!((eps[0].weight, eps[1].weight), (3, 1));
    assert_eq!(eps[0].locality.label(), "r1/z1/s1");
    assert_eq!(eps[0].labels.get("version").map(String::as_str), Some("v1"));
    assert!(!eps[0].istio_mtls && eps[1].istio_mtls);
    assert_eq!(eps[1].service_account.as_deref(), Some("api"));
}

#[test]
fn a_dns_entry_without_endpoints_is_its_own_endpoint_and_gets_an_address() {
    let (snapshot, _) = index(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
  hosts: [www.example.com]
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
"#,
    )
    .publish();
    let svc = &snapshot.services["www.example.com"];
    assert_eq!(svc.resolution, Resolution::Dns);
    let eps = snapshot.endpoints("www.example.com");
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].hostname.as_deref(), Some("www.example.com"));
    let ip = snapshot.allocated_addresses["www.example.com"];
    assert_eq!(svc.cluster_ip, Some(ip));
    match ip {
        IpAddr::V4(v4) => assert_eq!(&v4.octets()[..2], &[240, 240]),
        IpAddr::V6(_) => panic!("IPv4 allocation"),
    }
}

#[test]
fn allocation_is_stable_and_skips_opt_outs_and_wildcards() {
    let entry = |name: &str, host: &str, meta: &str, created: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default, creationTimestamp: \"{created}\"{meta}}}\nspec:\n  hosts: [\"{host}\"]\n  resolution: DNS\n  endpoints: [{{address: 1.2.3.4}}]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n---\n"
        )
    };
    let first = index(&entry("a", "a.example.com", "", "2026-01-01T00:00:00Z"))
        .publish()
        .0;
    let both = index(&format!(
        "{}{}{}{}",
        entry("a", "a.example.com", "", "2026-01-01T00:00:00Z"),
        entry("b", "b.example.com", "", "2026-01-02T00:00:00Z"),
        entry(
            "c",
            "c.example.com",
            ", labels: {\"networking.istio.io/enable-autoallocate-ip\": \"false\"}",
            "2026-01-03T00:00:00Z"
        ),
        entry("d", "*.wild.example.com", "", "2026-01-04T00:00:00Z"),
    ))
    .publish()
    .0;
    assert_eq!(
        first.allocated_addresses["a.example.com"],
        both.allocated_addresses["a.example.com"]
    );
    assert_ne!(
        both.allocated_addresses["a.example.com"],
        both.allocated_addresses["b.example.com"]
    );
    assert!(!both.allocated_addresses.contains_key("c.example.com"));
    assert!(!both.allocated_addresses.contains_key("*.wild.example.com"));
    assert_eq!(both.services["c.example.com"].cluster_ip, None);
}

const SELECTED: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: data, labels: {app: db, security.istio.io/tlsMode: istio}}
spec: {serviceAccountName: db}
status: {podIP: 10.1.0.5, podIPs: [{ip: 10.1.0.5}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: data, labels: {app: other}}
status: {podIP: 10.1.0.6, podIPs: [{ip: 10.1.0.6}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: data, labels: {version: v2}}
spec:
  address: 10.9.0.1
  labels: {app: db, version: v1}
  ports: {tcp: 15432}
  serviceAccount: db-vm
  locality: eu/west
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-elsewhere, namespace: other}
spec: {address: 10.9.0.2, labels: {app: db}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: data}
spec:
  hosts: [db.internal.test]
  location: MESH_INTERNAL
  resolution: STATIC
  addresses: [10.200.0.1]
  ports: [{number: 5432, name: tcp, protocol: TCP, targetPort: 5433}]
  workloadSelector: {labels: {app: db}}
"#;

#[test]
fn a_selector_picks_pods_and_workload_entries_of_its_namespace() {
    let (snapshot, _) = index(SELECTED).publish();
    let svc = &snapshot.services["db.internal.test"];
    assert!(!svc.is_external());
    assert!(matches!(
        svc.origin,
        Origin::ServiceEntry {
            location: Location::MeshInternal,
            ..
        }
    ));
    let eps = snapshot.endpoints("db.internal.test");
    let found: Vec<(String, Option<u16>)> = eps
        .iter()
        .map(|e| (e.address.to_string(), e.port_for(&svc.ports[0])))
        .collect();
    assert_eq!(
        found,
        vec![
            ("10.1.0.5".to_owned(), Some(5433)),
            ("10.9.0.1".to_owned(), Some(15432))
        ]
    );
    let vm = &eps[1];
    // Metadata labels win over spec labels.
    assert_eq!(vm.labels.get("version").map(String::as_str), Some("v2"));
    assert_eq!(vm.service_account.as_deref(), Some("db-vm"));
    assert!(vm.istio_mtls);
    assert_eq!(vm.locality.region, "eu");
    assert_eq!(vm.workload.as_deref(), Some("vm-1"));
}

#[test]
fn edits_to_selected_workloads_change_the_endpoints() {
    let mut index = index(SELECTED);
    index.publish();
    index.delete(Kind::WorkloadEntry, "data", "vm-1");
    let (snapshot, changes) = index.publish();
    assert!(changes.endpoints.contains("db.internal.test"));
    assert_eq!(snapshot.endpoints("db.internal.test").len(), 1);
    index.delete(Kind::Pod, "data", "db-0");
    let (snapshot, changes) = index.publish();
    assert!(changes.endpoints.contains("db.internal.test"));
    assert!(snapshot.endpoints("db.internal.test").is_empty());
    index.delete(Kind::ServiceEntry, "data", "db");
    let (snapshot, changes) = index.publish();
    assert!(changes.services.contains("db.internal.test"));
    assert!(!snapshot.services.contains_key("db.internal.test"));
}

#[test]
fn kubernetes_services_select_workload_entries() {
    let (snapshot, _) = index(&format!(
        "{SELECTED}---\napiVersion: v1\nkind: Service\nmetadata: {{name: db, namespace: data}}\nspec:\n  selector: {{app: db}}\n  ports: [{{name: tcp, port: 5432, targetPort: 5432}}]\n"
    ))
    .publish();
    let eps = snapshot.endpoints("db.data.svc.cluster.local");
    let svc = &snapshot.services["db.data.svc.cluster.local"];
    assert_eq!(eps.len(), 1, "{eps:?}");
    assert_eq!(eps[0].address.to_string(), "10.9.0.1");
    assert_eq!(eps[0].port_for(&svc.ports[0]), Some(15432));
}

#[test]
fn same_hosts_merge_as_istio_resolves_them() {
    let entry = |name: &str, ns: &str, address: &str, created: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: \"{created}\"}}\nspec:\n  hosts: [shared.example.com, reviews.default.svc.cluster.local]\n  resolution: STATIC\n  ports: [{{number: 9080, name: http, protocol: HTTP}}]\n  endpoints: [{{address: {address}}}]\n---\n"
        )
    };
    let (snapshot, _) = index(&format!(
        "{}{}{}apiVersion: v1\nkind: Service\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  clusterIP: 10.0.0.9\n  ports: [{{name: http, port: 9080}}]\n",
        entry("newer", "default", "10.0.0.2", "2026-01-02T00:00:00Z"),
        entry("older", "default", "10.0.0.1", "2026-01-01T00:00:00Z"),
        entry("elsewhere", "other", "10.0.0.3", "2025-12-01T00:00:00Z"),
    ))
    .publish();
    // The oldest entry declares the host; entries of its namespace add their endpoints, oldest
    // first; other namespaces' are left out.
    let shared = &snapshot.services["shared.example.com"];
    assert_eq!(shared.namespace, "other");
    let addresses: Vec<String> = snapshot
        .endpoints("shared.example.com")
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(addresses, vec!["10.0.0.3"]);
    // A Kubernetes Service keeps its host; entries of its namespace add endpoints.
    let reviews = &snapshot.services["reviews.default.svc.cluster.local"];
    assert_eq!(reviews.origin, Origin::Kubernetes);
    let addresses: Vec<String> = snapshot
        .endpoints("reviews.default.svc.cluster.local")
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(addresses, vec!["10.0.0.1", "10.0.0.2"]);
}

#[test]
fn an_entry_exported_to_no_one_is_hidden_everywhere() {
    let (snapshot, _) = index(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: x, namespace: default}\nspec:\n  hosts: [x.example.com]\n  resolution: DNS\n  exportTo: [\"~\"]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n",
    )
    .publish();
    assert_eq!(
        snapshot.services["x.example.com"].export_to,
        Visibility::Hidden
    );
    assert_eq!(snapshot.visible_services("default").count(), 0);
}
