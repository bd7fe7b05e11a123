//! On-demand virtual hosts (`sextant serve --vhds`, `sextant bootstrap --vhds`) with real
//! Envoy over delta ADS: route configurations start without virtual hosts, Envoy's
//! `on_demand` filter fetches the one a request's Host needs, an unknown Host is answered
//! at once, and a VirtualService change reaches a proxy as the one virtual host it changed,
//! only where that virtual host is held.
//!
//! Every mesh runs on its own loopback network `127.0.N.0/24`: backends at `.1`–`.9`, each
//! Envoy's listeners bound to `.100` and up.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde_json::Value;
use sextant_testing::{
    Backend, Envoy, Process, Serve, envoy, http_get, request, syncz, try_wait_for,
};

const VIRTUAL_HOST: &str = "type.googleapis.com/envoy.config.route.v3.VirtualHost";
const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// A Service `name` in `default` on port 9080, its endpoint at `127.0.N.host`.
fn service(net: u8, name: &str, host: u8) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  clusterIP: 10.96.{net}.{host}\n  ports: [{{name: http, port: 9080}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: 9080}}]\nendpoints: [{{addresses: [127.0.{net}.{host}]}}]\n"
    )
}

/// A VirtualService for `reviews` sending everything to `to`.
fn reviews_to(to: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: {to}}}\n"
    )
}

/// A proxy of the mesh: its Envoy and node id.
struct Proxy {
    node: String,
    envoy: Envoy,
    listener: SocketAddr,
}

struct Mesh {
    dir: PathBuf,
    serve: Serve,
    proxies: Vec<Proxy>,
    _sextant: Process,
    _backends: Vec<Backend>,
}

