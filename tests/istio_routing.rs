//! Where istiod's routing decides traffic in ways a reimplementation easily misses, replayed
//! through real Envoy configured by Sextant, over state-of-the-world and delta ADS. Each test
//! states Istio's behaviour and the Istio source that defines it; `docs/ISTIO-COMPAT.md` has
//! the neighbouring rules.
//!
//! Every mesh runs on its own loopback network `127.0.N.0/24`: backends at `.1`–`.19`, the
//! Envoy's listeners bound to `.100`, clients from `.50`–`.59`.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::Stdio,
    time::Duration,
};

use sextant_testing::{Backend, Envoy, Process, Serve, envoy, http_get, syncz, try_wait_for};

struct Mesh {
    dir: PathBuf,
    net: u8,
    node: String,
    serve: Serve,
    proxy: Envoy,
    _sextant: Process,
    _backends: Vec<Backend>,
}

/// A Service named `name` in `namespace` with `ports` (name, number), its endpoints at
/// `127.0.N.h` for each `h` of `hosts`; its cluster IP is `10.96.N.<first host>`.
fn service(net: u8, name: &str, namespace: &str, ports: &[(&str, u16)], hosts: &[u8]) -> String {
    let ports: Vec<String> = ports
        .iter()
        .map(|(port_name, number)| format!("{{name: {port_name}, port: {number}}}"))
        .collect();
    let ports = ports.join(", ");
    let addresses: Vec<String> = hosts.iter().map(|h| format!("127.0.{net}.{h}")).collect();
    let vip = hosts.first().copied().unwrap_or(200);
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  clusterIP: 10.96.{net}.{vip}\n  ports: [{ports}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: {namespace}, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{ports}]\nendpoints: [{{addresses: [{}]}}]\n",
        addresses.join(", ")
    )
}

