//! `sextant explain` against real Envoy: Istio's bookinfo routing samples (subsets, a header
//! match, weights, faults) served by `sextant serve` to an Envoy from `sextant bootstrap`. For
//! each request, `explain` offline on the directory and live against the running server name
//! the same cluster, and that cluster's `upstream_rq_total` in Envoy's own `/stats` grows by
//! the request sent (or, for an abort, Envoy answers the abort explain shows).
//!
//! Every mesh runs on its own loopback network `127.0.N.0/24` (N from 150): reviews v1, v2, v3
//! at `.1`–`.3`, ratings v1 at `.4`, the Envoy's listeners bound to `.100`.

use std::{collections::BTreeMap, path::PathBuf, process::Command, time::Duration};

use serde_json::Value;
use sextant_testing::{
    Backend, Envoy, Process, Serve, envoy, http_get, repo, request, run, sextant_bin, syncz,
    try_wait_for,
};

const JASON: &[(&str, &str)] = &[("end-user", "jason")];

struct Mesh {
    dir: PathBuf,
    net: u8,
    node: String,
    serve: Serve,
    proxy: Envoy,
    _sextant: Process,
    _backends: Vec<Backend>,
}

/// Services reviews (v1, v2, v3) and ratings (v1), their Pods and endpoints on `127.0.N.*`.
fn services(net: u8) -> String {
    let mut text = String::new();
    for (service, versions) in [
        ("reviews", &[(1, "v1"), (2, "v2"), (3, "v3")][..]),
        ("ratings", &[(4, "v1")][..]),
    ] {
        let mut endpoints = String::new();
        for (host, version) in versions {
            let ip = format!("127.0.{net}.{host}");
            text.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {service}-{version}, namespace: default, labels: {{app: {service}, version: {version}}}}}\nspec: {{containers: [{{name: c, image: x}}]}}\nstatus: {{podIP: {ip}}}\n"
            ));
            endpoints.push_str(&format!(
                "- addresses: [{ip}]\n  targetRef: {{kind: Pod, name: {service}-{version}, namespace: default}}\n"
            ));
        }
        let vip = versions[0].0;
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {service}, namespace: default}}\nspec:\n  clusterIP: 10.96.{net}.{vip}\n  selector: {{app: {service}}}\n  ports: [{{name: http, port: 9080}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-1, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{name: http, port: 9080}}]\nendpoints:\n{endpoints}"
        ));
    }
    text
}

