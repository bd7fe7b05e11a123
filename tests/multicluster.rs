//! One control plane over several clusters, end to end: test API servers standing in for the
//! clusters, each remote one registered in the config cluster the way Istio registers it (the
//! Secret `sextant create-remote-secret` prints, applied with real kubectl), one `sextant
//! serve`, and real Envoy 1.40 proxies.
//!
//! - Three clusters: a proxy in A reaches a service whose endpoints are only in B and one that
//!   spans A, B and C; deleting B's Secret takes B's endpoints away and applying it again
//!   brings them back, with no restart; stopping B's API server keeps its endpoints serving
//!   through the grace period while `/debug/clusterz` shows B failing.
//! - Locality failover: a proxy in A's locality prefers A's endpoint; when outlier detection
//!   ejects it, traffic moves to B's locality, and back when it recovers.
//! - Two networks: a proxy on A's network reaches B's endpoint through B's east-west gateway
//!   (AUTO_PASSTHROUGH on 15443, a real Envoy configured by Sextant), over mutual TLS end to
//!   end.
//!
//! Addresses are on loopback: `127.0.110.0/24`, `127.0.111.0/24` and `127.0.112.0/24`, one
//! network per test.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::PathBuf,
    process::Command,
    sync::atomic::Ordering,
    time::Duration,
};

use serde_json::Value;
use sextant_testing::{
    Backend, Envoy, Process, Serve, free_port, http_get, kubectl, repo, request, run, try_wait_for,
};

#[path = "kube_cluster.rs"]
mod kube_cluster;
use kube_cluster::Cluster;

/// The control plane's namespace, where remote clusters' Secrets go.
const SYSTEM: &str = "istio-system";

fn ip(net: u8, host: u8) -> String {
    format!("127.0.{net}.{host}")
}

/// Manifests of one cluster, written as a user would.
#[derive(Default)]
struct Manifest(String);

impl Manifest {
    fn push(&mut self, doc: String) -> &mut Self {
        if !self.0.is_empty() {
            self.0.push_str("---\n");
        }
        self.0.push_str(&doc);
        self
    }

    fn namespace(&mut self, name: &str, network: Option<&str>) -> &mut Self {
        let labels = network.map_or(String::new(), |n| {
            format!(", labels: {{topology.istio.io/network: {n}}}")
        });
        self.push(format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}{labels}}}\n"
        ))
    }

    fn node(&mut self, name: &str, region: &str, zone: &str) -> &mut Self {
        self.push(format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{topology.kubernetes.io/region: {region}, topology.kubernetes.io/zone: {zone}}}\n"
        ))
    }

    /// A Service of port 9080 selecting `app: NAME`.
    fn service(&mut self, name: &str) -> &mut Self {
        self.push(format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 9080}}]\n"
        ))
    }

    /// A Pod of `app` (its IP is patched in by [`Clusters::pod_ips`]), with a sidecar when
    /// `meshed`.
    fn pod(&mut self, name: &str, app: &str, node: &str, meshed: bool) -> &mut Self {
        let tls = if meshed {
            ", security.istio.io/tlsMode: istio"
        } else {
            ""
        };
        self.push(format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{app: {app}{tls}}}\nspec: {{serviceAccountName: {app}, nodeName: {node}, containers: [{{name: app, image: x}}]}}\n"
        ))
    }

    /// The EndpointSlice of `service`: each `(pod, address)`.
    fn slice(&mut self, service: &str, cluster: &str, pods: &[(&str, String)]) -> &mut Self {
        let endpoints: String = pods
            .iter()
            .map(|(pod, addr)| {
                format!(
                    "- addresses: ['{addr}']\n  conditions: {{ready: true}}\n  targetRef: {{kind: Pod, name: {pod}, namespace: default}}\n"
                )
            })
            .collect();
        self.push(format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-{cluster}, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{name: http, port: 9080, protocol: TCP}}]\nendpoints:\n{endpoints}"
        ))
    }
}