impl Mesh {
    /// Sextant on a directory holding `manifests`, HTTP backends (`host`, port, name), and one
    /// Envoy in namespace `default` with listeners bound to `127.0.N.100`.
    fn start(
        net: u8,
        delta: bool,
        manifests: &str,
        backends: &[(u8, u16, &'static str)],
    ) -> Option<Mesh> {
        let envoy = envoy()?;
        let dir =
            std::env::temp_dir().join(format!("sextant-routing-{}-{net}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("mesh.yaml"), manifests).expect("write manifests");
        let backends = backends
            .iter()
            .map(|(host, port, name)| {
                Backend::start(&format!("127.0.{net}.{host}:{port}"), name).expect("backend")
            })
            .collect();
        let serve = Serve::new();
        let sextant = Process(
            serve
                .command(&sextant_testing::sextant_bin())
                .args(["--config-dir", dir.to_str().expect("utf-8")])
                .args(["--debounce-after-ms", "50"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("sextant serve starts"),
        );
        serve.wait_ready(Duration::from_secs(20)).expect("ready");
        let node = format!("sidecar~127.0.{net}.99~client-0.default~default.svc.cluster.local");
        let bind = format!("127.0.{net}.100");
        let proxy = Envoy::start(&envoy, &dir, &node, serve.xds, &bind, delta, net);
        let mesh = Mesh {
            dir,
            net,
            node,
            serve,
            proxy,
            _sextant: sextant,
            _backends: backends,
        };
        mesh.wait_acked();
        Some(mesh)
    }

    /// Until Envoy has ACKed every type Sextant sent it.
    fn wait_acked(&self) {
        let admin = self.serve.admin_addr();
        let acked = try_wait_for("every type ACKed", Duration::from_secs(45), || {
            let types = syncz(admin, &self.node)?["types"].as_object()?.clone();
            // Three types without an HTTP port (no routes to ask for), else four.
            (types.len() >= 3
                && types.contains_key("type.googleapis.com/envoy.config.listener.v3.Listener")
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

    /// Envoy's listener on `port`.
    fn at(&self, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, self.net, 100], port))
    }

    /// Waits until `GET path` with `Host: host` on `port` answers `expected` (the body of a
    /// 200, else `status N`); on a timeout, shows Envoy's routes.
    fn expect(&self, port: u16, host: &str, headers: &[(&str, &str)], expected: &str) {
        self.expect_request(port, "GET", host, "/", headers, expected);
    }

    fn expect_request(
        &self,
        port: u16,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        expected: &str,
    ) {
        let mut last = None;
        let outcome = try_wait_for(
            &format!("{method} {host}:{port}{path} {headers:?} answers {expected:?}"),
            Duration::from_secs(15),
            || {
                last = send(None, self.at(port), method, host, path, headers);
                (last.as_deref() == Some(expected)).then_some(())
            },
        );
        if let Err(e) = outcome {
            let routes = http_get(
                self.proxy.admin,
                "/config_dump?resource=dynamic_route_configs",
            )
            .unwrap_or_default();
            panic!("{e}; last answer {last:?}\nEnvoy's routes: {routes}");
        }
    }

    fn envoy_config(&self) -> String {
        http_get(self.proxy.admin, "/config_dump").expect("Envoy's config_dump")
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One HTTP/1.1 request on a connection of its own, from `source` when given: the body of a
/// 200, else `status N`; `None` when it fails.
fn send(
    source: Option<IpAddr>,
    to: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<String> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into()).ok()?;
    }
    socket
        .connect_timeout(&to.into(), Duration::from_secs(2))
        .ok()?;
    let mut stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // One chunk, then the last.
        body.split("\r\n").nth(1).unwrap_or_default().to_owned()
    } else {
        body.to_owned()
    };
    Some(if status == 200 {
        body
    } else {
        format!("status {status}")
    })
}

/// A test over state-of-the-world ADS on network `net` and one over delta on `net + 1`.
macro_rules! both {
    ($scenario:ident, $net:expr) => {
        mod $scenario {
            #[test]
            fn sotw() {
                super::$scenario(false, $net);
            }

            #[test]
            fn delta() {
                super::$scenario(true, $net + 1);
            }
        }
    };
}

/// The catch-all's answer when listeners bind real addresses (Istio's `block_all`).
const CATCH_ALL: &str = "status 502";

/// Istio 1.27+ lists `<fqdn>.` among a service's domains (`GenerateAltVirtualHosts` in
/// `pilot/pkg/networking/core/httproute.go`, `PILOT_ENABLE_ABSOLUTE_FQDN_VHOST_DOMAIN`), only
/// for the full name; the short names are `name`, `name.ns.svc` and `name.ns` for the proxy's
/// own namespace and `name.ns`, `name.ns.svc` for others; then the cluster IP. Ports are never
/// part of a domain: the route configuration ignores them (`ignore_port_in_host_matching`).
fn host_names_with_a_trailing_dot(delta: bool, net: u8) {
    let manifests = service(net, "reviews", "default", &[("http", 9080)], &[1])
        + &service(net, "ratings", "other", &[("http", 9080)], &[2]);
    let Some(mesh) = Mesh::start(
        net,
        delta,
        &manifests,
        &[(1, 9080, "reviews"), (2, 9080, "ratings")],
    ) else {
        return;
    };
    let vip = format!("10.96.{net}.1");
    for host in [
        "reviews.default.svc.cluster.local.",
        "reviews.default.svc.cluster.local.:9080",
        "reviews.default.svc.cluster.local",
        "reviews",
        "reviews.default.svc",
        "reviews.default",
        "reviews.default:9080",
        &vip,
    ] {
        mesh.expect(9080, host, &[], "reviews");
    }
    for host in [
        "ratings.other.svc.cluster.local.",
        "ratings.other",
        "ratings.other.svc",
    ] {
        mesh.expect(9080, host, &[], "ratings");
    }
    // No other forms: the short name of another namespace, dots after short names.
    for host in [
        "ratings",
        "reviews.default.",
        "reviews.",
        "reviews.default.svc.cluster.local..",
    ] {
        mesh.expect(9080, host, &[], CATCH_ALL);
    }
}

both!(host_names_with_a_trailing_dot, 60);

/// Istio resolves only dotless VirtualService hosts as short names
/// (`ResolveShortnameToFQDN`, `pilot/pkg/model/config.go`), so `test.default` is a literal
/// host: on route `80` it gets a virtual host of its own, built before the services' and so
/// keeping the domain, routed by the VirtualService, while the service `test` keeps its
/// default route (`separateVSHostsAndServices` and `buildSidecarVirtualHostsForVirtualService`
/// in `pilot/pkg/networking/core/route/route.go`; Istio's test "virtual service conflict").
/// On other ports the VirtualService names no service of the port and is left out
/// (`selectVirtualServices` in `httproute.go`), so `test.default` is the service's there.
fn virtual_service_host_that_is_no_services_name(delta: bool, net: u8) {
    let manifests = service(
        net,
        "test",
        "default",
        &[("http", 80), ("http-alt", 8080)],
        &[1],
    ) + &service(net, "other", "default", &[("http", 80)], &[2])
        + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: literal, namespace: default}\nspec:\n  hosts: [test.default]\n  http:\n  - route: [{destination: {host: other}}]\n";
    let Some(mesh) = Mesh::start(
        net,
        delta,
        &manifests,
        &[(1, 80, "test"), (2, 80, "other"), (1, 8080, "test-8080")],
    ) else {
        return;
    };
    mesh.expect(80, "test.default", &[], "other");
    mesh.expect(80, "test", &[], "test");
    mesh.expect(80, "test.default.svc", &[], "test");
    mesh.expect(80, "test.default.svc.cluster.local", &[], "test");
    mesh.expect(8080, "test.default", &[], "test-8080");
    mesh.expect(8080, "test", &[], "test-8080");
}

both!(virtual_service_host_that_is_no_services_name, 62);

/// Since Istio 1.24 an ExternalName Service is an alias of the service whose host name is its
/// `externalName` (`ConvertService` in `pilot/pkg/serviceregistry/kube/conversion.go` sets
/// `Resolution: Alias`; `resolveServiceAliases` in `pilot/pkg/model/push_context.go`). It gets
/// no cluster or listener of its own (`buildOutboundClusters` skips aliases); its names join
/// its target's virtual host on every port of the target (`generateVirtualHostDomains`), so a
/// VirtualService of the target routes them; a VirtualService for a portless alias applies on
/// route `80` only (Istio's `TestExternalNameServices`); a route to an alias with the port goes
/// to its target (`GetDestinationCluster`). An ExternalName outside the mesh builds nothing,
/// and requests for it get the catch-all.
fn external_name_services_are_aliases(delta: bool, net: u8) {
    let alias = |name: &str, target: &str, ports: &str| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  type: ExternalName\n  externalName: {target}\n{ports}"
        )
    };
    let manifests = service(net, "reviews", "default", &[("http", 9080)], &[1])
        + &service(net, "reviews-v2", "default", &[("http", 9080)], &[2])
        + &alias("reviews-alias", "reviews.default.svc.cluster.local", "")
        + &alias(
            "reviews-ported",
            "reviews.default.svc.cluster.local",
            "  ports: [{name: http, port: 9080}]\n",
        )
        + &alias(
            "ext",
            "example.com",
            "  ports: [{name: http, port: 9080}]\n",
        )
        + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{headers: {x-version: {exact: v2}}}]\n    route: [{destination: {host: reviews-v2}}]\n  - route: [{destination: {host: reviews}}]\n"
        + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: alias-only, namespace: default}\nspec:\n  hosts: [reviews-alias]\n  http:\n  - route: [{destination: {host: reviews-v2}}]\n"
        + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews-v2, namespace: default}\nspec:\n  hosts: [reviews-v2]\n  http:\n  - match: [{headers: {x-via: {exact: alias}}}]\n    route: [{destination: {host: reviews-ported}}]\n  - route: [{destination: {host: reviews-v2}}]\n";
    let Some(mesh) = Mesh::start(
        net,
        delta,
        &manifests,
        &[(1, 9080, "reviews"), (2, 9080, "reviews-v2")],
    ) else {
        return;
    };
    // The alias's names reach its target, routed by the target's VirtualService; the
    // VirtualService for the portless alias does not apply on 9080.
    for host in [
        "reviews-alias",
        "reviews-alias.default",
        "reviews-alias.default.svc",
        "reviews-alias.default.svc.cluster.local.",
        "reviews-ported",
    ] {
        mesh.expect(9080, host, &[], "reviews");
        mesh.expect(9080, host, &[("x-version", "v2")], "reviews-v2");
    }
    // A destination naming an alias with the port goes to the alias's target.
    mesh.expect(9080, "reviews-v2", &[], "reviews-v2");
    mesh.expect(9080, "reviews-v2", &[("x-via", "alias")], "reviews");
    // Outside the mesh: nothing is built.
    mesh.expect(9080, "ext", &[], CATCH_ALL);
    let config = mesh.envoy_config();
    for absent in [
        "|ext.default.svc.cluster.local",
        "|reviews-alias.default.svc.cluster.local",
        "example.com",
    ] {
        assert!(!config.contains(absent), "Envoy's config has {absent}");
    }
}