impl Mesh {
    /// Sextant on a directory with the services, Istio's `destination-rule-all.yaml` and
    /// `samples` (paths under `tests/fixtures/`), and one Envoy bound to `127.0.N.100`.
    fn start(net: u8, samples: &[&str]) -> Option<Mesh> {
        let envoy = envoy()?;
        let dir =
            std::env::temp_dir().join(format!("sextant-explain-{}-{net}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("services.yaml"), services(net)).expect("write services");
        let bookinfo = "tests/fixtures/istio/samples/bookinfo/networking";
        for sample in [
            &format!("{bookinfo}/destination-rule-all.yaml"),
            &samples.join(","),
        ] {
            for file in sample.split(',').filter(|f| !f.is_empty()) {
                let name = file.rsplit('/').next().expect("file name");
                std::fs::copy(repo(file), dir.join(name)).expect("copy sample");
            }
        }
        let backends = [
            (1, "reviews-v1"),
            (2, "reviews-v2"),
            (3, "reviews-v3"),
            (4, "ratings-v1"),
        ]
        .iter()
        .map(|(host, name)| {
            Backend::start(&format!("127.0.{net}.{host}:9080"), name).expect("backend")
        })
        .collect();
        let serve = Serve::new();
        let log = dir
            .join("..")
            .join(format!("sextant-explain-{}-{net}.log", std::process::id()));
        let sextant = serve.start_dir(&dir, &log, &["--debounce-after-ms", "50"]);
        let node =
            format!("sidecar~127.0.{net}.99~productpage-0.default~default.svc.cluster.local");
        let proxy = Envoy::start(
            &envoy,
            &dir,
            &node,
            serve.xds,
            &format!("127.0.{net}.100"),
            false,
            net,
        );
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

    fn wait_acked(&self) {
        let admin = self.serve.admin_addr();
        let acked = try_wait_for("every type ACKed", Duration::from_secs(45), || {
            let types = syncz(admin, &self.node)?["types"].as_object()?.clone();
            (types.len() >= 4
                && types.values().all(|t| {
                    t["acked_version"] == t["sent_version"] && !t["sent_version"].is_null()
                }))
            .then_some(())
        });
        if let Err(e) = acked {
            panic!(
                "{e}\n/debug/syncz: {}",
                http_get(admin, "/debug/syncz").unwrap_or_default()
            );
        }
    }

    /// `sextant explain` offline (on the directory, with the metadata `bootstrap` gave the
    /// Envoy) and live (against the server): both answers, as JSON.
    fn explain(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> [Value; 2] {
        let request = |cmd: &mut Command| {
            cmd.args([
                "explain", "--proxy", &self.node, "--host", host, "--port", "9080",
            ])
            .args(["--path", path, "-o", "json"]);
            for (k, v) in headers {
                cmd.args(["--header", &format!("{k}:{v}")]);
            }
        };
        let mut offline = Command::new(sextant_bin());
        request(&mut offline);
        offline
            .arg("--config-dir")
            .arg(&self.dir)
            .args(["--meta", "INTERCEPTION_MODE=NONE"])
            .args([
                "--meta",
                &format!("SEXTANT_BIND_ADDRESS=127.0.{}.100", self.net),
            ]);
        let mut live = Command::new(sextant_bin());
        request(&mut live);
        live.args(["--server", &self.serve.admin_addr().to_string()]);
        [&mut offline, &mut live]
            .map(|cmd| serde_json::from_str(&run(cmd)).expect("explain's JSON"))
    }

    /// Envoy's `upstream_rq_total` per cluster.
    fn upstream_requests(&self) -> BTreeMap<String, u64> {
        let stats =
            http_get(self.proxy.admin, "/stats?filter=upstream_rq_total$").expect("Envoy's /stats");
        stats
            .lines()
            .filter_map(|l| {
                let (name, n) = l.split_once(": ")?;
                let cluster = name
                    .strip_prefix("cluster.")?
                    .strip_suffix(".upstream_rq_total")?;
                // Outbound clusters' stat names end in `;` (their `alt_stat_name`, as Istio's).
                let cluster = cluster.trim_end_matches(';');
                Some((cluster.to_owned(), n.trim().parse().ok()?))
            })
            .collect()
    }

    /// Sends `GET path` through Envoy until it is routed (the answer `ready` accepts), as the
    /// listener may still be warming; the answer.
    fn send(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let answer = request(self.proxy.listener, host, path, headers)
            .map(|(status, body, _)| (status, body));
        answer.unwrap_or_else(|| panic!("GET {host}{path} through Envoy: no answer"))
    }

    /// Waits until Envoy routes `host` (any answer other than 404/503 from no route).
    fn wait_routed(&self, host: &str, path: &str) {
        let routed = try_wait_for(
            &format!("Envoy routes {host}"),
            Duration::from_secs(20),
            || request(self.proxy.listener, host, path, &[]).filter(|(s, _, _)| *s == 200),
        );
        if let Err(e) = routed {
            let routes = http_get(
                self.proxy.admin,
                "/config_dump?resource=dynamic_route_configs",
            );
            panic!("{e}\nEnvoy's routes: {}", routes.unwrap_or_default());
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The clusters an explanation lists with a weight above 0 (or none given), sorted.
fn clusters(e: &Value) -> Vec<String> {
    let mut names: Vec<String> = e["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["weight"].as_u64().is_none_or(|w| w > 0))
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// Offline and live name the same clusters; those clusters.
fn agreed(answers: &[Value; 2]) -> Vec<String> {
    let [offline, live] = answers;
    assert_eq!(
        clusters(offline),
        clusters(live),
        "offline: {offline:#}\nlive: {live:#}"
    );
    assert_eq!(
        offline["route"], live["route"],
        "offline and live name different routes"
    );
    clusters(offline)
}

/// Sends one request and checks that it went to `cluster` by Envoy's own counters.
fn counted(mesh: &Mesh, cluster: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let before = mesh.upstream_requests();
    let (status, body) = mesh.send(host, path, headers);
    assert_eq!(status, 200, "{body}");
    let after = mesh.upstream_requests();
    let grew: Vec<(&String, u64)> = after
        .iter()
        .filter_map(|(name, n)| {
            let was = before.get(name).copied().unwrap_or(0);
            (*n > was).then(|| (name, n - was))
        })
        .collect();
    assert_eq!(
        grew,
        [(&cluster.to_owned(), 1)],
        "Envoy's upstream requests grew elsewhere"
    );
    body
}

#[test]
fn a_header_match_goes_to_the_subset_explain_names() {
    let Some(mesh) = Mesh::start(
        150,
        &[
            "tests/fixtures/istio/samples/bookinfo/networking/virtual-service-reviews-jason-v2-v3.yaml",
        ],
    ) else {
        return;
    };
    mesh.wait_routed("reviews:9080", "/reviews/0");
    let answers = mesh.explain("reviews:9080", "/reviews/0", JASON);
    assert_eq!(
        answers[1]["configuration"],
        "what the connected proxy is sent"
    );
    let route = &answers[0]["route"];
    assert_eq!(route["virtual_service"], "default/reviews");
    assert_eq!(
        (route["rule"].as_u64(), route["rule_match"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(answers[0]["clusters"][0]["subset"], "v2");
    assert_eq!(
        answers[0]["clusters"][0]["destination_rule"],
        "default/reviews"
    );
    let cluster = "outbound|9080|v2|reviews.default.svc.cluster.local";
    assert_eq!(agreed(&answers), [cluster]);
    assert_eq!(
        counted(&mesh, cluster, "reviews:9080", "/reviews/0", JASON),
        "reviews-v2"
    );
}

#[test]
fn without_the_header_the_next_rule_sends_to_v3() {
    let Some(mesh) = Mesh::start(
        151,
        &[
            "tests/fixtures/istio/samples/bookinfo/networking/virtual-service-reviews-jason-v2-v3.yaml",
        ],
    ) else {
        return;
    };
    mesh.wait_routed("reviews:9080", "/reviews/0");
    let answers = mesh.explain("reviews:9080", "/reviews/0", &[]);
    assert_eq!(answers[1]["route"]["rule"].as_u64(), Some(1));
    assert!(answers[1]["route"]["rule_match"].is_null());
    let cluster = "outbound|9080|v3|reviews.default.svc.cluster.local";
    assert_eq!(agreed(&answers), [cluster]);
    assert_eq!(
        counted(&mesh, cluster, "reviews:9080", "/reviews/0", &[]),
        "reviews-v3"
    );
}

#[test]
fn a_weighted_route_goes_to_one_of_the_clusters_explain_lists() {
    let Some(mesh) = Mesh::start(
        152,
        &["tests/fixtures/istio/samples/bookinfo/networking/virtual-service-reviews-80-20.yaml"],
    ) else {
        return;
    };
    mesh.wait_routed("reviews", "/");
    let answers = mesh.explain("reviews", "/", &[]);
    let listed = agreed(&answers);
    assert_eq!(
        listed,
        [
            "outbound|9080|v1|reviews.default.svc.cluster.local",
            "outbound|9080|v2|reviews.default.svc.cluster.local"
        ]
    );
    let weights: Vec<u64> = answers[0]["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .filter_map(|c| c["weight"].as_u64())
        .collect();
    assert_eq!(weights, [80, 20]);
    let before = mesh.upstream_requests();
    let (status, body) = mesh.send("reviews", "/", &[]);
    assert_eq!(status, 200);
    let version = body
        .strip_prefix("reviews-")
        .expect("a reviews backend answered");
    let used = format!("outbound|9080|{version}|reviews.default.svc.cluster.local");
    assert!(
        listed.contains(&used),
        "{used} answered, explain listed {listed:?}"
    );
    let after = mesh.upstream_requests();
    let grown =
        |c: &String| after.get(c).copied().unwrap_or(0) - before.get(c).copied().unwrap_or(0);
    assert_eq!(listed.iter().map(grown).sum::<u64>(), 1);
    assert_eq!(grown(&used), 1);
}

#[test]
fn an_abort_explain_shows_is_the_answer_envoy_gives() {
    let Some(mesh) = Mesh::start(
        153,
        &[
            "tests/fixtures/istio/samples/bookinfo/networking/virtual-service-ratings-test-abort.yaml",
        ],
    ) else {
        return;
    };
    mesh.wait_routed("ratings:9080", "/ratings/0");
    let answers = mesh.explain("ratings:9080", "/ratings/0", JASON);
    let cluster = "outbound|9080|v1|ratings.default.svc.cluster.local";
    assert_eq!(agreed(&answers), [cluster]);
    assert_eq!(
        answers[1]["route"]["fault"]["abort"],
        "abort http 500 for 100% of requests"
    );
    let before = mesh.upstream_requests();
    let (status, body) = mesh.send("ratings:9080", "/ratings/0", JASON);
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        mesh.upstream_requests().get(cluster),
        before.get(cluster),
        "an abort sends nothing upstream"
    );
    // Everyone else reaches the cluster the same explanation names.
    let answers = mesh.explain("ratings:9080", "/ratings/0", &[]);
    assert_eq!(agreed(&answers), [cluster]);
    assert!(answers[0]["route"]["fault"].is_null());
    assert_eq!(
        counted(&mesh, cluster, "ratings:9080", "/ratings/0", &[]),
        "ratings-v1"
    );
}

#[test]
fn a_delayed_request_reaches_the_cluster_explain_names() {
    let Some(mesh) = Mesh::start(154, &["tests/fixtures/explain/ratings-delay.yaml"]) else {
        return;
    };
    mesh.wait_routed("ratings:9080", "/ratings/0");
    let answers = mesh.explain("ratings:9080", "/ratings/0", JASON);
    let cluster = "outbound|9080|v1|ratings.default.svc.cluster.local";
    assert_eq!(agreed(&answers), [cluster]);
    assert_eq!(
        answers[0]["route"]["fault"]["delay"],
        "delay 1s for 100% of requests"
    );
    assert_eq!(
        counted(&mesh, cluster, "ratings:9080", "/ratings/0", JASON),
        "ratings-v1"
    );
}

#[test]
fn a_host_no_service_declares_gets_the_direct_response_explain_shows() {
    let Some(mesh) = Mesh::start(
        155,
        &["tests/fixtures/istio/samples/bookinfo/networking/virtual-service-reviews-v3.yaml"],
    ) else {
        return;
    };
    mesh.wait_routed("reviews", "/");
    let answers = mesh.explain("nowhere.example.org", "/", &[]);
    assert!(agreed(&answers).is_empty(), "no cluster: {:#}", answers[0]);
    let action = answers[0]["route"]["action"].as_str().unwrap_or_default();
    let status: u16 = action
        .strip_prefix("direct response ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a direct response: {:#}", answers[0]));
    assert_eq!(mesh.send("nowhere.example.org", "/", &[]).0, status);
}

#[test]
fn the_table_names_each_step_and_the_live_endpoint_refuses_unbounded_queries() {
    let Some(mesh) = Mesh::start(
        156,
        &[
            "tests/fixtures/istio/samples/bookinfo/networking/virtual-service-reviews-jason-v2-v3.yaml",
        ],
    ) else {
        return;
    };
    mesh.wait_routed("reviews", "/");
    let table = run(Command::new(sextant_bin())
        .args([
            "explain", "--proxy", &mesh.node, "--host", "reviews", "--port", "9080",
        ])
        .args(["--header", "end-user:jason"])
        .args(["--server", &mesh.serve.admin_addr().to_string()]));
    for step in [
        "LISTENER      127.0.156.100_9080",
        "VIRTUAL HOST",
        "VirtualService default/reviews rule 0 match 0",
        "CLUSTER       outbound|9080|v2|reviews.default.svc.cluster.local",
        "DestinationRule default/reviews subset v2",
        "  ENDPOINT    127.0.156.2:9080",
        "OUTCOME: routed to outbound|9080|v2|reviews.default.svc.cluster.local",
    ] {
        assert!(table.contains(step), "{step:?} missing from:\n{table}");
    }
    let admin = mesh.serve.admin_addr();
    let status = |path: &str| request(admin, "localhost", path, &[]).map(|(s, _, _)| s);
    let base = format!(
        "/debug/explain?proxyID={}&host=reviews&port=9080",
        mesh.node
    );
    assert_eq!(status(&base), Some(200));
    assert_eq!(status("/debug/explain?host=reviews&port=9080"), Some(400));
    assert_eq!(
        status(&format!("{base}&path=/{}", "a".repeat(9000))),
        Some(414)
    );
    let headers: String = (0..40).map(|i| format!("&header=h{i}:v")).collect();
    assert_eq!(status(&format!("{base}{headers}")), Some(400));
}