/// A remote cluster: its API server and its id.
struct Remote {
    id: &'static str,
    cluster: Cluster,
}

/// The config cluster A, remote clusters, and `sextant serve` watching A.
struct Clusters {
    dir: PathBuf,
    kubectl: PathBuf,
    a: Cluster,
    remotes: Vec<Remote>,
    serve: Serve,
    _sextant: Process,
}

impl Clusters {
    /// A with `a`'s objects, each remote `(id, objects)`, and Sextant started with `extra`.
    fn start(
        name: &str,
        a: &Manifest,
        remotes: Vec<(&'static str, Manifest)>,
        extra: &[&str],
    ) -> Option<Clusters> {
        let k = kubectl()?;
        let dir = std::env::temp_dir().join(format!("sextant-mc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a")).expect("scratch dir");
        let config = Cluster::start(&dir.join("a"), 0);
        config.kubectl(&k, &["apply", "-f", repo("crds").to_str().expect("utf-8")]);
        let apply = |cluster: &Cluster, file: &str, manifest: &Manifest| {
            let path = dir.join(file);
            std::fs::write(&path, &manifest.0).expect("manifest");
            cluster.kubectl(&k, &["apply", "-f", path.to_str().expect("utf-8")]);
        };
        apply(&config, "a.yaml", a);
        let remotes: Vec<Remote> = remotes
            .into_iter()
            .map(|(id, manifest)| {
                let sub = dir.join(id.to_lowercase());
                std::fs::create_dir_all(&sub).expect("scratch dir");
                let cluster = Cluster::start(&sub, free_port());
                apply(&cluster, &format!("{id}.yaml"), &manifest);
                Remote { id, cluster }
            })
            .collect();
        let ca = dir.join("ca");
        run(Command::new(sextant_testing::sextant_bin()).args([
            "ca",
            "init",
            "--dir",
            ca.to_str().expect("utf-8"),
        ]));
        let serve = Serve::new();
        let ca = ca.to_str().expect("utf-8").to_owned();
        let mut args = vec!["--lease-namespace", SYSTEM, "--ca-dir", &ca];
        args.extend_from_slice(extra);
        let sextant = config.serve(&serve, &dir.join("sextant.log"), &args);
        let clusters = Clusters {
            dir,
            kubectl: k,
            a: config,
            remotes,
            serve,
            _sextant: sextant,
        };
        Some(clusters)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sextant.log")).unwrap_or_default()
    }

    fn remote(&self, id: &str) -> &Remote {
        self.remotes.iter().find(|r| r.id == id).expect("a remote")
    }

    /// Sets each `(pod, IP)` of cluster `id` (`A` for the config cluster), as the kubelet
    /// reports it.
    fn pod_ips(&self, id: &str, pods: &[(&str, String)]) {
        let cluster = if id == "A" {
            &self.a
        } else {
            &self.remote(id).cluster
        };
        for (pod, ip) in pods {
            let status = format!(r#"{{"status":{{"phase":"Running","podIP":"{ip}"}}}}"#);
            cluster.kubectl(
                &self.kubectl,
                &[
                    "patch",
                    "pod",
                    pod,
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &status,
                ],
            );
        }
    }

    /// Registers remote cluster `id` in A: `sextant create-remote-secret` against its API
    /// server, and `kubectl apply` of what it prints.
    fn register(&self, id: &str) {
        let remote = self.remote(id);
        let secret = run(Command::new(sextant_testing::sextant_bin()).args([
            "create-remote-secret",
            "--name",
            id,
            "--namespace",
            SYSTEM,
            "--kubeconfig",
            remote.cluster.kubeconfig().to_str().expect("utf-8"),
        ]));
        let path = self.dir.join(format!("secret-{id}.yaml"));
        std::fs::write(&path, secret).expect("secret");
        self.a.kubectl(
            &self.kubectl,
            &["apply", "-f", path.to_str().expect("utf-8")],
        );
    }

    fn unregister(&self, id: &str) {
        self.a.kubectl(
            &self.kubectl,
            &[
                "delete",
                "secret",
                "-n",
                SYSTEM,
                &format!("istio-remote-secret-{id}"),
            ],
        );
    }

    /// Cluster `id` as `/debug/clusterz` shows it.
    fn clusterz(&self, id: &str) -> Option<Value> {
        let body = http_get(self.serve.admin_addr(), "/debug/clusterz")?;
        let clusters: Value = serde_json::from_str(&body).ok()?;
        clusters
            .as_array()?
            .iter()
            .find(|c| c["cluster"] == id)
            .cloned()
    }

    fn wait_for<T>(&self, what: &str, f: impl FnMut() -> Option<T>, envoys: &[&Envoy]) -> T {
        try_wait_for(what, Duration::from_secs(45), f).unwrap_or_else(|e| {
            let logs: Vec<String> = envoys
                .iter()
                .map(|e| std::fs::read_to_string(&e.log).unwrap_or_default())
                .collect();
            panic!(
                "{e}\nsextant's log:\n{}\nEnvoy logs:\n{}\nclusterz: {:?}",
                self.log(),
                logs.join("\n---\n"),
                http_get(self.serve.admin_addr(), "/debug/clusterz"),
            )
        })
    }
}

impl Drop for Clusters {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Which backends answered `n` requests for `host` through `listener` (`status N` for others).
fn answers(listener: SocketAddr, host: &str, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let key = match request(listener, host, "/", &[]) {
            Some((200, body, _)) => body,
            Some((status, _, _)) => format!("status {status}"),
            None => "no answer".to_owned(),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

fn names(counts: &BTreeMap<String, usize>) -> BTreeSet<&str> {
    counts.keys().map(String::as_str).collect()
}

#[test]
fn a_proxy_reaches_other_clusters_services_as_their_registration_comes_and_goes() {
    let Some(envoy) = sextant_testing::envoy() else {
        return;
    };
    let net = 110;
    let mut a = Manifest::default();
    a.namespace(SYSTEM, None)
        .service("spanning")
        .pod("spanning-a", "spanning", "node-a", false)
        .slice("spanning", "a", &[("spanning-a", ip(net, 1))]);
    let mut b = Manifest::default();
    b.service("only-b")
        .pod("only-b-0", "only-b", "node-b", false)
        .slice("only-b", "b", &[("only-b-0", ip(net, 11))])
        .service("spanning")
        .pod("spanning-b", "spanning", "node-b", false)
        .slice("spanning", "b", &[("spanning-b", ip(net, 12))]);
    let mut c = Manifest::default();
    c.service("spanning")
        .pod("spanning-c", "spanning", "node-c", false)
        .slice("spanning", "c", &[("spanning-c", ip(net, 21))]);
    let Some(mut mesh) = Clusters::start(
        "three",
        &a,
        vec![("cluster-b", b), ("cluster-c", c)],
        &["--remote-grace-period-seconds", "300"],
    ) else {
        return;
    };
    mesh.pod_ips("A", &[("spanning-a", ip(net, 1))]);
    mesh.pod_ips(
        "cluster-b",
        &[("only-b-0", ip(net, 11)), ("spanning-b", ip(net, 12))],
    );
    mesh.pod_ips("cluster-c", &[("spanning-c", ip(net, 21))]);
    let _backends: Vec<Backend> = [
        (1, "spanning-a"),
        (11, "only-b"),
        (12, "spanning-b"),
        (21, "spanning-c"),
    ]
    .into_iter()
    .map(|(h, name)| Backend::start(&format!("{}:9080", ip(net, h)), name).expect("backend"))
    .collect();
    let node = format!(
        "sidecar~{}~client-0.default~default.svc.cluster.local",
        ip(net, 100)
    );
    let client = Envoy::start(
        &envoy,
        &mesh.dir,
        &node,
        mesh.serve.xds,
        &ip(net, 100),
        false,
        net,
    );
    let everything = || {
        let only_b = answers(client.listener, "only-b", 5);
        let spanning = answers(client.listener, "spanning", 60);
        (only_b.keys().eq(["only-b"])
            && names(&spanning) == BTreeSet::from(["spanning-a", "spanning-b", "spanning-c"]))
        .then_some(())
    };

    // Only A's service until B and C are registered.
    mesh.wait_for(
        "A's endpoint alone",
        || {
            (answers(client.listener, "spanning", 10)
                .keys()
                .eq(["spanning-a"]))
            .then_some(())
        },
        &[&client],
    );
    mesh.register("cluster-b");
    mesh.register("cluster-c");
    mesh.wait_for(
        "B's service, and the spanning one across A, B and C",
        everything,
        &[&client],
    );

    // B's Secret deleted: B's endpoints leave A's proxy, A's and C's stay.
    mesh.unregister("cluster-b");
    mesh.wait_for(
        "B's endpoints gone",
        || {
            let spanning = answers(client.listener, "spanning", 40);
            let only_b = answers(client.listener, "only-b", 3);
            (!only_b.contains_key("only-b")
                && names(&spanning) == BTreeSet::from(["spanning-a", "spanning-c"]))
            .then_some(())
        },
        &[&client],
    );
    assert_eq!(mesh.clusterz("cluster-b"), None);

    // Registered again: back, with no restart.
    mesh.register("cluster-b");
    mesh.wait_for("B's endpoints back", everything, &[&client]);

    // B's API server stops: its endpoints keep serving through the grace period, and
    // /debug/clusterz says B is failing.
    mesh.remotes
        .iter_mut()
        .find(|r| r.id == "cluster-b")
        .expect("cluster B")
        .cluster
        .stop();
    let failing = mesh.wait_for(
        "B failing in /debug/clusterz",
        || {
            mesh.clusterz("cluster-b")
                .filter(|c| c["state"] == "failing")
        },
        &[&client],
    );
    assert!(
        !failing["error"].as_str().unwrap_or_default().is_empty(),
        "{failing}"
    );
    assert_eq!(
        answers(client.listener, "only-b", 10)
            .keys()
            .collect::<Vec<_>>(),
        ["only-b"]
    );
    let spanning = answers(client.listener, "spanning", 60);
    assert_eq!(
        names(&spanning),
        BTreeSet::from(["spanning-a", "spanning-b", "spanning-c"]),
        "{spanning:?}"
    );
}

#[test]
fn locality_failover_moves_traffic_to_the_other_cluster_and_back() {
    let Some(envoy) = sextant_testing::envoy() else {
        return;
    };
    let net = 111;
    let mut a = Manifest::default();
    a.namespace(SYSTEM, None)
        .node("node-a", "region-a", "zone-a")
        .service("reviews")
        .pod("reviews-a", "reviews", "node-a", false)
        .slice("reviews", "a", &[("reviews-a", ip(net, 1))])
        .push(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\nspec:\n  host: reviews\n  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 3s, maxEjectionPercent: 100}\n"
                .to_owned(),
        );
    let mut b = Manifest::default();
    b.node("node-b", "region-b", "zone-b")
        .service("reviews")
        .pod("reviews-b", "reviews", "node-b", false)
        .slice("reviews", "b", &[("reviews-b", ip(net, 11))]);
    let Some(mesh) = Clusters::start("failover", &a, vec![("cluster-b", b)], &[]) else {
        return;
    };
    mesh.pod_ips("A", &[("reviews-a", ip(net, 1))]);
    mesh.pod_ips("cluster-b", &[("reviews-b", ip(net, 11))]);
    let local = Backend::start(&format!("{}:9080", ip(net, 1)), "reviews-a").expect("backend");
    let _remote = Backend::start(&format!("{}:9080", ip(net, 11)), "reviews-b").expect("backend");
    mesh.register("cluster-b");
    let node = format!(
        "sidecar~{}~client-0.default~default.svc.cluster.local",
        ip(net, 100)
    );
    let client = Envoy::launch(
        &envoy,
        &mesh.dir,
        &node,
        &ip(net, 100),
        net,
        &[
            "--xds-address".to_owned(),
            format!("127.0.0.1:{}", mesh.serve.xds),
            "--locality".into(),
            "region-a/zone-a/".into(),
        ],
    );
    let only = |name: &str| {
        let want = name.to_owned();
        move || {
            let got = answers(client.listener, "reviews", 20);
            (got.len() == 1 && got.contains_key(&want)).then_some(())
        }
    };
    // Both clusters' endpoints known (B registered), and every request stays in A's locality.
    mesh.wait_for(
        "B synced",
        || {
            mesh.clusterz("cluster-b")
                .filter(|c| c["state"] == "synced")
        },
        &[&client],
    );
    mesh.wait_for("all traffic to A's locality", only("reviews-a"), &[&client]);
    let clusters = http_get(client.admin, "/clusters").unwrap_or_default();
    assert!(
        clusters.contains(&format!("{}:9080::", ip(net, 11))),
        "B's endpoint is known to the proxy, at a lower priority:\n{clusters}"
    );

    // A's endpoint fails: outlier detection ejects it and traffic fails over to B.
    local.fail.store(true, Ordering::Relaxed);
    mesh.wait_for("failed over to B", only("reviews-b"), &[&client]);
    // Recovered: back to A once the ejection ends.
    local.fail.store(false, Ordering::Relaxed);
    mesh.wait_for("back to A's locality", only("reviews-a"), &[&client]);
}

/// Istio's `expose-services.yaml` for multi-network meshes: every `*.local` service through the
/// east-west gateway, by SNI.
const CROSS_NETWORK_GATEWAY: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: cross-network-gateway\n  namespace: istio-system\nspec:\n  selector:\n    istio: eastwestgateway\n  servers:\n    - port:\n        number: 15443\n        name: tls\n        protocol: TLS\n      tls:\n        mode: AUTO_PASSTHROUGH\n      hosts:\n        - \"*.local\"\n";

#[test]
fn another_networks_endpoints_are_reached_through_its_east_west_gateway() {
    let Some(envoy) = sextant_testing::envoy() else {
        return;
    };
    let net = 112;
    let gateway_ip = ip(net, 30);
    let mut a = Manifest::default();
    a.namespace(SYSTEM, Some("net-a"))
        .pod("client-0", "client", "node-a", true)
        .push(CROSS_NETWORK_GATEWAY.to_owned());
    let mut b = Manifest::default();
    b.namespace(SYSTEM, Some("net-b"))
        .push(format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: istio-eastwestgateway\n  namespace: istio-system\n  labels: {{istio: eastwestgateway, topology.istio.io/network: net-b}}\nspec:\n  type: LoadBalancer\n  selector: {{istio: eastwestgateway}}\n  externalIPs: ['{gateway_ip}']\n  ports: [{{name: tls, port: 15443}}]\n"
        ))
        .service("server")
        .pod("server-0", "server", "node-b", true)
        .slice("server", "b", &[("server-0", ip(net, 20))]);
    let Some(mesh) = Clusters::start("networks", &a, vec![("cluster-b", b)], &[]) else {
        return;
    };
    mesh.pod_ips("A", &[("client-0", ip(net, 10))]);
    mesh.pod_ips("cluster-b", &[("server-0", ip(net, 20))]);
    mesh.register("cluster-b");
    let _backend = Backend::start(&format!("{}:9080", ip(net, 22)), "server").expect("backend");
    let ca = mesh.dir.join("ca");
    // Sidecars prove their identity on the secure port: they take part in mutual TLS.
    let sidecar = |name: &str, host: u8, bind: u8, extra: &[&str]| {
        let certs = mesh.dir.join(name);
        sextant_testing::issue_certificate(&ca, &certs, "cluster.local", "default", name);
        let file = |f: &str| certs.join(f).to_str().expect("utf-8").to_owned();
        let mut args = vec![
            "--xds-address".to_owned(),
            format!("127.0.0.1:{}", mesh.serve.secure_xds),
            "--xds-root-cert".into(),
            file("root-cert.pem"),
            "--xds-cert".into(),
            file("cert-chain.pem"),
            "--xds-key".into(),
            file("key.pem"),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let node = format!(
            "sidecar~{}~{name}-0.default~default.svc.cluster.local",
            ip(net, host)
        );
        Envoy::launch(&envoy, &mesh.dir, &node, &ip(net, bind), host, &args)
    };
    let app = format!("SEXTANT_APP_ADDRESS={}", ip(net, 22));
    let server = sidecar(
        "server",
        20,
        21,
        &[
            "--cluster-id",
            "cluster-b",
            "--network",
            "net-b",
            "--meta",
            &app,
        ],
    );
    let client = sidecar("client", 10, 10, &["--network", "net-a"]);
    let gateway = Envoy::launch(
        &envoy,
        &mesh.dir,
        &format!("router~{gateway_ip}~eastwest-0.istio-system~istio-system.svc.cluster.local"),
        &gateway_ip,
        30,
        &[
            "--xds-address".to_owned(),
            format!("127.0.0.1:{}", mesh.serve.xds),
            "--gateway".into(),
            "--label".into(),
            "istio=eastwestgateway".into(),
            "--cluster-id".into(),
            "cluster-b".into(),
            "--network".into(),
            "net-b".into(),
        ],
    );
    let envoys = [&client, &gateway, &server];
    let (status, body, head) = mesh.wait_for(
        "the server through the east-west gateway",
        || request(client.listener, "server", "/", &[]).filter(|(s, _, _)| *s == 200),
        &envoys,
    );
    assert_eq!((status, body.as_str()), (200, "server"));
    // Mutual TLS end to end: the server's sidecar saw the client's identity.
    assert!(
        head.contains("x-saw-xfcc: By=spiffe://cluster.local/ns/default/sa/server")
            && head.contains("URI=spiffe://cluster.local/ns/default/sa/client"),
        "{head}"
    );
    // The client's only endpoint for the server is the gateway; the gateway forwarded it.
    let clusters = http_get(client.admin, "/clusters").unwrap_or_default();
    let hosts: BTreeSet<&str> = clusters
        .lines()
        .filter(|l| l.starts_with("outbound|9080||server.default.svc.cluster.local::"))
        .filter_map(|l| l.split("::").nth(1))
        .filter(|h| h.parse::<SocketAddr>().is_ok())
        .collect();
    assert_eq!(
        hosts,
        BTreeSet::from([format!("{gateway_ip}:15443").as_str()]),
        "{clusters}"
    );
    // Sextant's own view of the connected client says the same.
    let node = format!(
        "sidecar~{}~client-0.default~default.svc.cluster.local",
        ip(net, 10)
    );
    let dump = http_get(
        mesh.serve.admin_addr(),
        &format!("/debug/config_dump?proxy={node}"),
    )
    .unwrap_or_default();
    assert!(
        dump.contains(&format!("\"{gateway_ip}\""))
            && !dump.contains(&format!("\"{}\"", ip(net, 20))),
        "config_dump of the connected client shows the gateway, not B's endpoint"
    );
    let stats =
        http_get(gateway.admin, "/stats?filter=outbound_.9080_._.server").unwrap_or_default();
    assert!(
        stats
            .lines()
            .any(|l| l.contains("upstream_cx_total") && !l.ends_with(": 0")),
        "{stats}"
    );
}
