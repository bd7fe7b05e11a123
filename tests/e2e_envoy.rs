//! End to end with real Envoy 1.40: `sextant serve` on a directory, Envoy from
//! `sextant bootstrap`, small HTTP backends on their own loopback addresses, and traffic sent
//! through Envoy's outbound listener. Every step edits the directory and waits (with a deadline,
//! no sleeps) until Envoy's behaviour follows. Run for both state-of-the-world and delta ADS.

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::PathBuf,
    process::Stdio,
    sync::atomic::Ordering,
    thread,
    time::{Duration, Instant},
};

use sextant_testing::{Backend, Process, Serve, envoy, http_get, request, split, syncz, wait_for};

struct Mesh {
    dir: PathBuf,
    net: u8,
}

impl Mesh {
    fn ip(&self, host: u8) -> String {
        format!("127.0.{}.{host}", self.net)
    }

    fn write(&self, file: &str, text: &str) {
        // Write then rename, as editors and kubectl-like tools do.
        let tmp = self.dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, self.dir.join(file)).expect("rename");
    }

    fn remove(&self, file: &str) {
        std::fs::remove_file(self.dir.join(file)).expect("remove");
    }

    fn base(&self, endpoints: &[(u8, &str)]) {
        let mut pods = String::new();
        let mut eps = String::new();
        for (host, version) in endpoints {
            let ip = self.ip(*host);
            pods.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: reviews-{version}-{host}, namespace: default, labels: {{app: reviews, version: {version}}}}}\nspec: {{containers: [{{name: c, image: x}}]}}\nstatus: {{podIP: {ip}}}\n"
            ));
            eps.push_str(&format!(
                "- addresses: [{ip}]\n  targetRef: {{kind: Pod, name: reviews-{version}-{host}, namespace: default}}\n"
            ));
        }
        self.write("pods.yaml", &pods);
        self.write(
            "mesh.yaml",
            &format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  clusterIP: 10.96.{}.1\n  selector: {{app: reviews}}\n  ports: [{{name: http, port: 9080}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: reviews-1, namespace: default, labels: {{kubernetes.io/service-name: reviews}}}}\naddressType: IPv4\nports: [{{name: http, port: 9080}}]\nendpoints:\n{eps}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews}}\nspec:\n  host: reviews\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n  - {{name: v3, labels: {{version: v3}}}}\n",
                self.net
            ),
        );
    }

    fn virtual_service(&self, http: &str) {
        self.write(
            "vs.yaml",
            &format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n{http}"),
        );
    }
}