impl Mesh {
    /// Sextant with `--vhds` on `reviews`, `ratings` and `details` (each answering with its
    /// name) and `reviews`' VirtualService to itself, and `proxies` Envoys asking for virtual
    /// hosts on demand.
    fn start(net: u8, proxies: u8) -> Option<Mesh> {
        let envoy_bin = envoy()?;
        let dir = std::env::temp_dir().join(format!("sextant-vhds-{}-{net}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let names = ["reviews", "ratings", "details"];
        let mut manifests = String::new();
        let mut backends = Vec::new();
        for (i, name) in (1..).zip(names) {
            manifests += &service(net, name, i);
            backends.push(
                Backend::start(&format!("127.0.{net}.{i}:9080"), name).expect("backend starts"),
            );
        }
        std::fs::write(dir.join("services.yaml"), manifests).expect("write services");
        std::fs::write(dir.join("reviews.yaml"), reviews_to("reviews")).expect("write VS");
        let serve = Serve::new();
        let sextant = serve.start_dir(
            &dir,
            &dir.join("..").join(format!("sextant-vhds-{net}.log")),
            &["--vhds", "--debounce-after-ms", "50"],
        );
        let proxies = (0..proxies)
            .map(|i| {
                let node = format!(
                    "sidecar~127.0.{net}.{}~client-{i}.default~default.svc.cluster.local",
                    50 + i
                );
                let bind = format!("127.0.{net}.{}", 100 + i);
                let args = [
                    "--xds-address".to_owned(),
                    format!("127.0.0.1:{}", serve.xds),
                    "--vhds".to_owned(),
                ];
                let tag = net.wrapping_add(100 * i);
                let envoy = Envoy::launch(&envoy_bin, &dir, &node, &bind, tag, &args);
                Proxy {
                    node,
                    listener: envoy.listener,
                    envoy,
                }
            })
            .collect();
        let mesh = Mesh {
            dir,
            serve,
            proxies,
            _sextant: sextant,
            _backends: backends,
        };
        for p in &mesh.proxies {
            mesh.wait_acked(p);
        }
        Some(mesh)
    }

    /// Until the proxy has ACKed every type sent to it, the virtual hosts' first (empty)
    /// answer among them.
    fn wait_acked(&self, p: &Proxy) {
        let admin = self.serve.admin_addr();
        let acked = try_wait_for("every type ACKed", Duration::from_secs(45), || {
            let types = syncz(admin, &p.node)?["types"].as_object()?.clone();
            (types.contains_key(VIRTUAL_HOST)
                && types.contains_key(ROUTE)
                && types.values().all(|t| {
                    t["acked_version"] == t["sent_version"] && !t["sent_version"].is_null()
                }))
            .then_some(())
        });
        if let Err(e) = acked {
            let syncz = http_get(admin, "/debug/syncz").unwrap_or_default();
            panic!("{e}\nsextant /debug/syncz: {syncz}");
        }
    }

    /// What Sextant says it sent the proxy of `type_url`.
    fn status(&self, p: &Proxy, type_url: &str) -> Value {
        syncz(self.serve.admin_addr(), &p.node).expect("syncz")["types"][type_url].clone()
    }

    /// One request for `host` through the proxy's listener: the body of a 200, else
    /// `status N`; `None` when it fails or takes longer than 5 s.
    fn get(&self, p: &Proxy, host: &str) -> Option<String> {
        let (status, body, _) = request(p.listener, host, "/", &[])?;
        Some(if status == 200 {
            body
        } else {
            format!("status {status}")
        })
    }

    /// The names of the virtual hosts Envoy's route configuration `9080` holds.
    fn virtual_hosts(&self, p: &Proxy) -> Vec<String> {
        let dump = http_get(p.envoy.admin, "/config_dump?resource=dynamic_route_configs")
            .expect("Envoy's config_dump");
        let dump: Value = serde_json::from_str(&dump).expect("JSON");
        let configs = dump["configs"].as_array().cloned().unwrap_or_default();
        let config = configs
            .iter()
            .find(|c| c["route_config"]["name"] == "9080")
            .unwrap_or_else(|| panic!("route configuration 9080 in {dump}"));
        assert!(
            !config["route_config"]["vhds"].is_null(),
            "the route configuration asks for VHDS: {config}"
        );
        let mut names: Vec<String> = config["route_config"]["virtual_hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    }

    /// Replaces `reviews`' VirtualService.
    fn route_reviews_to(&self, to: &str) {
        std::fs::write(self.dir.join("reviews.yaml"), reviews_to(to)).expect("write VS");
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn route_configurations_start_without_virtual_hosts() {
    let Some(mesh) = Mesh::start(211, 1) else {
        return;
    };
    let p = &mesh.proxies[0];
    assert_eq!(mesh.virtual_hosts(p), Vec::<String>::new());
    // The first (empty) answer to the route configuration's own subscription.
    assert_eq!(mesh.status(p, VIRTUAL_HOST)["resources"], 0);
}

#[test]
fn a_host_not_yet_fetched_is_routed_after_the_on_demand_fetch() {
    let Some(mesh) = Mesh::start(212, 1) else {
        return;
    };
    let p = &mesh.proxies[0];
    // The very first request is routed: Envoy holds it while it asks.
    assert_eq!(mesh.get(p, "ratings:9080").as_deref(), Some("ratings"));
    assert_eq!(
        mesh.virtual_hosts(p),
        ["9080/ratings.default.svc.cluster.local:9080"]
    );
    // Another name of the same service is answered with the virtual host Envoy holds.
    assert_eq!(
        mesh.get(p, "ratings.default.svc.cluster.local").as_deref(),
        Some("ratings")
    );
    assert_eq!(mesh.get(p, "reviews").as_deref(), Some("reviews"));
    assert_eq!(
        mesh.virtual_hosts(p),
        [
            "9080/ratings.default.svc.cluster.local:9080",
            "9080/reviews.default.svc.cluster.local:9080"
        ]
    );
}

#[test]
fn an_unknown_host_gets_404_without_waiting() {
    let Some(mesh) = Mesh::start(213, 1) else {
        return;
    };
    let p = &mesh.proxies[0];
    // `get` gives up after 5 s: an answer at all means Envoy did not wait on the name.
    assert_eq!(
        mesh.get(p, "nowhere.example:9080").as_deref(),
        Some("status 404")
    );
    assert_eq!(
        mesh.get(p, "nowhere.example").as_deref(),
        Some("status 404")
    );
    assert!(mesh.virtual_hosts(p).is_empty());
    // Known hosts are still fetched after it.
    assert_eq!(mesh.get(p, "details").as_deref(), Some("details"));
}

#[test]
fn a_virtual_service_change_sends_one_virtual_host_to_the_proxies_holding_it() {
    let Some(mesh) = Mesh::start(214, 2) else {
        return;
    };
    let (holder, other) = (&mesh.proxies[0], &mesh.proxies[1]);
    assert_eq!(mesh.get(holder, "reviews").as_deref(), Some("reviews"));
    assert_eq!(mesh.get(holder, "ratings").as_deref(), Some("ratings"));
    assert_eq!(mesh.get(other, "details").as_deref(), Some("details"));
    mesh.wait_acked(holder);
    mesh.wait_acked(other);
    let before = |p: &Proxy, t: &str| mesh.status(p, t)["responses"].as_u64().expect("count");
    let (holder_hosts, holder_routes) = (before(holder, VIRTUAL_HOST), before(holder, ROUTE));
    let other_hosts = before(other, VIRTUAL_HOST);

    mesh.route_reviews_to("ratings");
    try_wait_for("reviews routed to ratings", Duration::from_secs(20), || {
        (mesh.get(holder, "reviews").as_deref() == Some("ratings")).then_some(())
    })
    .expect("the change reaches the proxy");
    mesh.wait_acked(holder);
    let hosts = mesh.status(holder, VIRTUAL_HOST);
    assert_eq!(
        hosts["responses"].as_u64(),
        Some(holder_hosts + 1),
        "{hosts}"
    );
    assert_eq!(hosts["resources"], 1, "one virtual host: {hosts}");
    assert_eq!(
        before(holder, ROUTE),
        holder_routes,
        "no route configuration is sent"
    );
    // The other proxy holds no virtual host of `reviews`; asking it something new now comes
    // after the change on its stream, and is the only answer it got since.
    assert_eq!(mesh.get(other, "ratings").as_deref(), Some("ratings"));
    mesh.wait_acked(other);
    let hosts = mesh.status(other, VIRTUAL_HOST);
    assert_eq!(
        hosts["responses"].as_u64(),
        Some(other_hosts + 1),
        "{hosts}"
    );
    assert_eq!(mesh.virtual_hosts(other).len(), 2);
}
