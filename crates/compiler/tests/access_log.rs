//! The mesh config's access log on what the compiler builds: a sidecar's and a gateway's every
//! HTTP connection manager and TCP proxy write it, every listener logs the connections no
//! filter chain takes, and real Envoy's `--mode validate` accepts the result (TEXT and JSON).

use std::process::Command;

use envoy_types::pb::envoy::{
    config::listener::v3::{Listener, filter},
    extensions::filters::network::{
        http_connection_manager::v3::HttpConnectionManager, tcp_proxy::v3::TcpProxy,
    },
};
use prost::{Message, Name};
use sextant_compiler::{bootstrap, compile, json};
use sextant_index::{Index, Object, manifest, parse};
use sextant_model::Proxy;

/// A mesh with an HTTP service, a TCP service, and an ingress gateway routing to the first.
const MESH: &str = "
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {clusterIP: 10.96.0.1, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec: {clusterIP: 10.96.0.2, ports: [{name: tcp, port: 5432}]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: ['*']
  gateways: [gw]
  http: [{route: [{destination: {host: reviews}}]}]
";

fn index(mesh_config: &str) -> Index {
    let mut index = Index::default();
    for doc in manifest::parse_documents(MESH).expect("YAML") {
        index.apply(Object::from_json(doc.value, "default").expect("object"));
    }
    index.set_mesh_config(parse::mesh_config(mesh_config).expect("mesh config").config);
    index
}

/// `(connection managers, TCP proxies)` of `listeners`, each with its access logs' count.
fn filters(listeners: &[Listener]) -> (Vec<usize>, Vec<usize>) {
    let (mut hcms, mut tcps) = (Vec::new(), Vec::new());
    for l in listeners {
        let chains = l
            .filter_chains
            .iter()
            .chain(l.default_filter_chain.as_ref());
        for f in chains.flat_map(|c| c.filters.iter()) {
            let Some(filter::ConfigType::TypedConfig(config)) = &f.config_type else {
                continue;
            };
            if config.type_url == HttpConnectionManager::type_url() {
                let hcm = HttpConnectionManager::decode(config.value.as_slice()).expect("hcm");
                hcms.push(hcm.access_log.len());
            } else if config.type_url == TcpProxy::type_url() {
                let tcp = TcpProxy::decode(config.value.as_slice()).expect("tcp proxy");
                tcps.push(tcp.access_log.len());
            }
        }
    }
    (hcms, tcps)
}

fn proxies() -> [Proxy; 2] {
    let sidecar =
        Proxy::from_node_id("sidecar~10.1.0.10~client-0.default~default.svc.cluster.local")
            .expect("node id");
    let mut gateway =
        Proxy::from_node_id("router~10.1.0.11~gw-0.default~default.svc.cluster.local")
            .expect("node id");
    gateway.apply_metadata("LABELS", "istio=ingressgateway");
    [sidecar, gateway]
}

#[test]
fn every_connection_manager_and_tcp_proxy_writes_the_access_log() {
    let (snapshot, _) = index("accessLogFile: /dev/stdout").publish();
    for proxy in proxies() {
        let resources = compile(&snapshot, &proxy);
        let (hcms, tcps) = filters(&resources.listeners);
        assert!(!hcms.is_empty(), "{}: connection managers", proxy.id);
        assert!(
            hcms.iter().chain(&tcps).all(|n| *n == 1),
            "{}: {hcms:?} {tcps:?}",
            proxy.id
        );
        assert!(
            resources.listeners.iter().all(|l| l.access_log.len() == 1),
            "{}: each listener logs what no chain takes",
            proxy.id
        );
    }
    let (sidecar_hcms, sidecar_tcps) = filters(&compile(&snapshot, &proxies()[0]).listeners);
    assert!(!sidecar_tcps.is_empty() && !sidecar_hcms.is_empty());
}

#[test]
fn without_an_access_log_file_nothing_is_logged() {
    let (snapshot, _) = index("accessLogEncoding: JSON").publish();
    for proxy in proxies() {
        let resources = compile(&snapshot, &proxy);
        let (hcms, tcps) = filters(&resources.listeners);
        assert!(hcms.iter().chain(&tcps).all(|n| *n == 0));
        assert!(resources.listeners.iter().all(|l| l.access_log.is_empty()));
    }
}

#[test]
fn envoy_accepts_text_and_json_access_logs() {
    let Some(envoy) = sextant_testing::envoy() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("sextant-access-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let configs = [
        "accessLogFile: /dev/stdout",
        "accessLogFile: /tmp/access.log\naccessLogFormat: '%START_TIME% %RESPONSE_CODE%'",
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON",
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\naccessLogFormat: '{\"code\": \"%RESPONSE_CODE%\"}'",
    ];
    let mut failures = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let (snapshot, _) = index(config).publish();
        for proxy in proxies() {
            let resources = compile(&snapshot, &proxy);
            let b = bootstrap::static_bootstrap(&proxy.id, &resources, 15000);
            let file = dir.join(format!("{i}-{}.json", proxy.workload_name));
            std::fs::write(&file, json::to_json(&b).to_string()).expect("write bootstrap");
            let out = Command::new(&envoy)
                .args(["--mode", "validate", "--log-level", "error", "-c"])
                .arg(&file)
                .arg("--use-dynamic-base-id")
                .output()
                .expect("envoy runs");
            if !out.status.success() {
                failures.push(format!(
                    "{config} for {}: {}{}",
                    proxy.id,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "Envoy rejected:\n{}",
        failures.join("\n")
    );
}