both!(external_name_services_are_aliases, 64);

/// Istio (1.24.4+) accepts the pseudo-headers `:method`, `:scheme`, `:authority`, `:path` and
/// `:status` as header match names (`ValidateHTTPHeaderNameOrJwtClaimRoute` and
/// `pseudoHeaders` in `pkg/config/validation/validation.go`) and passes them to Envoy as they
/// are (`translateHeaderMatch` in `pilot/pkg/networking/core/route/route.go`), where Envoy
/// matches them.
fn pseudo_header_matches(delta: bool, net: u8) {
    let manifests = service(net, "reviews", "default", &[("http", 9080)], &[1])
        + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{headers: {':method': {exact: POST}}}]\n    directResponse: {status: 201}\n  - match: [{headers: {':authority': {exact: reviews.default}}}]\n    directResponse: {status: 202}\n  - match: [{headers: {':path': {regex: '/admin/.*'}}}]\n    directResponse: {status: 203}\n  - match: [{headers: {':scheme': {exact: http}, x-probe: {exact: '1'}}}]\n    directResponse: {status: 204}\n  - match: [{withoutHeaders: {':method': {exact: GET}}}]\n    directResponse: {status: 205}\n  - route: [{destination: {host: reviews}}]\n";
    let Some(mesh) = Mesh::start(net, delta, &manifests, &[(1, 9080, "reviews")]) else {
        return;
    };
    mesh.expect_request(9080, "POST", "reviews", "/", &[], "status 201");
    mesh.expect_request(9080, "GET", "reviews.default", "/", &[], "status 202");
    mesh.expect_request(9080, "GET", "reviews", "/admin/users", &[], "status 203");
    mesh.expect_request(
        9080,
        "GET",
        "reviews",
        "/",
        &[("x-probe", "1")],
        "status 204",
    );
    mesh.expect_request(9080, "PUT", "reviews", "/", &[], "status 205");
    mesh.expect_request(9080, "GET", "reviews", "/", &[], "reviews");
}