/// Envoy's CSDS on the xDS port: the config status of each type of `node`.
fn csds(xds: u16, node: &str) -> Option<BTreeMap<String, i32>> {
    use envoy_types::pb::envoy::{
        service::status::v3::{
            ClientStatusRequest,
            client_status_discovery_service_client::ClientStatusDiscoveryServiceClient,
        },
        r#type::matcher::v3::{NodeMatcher, StringMatcher, string_matcher::MatchPattern},
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        let mut client =
            ClientStatusDiscoveryServiceClient::connect(format!("http://127.0.0.1:{xds}"))
                .await
                .ok()?;
        let request = ClientStatusRequest {
            node_matchers: vec![NodeMatcher {
                node_id: Some(StringMatcher {
                    match_pattern: Some(MatchPattern::Exact(node.to_owned())),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let response = client.fetch_client_status(request).await.ok()?.into_inner();
        let config = response.config.into_iter().next()?;
        Some(
            config
                .generic_xds_configs
                .into_iter()
                .map(|c| (c.type_url, c.config_status))
                .collect(),
        )
    })
}

fn scenario(delta: bool, net: u8) {
    let Some(envoy) = envoy() else { return };
    let dir = std::env::temp_dir().join(format!("sextant-e2e-{}-{net}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mesh = Mesh {
        dir: dir.clone(),
        net,
    };
    let _v1 = Backend::start(&format!("{}:9080", mesh.ip(1)), "v1").expect("backend");
    let _v2 = Backend::start(&format!("{}:9080", mesh.ip(2)), "v2").expect("backend");
    let backend_v3 = Backend::start(&format!("{}:9080", mesh.ip(3)), "v3").expect("backend");
    mesh.base(&[(1, "v1"), (2, "v2"), (3, "v3")]);
    mesh.virtual_service("  - route: [{destination: {host: reviews, subset: v1}}]\n");

    let serve = Serve::new();
    let (xds, admin_addr) = (serve.xds, serve.admin_addr());
    let _sextant = Process(
        serve
            .command(&sextant_testing::sextant_bin())
            .args(["--config-dir", dir.to_str().expect("utf-8")])
            .args(["--debounce-after-ms", "50"])
            .args(["--max-regex-program-size", "1000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sextant serve starts"),
    );
    serve.wait_ready(Duration::from_secs(20)).expect("ready");

    let bind = mesh.ip(100);
    let node = format!(
        "sidecar~{}~client-0.default~default.svc.cluster.local",
        mesh.ip(99)
    );
    let proxy = sextant_testing::Envoy::start(&envoy, &dir, &node, xds, &bind, delta, net);
    let (listener, envoy_admin) = (proxy.listener, proxy.admin);
    // Step 9's regex passes Sextant's limit but not this Envoy's: its runtime lowered to
    // Envoy's own default, below the 32768 of `sextant bootstrap`.
    proxy.set_runtime("re2.max_program_size.error_level", "100");

    // 1. All traffic to v1. On failure, say what each side believes, to debug from CI logs.
    if let Err(e) =
        sextant_testing::try_wait_for("traffic through Envoy", Duration::from_secs(45), || {
            request(listener, "reviews", "/", &[]).filter(|(s, b, _)| *s == 200 && b == "v1")
        })
    {
        let syncz = http_get(admin_addr, "/debug/syncz").unwrap_or_default();
        let stats = http_get(
            envoy_admin,
            "/stats?filter=(cluster_manager|listener_manager|control_plane)",
        )
        .unwrap_or_default();
        let listeners = http_get(envoy_admin, "/listeners").unwrap_or_default();
        panic!(
            "{e}\nsextant /debug/syncz: {syncz}\nenvoy listeners: {listeners}\nenvoy stats:\n{stats}"
        );
    }
    assert_eq!(split(listener, 20), BTreeMap::from([("v1".to_owned(), 20)]));

    // 2. Envoy shows Istio's names; every type is ACKed.
    let dump = wait_for("config_dump", Duration::from_secs(5), || {
        http_get(envoy_admin, "/config_dump?include_eds")
    });
    for name in [
        "outbound|9080|v1|reviews.default.svc.cluster.local",
        "reviews.default.svc.cluster.local:9080",
        &format!("{bind}_9080"),
    ] {
        assert!(dump.contains(name), "config_dump lacks {name}");
    }
    wait_for(
        "every type ACKed in /debug/syncz",
        Duration::from_secs(10),
        || {
            let types = syncz(admin_addr, &node)?["types"].as_object()?.clone();
            (types.len() == 4
                && types.values().all(|t| {
                    t["acked_version"] == t["sent_version"] && !t["sent_version"].is_null()
                }))
            .then_some(())
        },
    );

    // ... and so does Envoy's CSDS on the xDS port: every type SYNCED.
    wait_for("every type SYNCED in CSDS", Duration::from_secs(10), || {
        let types = csds(xds, &node)?;
        let synced = envoy_types::pb::envoy::service::status::v3::ConfigStatus::Synced as i32;
        (types.len() == 4 && types.values().all(|s| *s == synced)).then_some(())
    });

    // 3. Editing the VirtualService shifts traffic: 50/50 between v1 and v3.
    mesh.virtual_service("  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 50}\n    - {destination: {host: reviews, subset: v3}, weight: 50}\n");
    wait_for("v3 receives traffic", Duration::from_secs(10), || {
        request(listener, "reviews", "/", &[]).filter(|(_, b, _)| b == "v3")
    });
    sextant_testing::assert_even_split(listener, "v1", "v3");

    // 4. Header match routing.
    mesh.virtual_service("  - match: [{headers: {end-user: {exact: jason}}}]\n    route: [{destination: {host: reviews, subset: v2}}]\n  - route: [{destination: {host: reviews, subset: v1}}]\n");
    wait_for("header routing", Duration::from_secs(10), || {
        request(listener, "reviews", "/", &[("end-user", "jason")]).filter(|(_, b, _)| b == "v2")
    });
    assert_eq!(
        request(listener, "reviews", "/", &[]).expect("request").1,
        "v1"
    );

    // 5. Fault abort, redirect and direct response.
    mesh.virtual_service("  - match: [{uri: {prefix: /old}}]\n    redirect: {uri: /new}\n  - match: [{uri: {exact: /health}}]\n    directResponse: {status: 200, body: {string: healthy}}\n  - fault: {abort: {httpStatus: 418, percentage: {value: 100}}}\n    route: [{destination: {host: reviews, subset: v1}}]\n");
    wait_for("fault abort", Duration::from_secs(10), || {
        request(listener, "reviews", "/", &[]).filter(|(s, _, _)| *s == 418)
    });
    let (status, _, head) = request(listener, "reviews", "/old", &[]).expect("redirect");
    assert_eq!(status, 301);
    assert!(
        head.to_ascii_lowercase()
            .contains("location: http://reviews/new"),
        "{head}"
    );
    assert_eq!(
        request(listener, "reviews", "/health", &[]).map(|r| (r.0, r.1)),
        Some((200, "healthy".to_owned()))
    );

    // 6. Retries against a failing backend: v3 answers 503; retries on 503 go to other hosts
    // of the cluster (previous hosts are avoided), so no request fails.
    backend_v3.fail.store(true, Ordering::Relaxed);
    mesh.virtual_service(
        "  - retries: {attempts: 5, retryOn: '503'}\n    route: [{destination: {host: reviews}}]\n",
    );
    wait_for("retry policy applied", Duration::from_secs(10), || {
        http_get(envoy_admin, "/config_dump").filter(|d| d.contains("retriable_status_codes"))
    });
    let counts = split(listener, 40);
    assert_eq!(
        counts.get("v1").copied().unwrap_or(0) + counts.get("v2").copied().unwrap_or(0),
        40,
        "every failed attempt is retried elsewhere: {counts:?}"
    );
    backend_v3.fail.store(false, Ordering::Relaxed);

    // 7. A route timeout: the backend that never answers is cut off.
    let _slow = {
        let l = TcpListener::bind(format!("{}:9080", mesh.ip(4))).expect("bind slow");
        thread::spawn(move || {
            let mut held = Vec::new();
            for c in l.incoming().take(64).flatten() {
                held.push(c);
            }
        })
    };
    mesh.base(&[(1, "v1"), (2, "v2"), (3, "v3"), (4, "v4")]);
    mesh.virtual_service(
        "  - timeout: 300ms\n    route: [{destination: {host: reviews, subset: v4}}]\n",
    );
    let mesh_dr = std::fs::read_to_string(dir.join("mesh.yaml")).expect("mesh");
    mesh.write(
        "mesh.yaml",
        &mesh_dr.replace(
            "  - {name: v3, labels: {version: v3}}\n",
            "  - {name: v3, labels: {version: v3}}\n  - {name: v4, labels: {version: v4}}\n",
        ),
    );
    wait_for("route timeout", Duration::from_secs(10), || {
        let started = Instant::now();
        request(listener, "reviews", "/", &[])
            .filter(|(s, _, _)| *s == 504 && started.elapsed() < Duration::from_secs(2))
    });

    // 8. Endpoints removed and added are seen by Envoy.
    mesh.virtual_service("  - route: [{destination: {host: reviews, subset: v2}}]\n");
    wait_for("v2 routing", Duration::from_secs(10), || {
        request(listener, "reviews", "/", &[]).filter(|(_, b, _)| b == "v2")
    });
    mesh.base(&[(1, "v1"), (3, "v3")]);
    wait_for("v2 endpoint removed", Duration::from_secs(10), || {
        request(listener, "reviews", "/", &[]).filter(|(s, _, _)| *s == 503)
    });
    mesh.base(&[(1, "v1"), (2, "v2"), (3, "v3")]);
    wait_for("v2 endpoint added", Duration::from_secs(10), || {
        request(listener, "reviews", "/", &[]).filter(|(_, b, _)| b == "v2")
    });

    // 9. A resource Envoy rejects: the NACK is recorded, the VirtualService is held at its
    // last accepted content, other resources keep updating.
    mesh.virtual_service("  - match: [{uri: {regex: '(a|b|c|d|e|f|g|h|i|j){40}'}}]\n    route: [{destination: {host: reviews, subset: v3}}]\n  - route: [{destination: {host: reviews, subset: v2}}]\n");
    let nack = wait_for("RDS NACK in /debug/syncz", Duration::from_secs(10), || {
        let n = syncz(admin_addr, &node)?["types"]["type.googleapis.com/envoy.config.route.v3.RouteConfiguration"]["last_nack"].clone();
        (!n.is_null()).then_some(n)
    });
    assert!(
        nack["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{nack}"
    );
    let metrics = http_get(admin_addr, "/metrics").expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sextant_xds_nacks_total{") && l.contains("RouteConfiguration")),
        "{metrics}"
    );
    let converged: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sextant_xds_convergence_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(converged >= 1.0, "convergence is measured: {metrics}");
    assert!(metrics.contains("sextant_xds_pushes_total{"), "{metrics}");
    for url in [
        "Cluster",
        "ClusterLoadAssignment",
        "Listener",
        "RouteConfiguration",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("sextant_xds_push_seconds_count{")
                    && l.contains(&format!("v3.{url}\""))),
            "push time for {url}: {metrics}"
        );
    }
    assert_eq!(
        request(listener, "reviews", "/", &[]).expect("request").1,
        "v2",
        "the last accepted routes stay"
    );
    mesh.base(&[(1, "v1"), (2, "v2")]);
    wait_for("endpoints still update", Duration::from_secs(10), || {
        http_get(envoy_admin, "/clusters").filter(|c| !c.contains(&format!("{}:9080", mesh.ip(3))))
    });

    // 10. Removing the VirtualService restores default routing (all subsets' endpoints).
    mesh.remove("vs.yaml");
    wait_for(
        "default routing reaches v1",
        Duration::from_secs(10),
        || split(listener, 10).contains_key("v1").then_some(()),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn traffic_follows_configuration_over_state_of_the_world_ads() {
    scenario(false, 31);
}

#[test]
fn traffic_follows_configuration_over_delta_ads() {
    scenario(true, 32);
}