both!(pseudo_header_matches, 66);

/// With a DestinationRule's `consistentHash.useSourceIp`, Istio sets the TCP proxy's
/// `hash_policy` to the source IP (`maybeSetHashPolicy` in
/// `pilot/pkg/networking/core/networkfilter.go`), so that every connection from one client
/// reaches one endpoint of the ring-hash cluster.
fn consistent_hashing_for_tcp(delta: bool, net: u8) {
    let manifests = service(net, "store", "default", &[("tcp", 7000)], &[11, 12, 13])
        + "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: store, namespace: default}\nspec:\n  host: store\n  trafficPolicy:\n    loadBalancer:\n      consistentHash: {useSourceIp: true}\n";
    let Some(mesh) = Mesh::start(
        net,
        delta,
        &manifests,
        &[(11, 7000, "s1"), (12, 7000, "s2"), (13, 7000, "s3")],
    ) else {
        return;
    };
    // Every endpoint is healthy in Envoy before counting.
    try_wait_for("three endpoints in Envoy", Duration::from_secs(15), || {
        let clusters = http_get(mesh.proxy.admin, "/clusters")?;
        (clusters
            .lines()
            .filter(|l| l.starts_with("outbound|7000||store") && l.contains("::cx_total::"))
            .count()
            == 3)
            .then_some(())
    })
    .expect("endpoints");
    let mut reached = std::collections::BTreeSet::new();
    for client in 50..56u8 {
        let source = IpAddr::from([127, 0, net, client]);
        let answers: std::collections::BTreeSet<String> = (0..12)
            .map(|_| {
                send(Some(source), mesh.at(7000), "GET", "store", "/", &[])
                    .expect("a connection through Envoy's TCP proxy")
            })
            .collect();
        assert_eq!(
            answers.len(),
            1,
            "every connection from {source} reaches one endpoint: {answers:?}"
        );
        reached.extend(answers);
    }
    assert!(
        reached.iter().all(|r| r.starts_with('s')),
        "answers come from the backends: {reached:?}"
    );
}

both!(consistent_hashing_for_tcp, 68);

/// Istio validates a regex by its length (1024) and Go's parser, and raises Envoy's runtime
/// `re2.max_program_size.error_level` to 32768 in its bootstrap (`extractRuntimeFlags` in
/// `pkg/bootstrap/config.go`) so that Envoy accepts them. `sextant bootstrap` sets the same;
/// this regex's program (about 300 instructions) is over Envoy's default of 100.
fn regexes_over_envoys_default_program_size(delta: bool, net: u8) {
    let manifests = service(net, "reviews", "default", &[("http", 9080)], &[1])
        + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{uri: {regex: '/(a|b|c|d|e|f|g|h|i|j){40}'}}]\n    directResponse: {status: 418}\n  - route: [{destination: {host: reviews}}]\n";
    let Some(mesh) = Mesh::start(net, delta, &manifests, &[(1, 9080, "reviews")]) else {
        return;
    };
    let path = format!("/{}", "abcdefghij".repeat(4));
    mesh.expect_request(9080, "GET", "reviews", &path, &[], "status 418");
    mesh.expect_request(9080, "GET", "reviews", "/", &[], "reviews");
    let entry = syncz(mesh.serve.admin_addr(), &mesh.node).expect("syncz");
    for (url, t) in entry["types"].as_object().expect("types") {
        assert!(t["last_nack"].is_null(), "{url} was rejected: {t}");
    }
}

both!(regexes_over_envoys_default_program_size, 70);
