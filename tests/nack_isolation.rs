//! NACK isolation with real Envoy: one team's VirtualService that Envoy rejects must not
//! hold back another team's edits to the same port's routes. Sextant holds the rejected
//! object at its last accepted content, marks it in `/debug/syncz` with Envoy's error, and
//! releases it when it changes again. Regexes whose RE2 program is too large for Envoy are
//! refused ahead, by validation.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use sextant_testing::{
    Backend, Process, Serve, envoy, http_get, kubectl, repo, request, syncz, wait_for,
};

#[path = "kube_cluster.rs"]
mod kube_cluster;
use kube_cluster::Cluster;

/// A directory mesh on loopback net `127.0.<net>.0/24`: `reviews` (v1, v2) and `ratings`,
/// both on port 9080, so their routes share one RouteConfiguration.
struct Mesh {
    dir: PathBuf,
    net: u8,
    _backends: Vec<Backend>,
}

impl Mesh {
    fn new(net: u8) -> Mesh {
        let dir = std::env::temp_dir().join(format!("sextant-nack-{}-{net}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ip = |h: u8| format!("127.0.{net}.{h}");
        let backends = [(1, "v1"), (2, "v2"), (3, "ratings")]
            .iter()
            .map(|(h, name)| Backend::start(&format!("{}:9080", ip(*h)), name).expect("backend"))
            .collect();
        let mesh = Mesh {
            dir,
            net,
            _backends: backends,
        };
        let mut yaml = String::new();
        for (svc, pods) in [
            ("reviews", &[(1, "v1"), (2, "v2")][..]),
            ("ratings", &[(3, "v1")]),
        ] {
            let n = if svc == "reviews" { 1 } else { 2 };
            let mut eps = String::new();
            for (h, version) in pods {
                let name = format!("{svc}-{version}-{h}");
                yaml.push_str(&format!("---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{app: {svc}, version: {version}}}}}\nspec: {{containers: [{{name: c, image: x}}]}}\nstatus: {{podIP: {}}}\n", ip(*h)));
                eps.push_str(&format!("- addresses: [{}]\n  targetRef: {{kind: Pod, name: {name}, namespace: default}}\n", ip(*h)));
            }
            yaml.push_str(&format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: {svc}, namespace: default}}\nspec:\n  clusterIP: 10.96.{net}.{n}\n  selector: {{app: {svc}}}\n  ports: [{{name: http, port: 9080}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {svc}-1, namespace: default, labels: {{kubernetes.io/service-name: {svc}}}}}\naddressType: IPv4\nports: [{{name: http, port: 9080}}]\nendpoints:\n{eps}"));
        }
        yaml.push_str("---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n");
        mesh.write("mesh.yaml", &yaml);
        mesh
    }

    fn write(&self, file: &str, text: &str) {
        let tmp = self.dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, self.dir.join(file)).expect("rename");
    }

    /// Team A's VirtualService: all of `reviews` to `subset`.
    fn reviews(&self, subset: &str) {
        self.write(
            "team-a.yaml",
            &format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  hosts: [reviews]\n  http:\n  - route: [{{destination: {{host: reviews, subset: {subset}}}}}]\n"),
        );
    }

    /// Team B's VirtualService: requests whose path matches `regex` get 418, the rest go to
    /// `ratings`.
    fn ratings(&self, regex: &str) {
        self.write(
            "team-b.yaml",
            &format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: ratings, namespace: default}}\nspec:\n  hosts: [ratings]\n  http:\n  - match: [{{uri: {{regex: '{regex}'}}}}]\n    directResponse: {{status: 418}}\n  - route: [{{destination: {{host: ratings}}}}]\n"),
        );
    }

    fn node(&self) -> String {
        format!(
            "sidecar~127.0.{}.99~client-0.default~default.svc.cluster.local",
            self.net
        )
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `sextant serve` on the mesh's directory with `args`, and Envoy (state of the world or
/// delta) once ratings answer through it.
fn start(
    envoy: &Path,
    mesh: &Mesh,
    args: &[&str],
    delta: bool,
) -> (Serve, Process, sextant_testing::Envoy) {
    let serve = Serve::new();
    let sextant = Process(
        serve
            .command(&sextant_testing::sextant_bin())
            .args(["--config-dir", mesh.dir.to_str().expect("utf-8")])
            .args(["--debounce-after-ms", "50", "--hold-on-plaintext-nacks"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sextant serve starts"),
    );
    serve.wait_ready(Duration::from_secs(20)).expect("ready");
    let bind = format!("127.0.{}.100", mesh.net);
    let proxy = sextant_testing::Envoy::start(
        envoy,
        &mesh.dir,
        &mesh.node(),
        serve.xds,
        &bind,
        delta,
        mesh.net,
    );
    // A fleet of stricter Envoys: their regex limit at Envoy's own default, below the 32768
    // of `sextant bootstrap`, so that regexes Sextant accepts can be rejected.
    proxy.set_runtime("re2.max_program_size.error_level", "100");
    if let Err(e) =
        sextant_testing::try_wait_for("traffic through Envoy", Duration::from_secs(45), || {
            answer(proxy.listener, "reviews", "/").filter(|b| b == "v1")
        })
    {
        let syncz = http_get(serve.admin_addr(), "/debug/syncz").unwrap_or_default();
        panic!("{e}\nsextant /debug/syncz: {syncz}");
    }
    (serve, sextant, proxy)
}

/// The body (or `status N`) of a request through Envoy.
fn answer(listener: std::net::SocketAddr, host: &str, path: &str) -> Option<String> {
    let (status, body, _) = request(listener, host, path, &[])?;
    Some(if status == 200 {
        body
    } else {
        format!("status {status}")
    })
}

/// A regex whose RE2 program (about 156 instructions) passes Envoy's default limit of 100.
const TOO_BIG: &str = "/x{150}";

fn other_teams_edits_flow_while_a_rejected_virtual_service_is_held(delta: bool, net: u8) {
    let Some(envoy) = envoy() else { return };
    let mesh = Mesh::new(net);
    mesh.reviews("v1");
    mesh.ratings("/teapot");
    // Sextant's own limit above Envoy's: a fleet whose Envoys run a stricter limit than the
    // control plane checks, so that the regex reaches Envoy.
    let (serve, _sextant, proxy) =
        start(&envoy, &mesh, &["--max-regex-program-size", "1000"], delta);
    let (admin, listener, node) = (serve.admin_addr(), proxy.listener, mesh.node());
    assert_eq!(
        answer(listener, "ratings", "/teapot").as_deref(),
        Some("status 418")
    );

    // Team B's regex passes validation but Envoy rejects the RouteConfiguration.
    mesh.ratings(TOO_BIG);
    let held = wait_for(
        "ratings held in /debug/syncz",
        Duration::from_secs(20),
        || {
            let entry = syncz(admin, &node)?;
            entry["held"]
                .as_array()?
                .iter()
                .find(|h| h["name"] == "ratings")
                .cloned()
        },
    );
    assert_eq!(held["kind"], "VirtualService");
    assert_eq!(held["namespace"], "default");
    let error = held["error"].as_str().expect("error text");
    assert!(error.contains("program size"), "Envoy's error: {error}");
    assert!(
        held["served"].as_str().expect("served").contains("version"),
        "{held}"
    );
    let routes = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    let nack = syncz(admin, &node).expect("syncz")["types"][routes]["last_nack"].clone();
    assert!(
        nack["error"]
            .as_str()
            .is_some_and(|e| e.contains("program size")),
        "{nack}"
    );

    // Team A's edit reaches Envoy regardless, and ratings keep their accepted routes.
    mesh.reviews("v2");
    wait_for(
        "team A's edit reaches Envoy",
        Duration::from_secs(20),
        || answer(listener, "reviews", "/").filter(|b| b == "v2"),
    );
    assert_eq!(
        answer(listener, "ratings", "/teapot").as_deref(),
        Some("status 418")
    );
    assert_eq!(answer(listener, "ratings", "/").as_deref(), Some("ratings"));
    wait_for("routes ACKed", Duration::from_secs(10), || {
        let t = syncz(admin, &node)?["types"][routes].clone();
        (t["acked_version"] == t["sent_version"]).then_some(())
    });

    // Team B's fix releases the hold and reaches Envoy.
    mesh.ratings("/coffee");
    wait_for(
        "team B's fix reaches Envoy",
        Duration::from_secs(20),
        || answer(listener, "ratings", "/coffee").filter(|b| b == "status 418"),
    );
    let entry = syncz(admin, &node).expect("syncz");
    assert_eq!(entry["held"], serde_json::json!([]), "{entry}");
}

#[test]
fn other_teams_edits_flow_while_a_rejected_virtual_service_is_held_sotw() {
    other_teams_edits_flow_while_a_rejected_virtual_service_is_held(false, 41);
}

#[test]
fn other_teams_edits_flow_while_a_rejected_virtual_service_is_held_delta() {
    other_teams_edits_flow_while_a_rejected_virtual_service_is_held(true, 42);
}

#[test]
fn a_regex_too_large_for_envoy_is_refused_by_validation_before_it_reaches_envoy() {
    let Some(envoy) = envoy() else { return };
    let mesh = Mesh::new(43);
    mesh.reviews("v1");
    mesh.ratings("/teapot");
    // The operator tells Sextant the fleet's limit (Envoy's default, which `start` sets).
    let (serve, _sextant, proxy) =
        start(&envoy, &mesh, &["--max-regex-program-size", "100"], false);
    let (admin, listener, node) = (serve.admin_addr(), proxy.listener, mesh.node());

    mesh.ratings(TOO_BIG);
    let errors = wait_for("ratings refused", Duration::from_secs(20), || {
        let configz: serde_json::Value =
            serde_json::from_str(&http_get(admin, "/debug/configz")?).ok()?;
        configz["invalid"]
            .as_array()?
            .iter()
            .find(|i| i["object"] == "VirtualService default/ratings")
            .map(|i| i["errors"].to_string())
    });
    assert!(
        errors.contains("RE2 program has 155 instructions"),
        "{errors}"
    );
    assert!(errors.contains("limit of 100"), "{errors}");

    // Team A's edit flows, and Envoy never saw anything to reject.
    mesh.reviews("v2");
    wait_for(
        "team A's edit reaches Envoy",
        Duration::from_secs(20),
        || answer(listener, "reviews", "/").filter(|b| b == "v2"),
    );
    let entry = syncz(admin, &node).expect("syncz");
    for (url, t) in entry["types"].as_object().expect("types") {
        assert!(t["last_nack"].is_null(), "{url} was rejected: {t}");
    }
    assert_eq!(entry["held"], serde_json::json!([]));
}

/// Whether Envoy (`--mode validate`, with `runtime` in its bootstrap) accepts a route matching
/// `regex`.
fn envoy_accepts(envoy: &Path, dir: &Path, regex: &str, runtime: &str) -> bool {
    let bootstrap = dir.join("regex.yaml");
    std::fs::write(
        &bootstrap,
        format!(
            r#"{runtime}
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 10000}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: x
          http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]
          route_config:
            virtual_hosts:
            - name: v
              domains: ["*"]
              routes:
              - match: {{safe_regex: {{regex: '{regex}'}}}}
                direct_response: {{status: 200}}
"#
        ),
    )
    .expect("write bootstrap");
    std::process::Command::new(envoy)
        .args(["--mode", "validate", "-c"])
        .arg(&bootstrap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("envoy runs")
        .success()
}

/// Whether `sextant validate` accepts a VirtualService matching `regex`.
fn sextant_accepts(dir: &Path, regex: &str, args: &[&str]) -> bool {
    let file = dir.join("vs.yaml");
    std::fs::write(
        &file,
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r, namespace: default}}\nspec:\n  hosts: [r]\n  http:\n  - match: [{{uri: {{regex: '{regex}'}}}}]\n    route: [{{destination: {{host: r}}}}]\n"),
    )
    .expect("write");
    std::process::Command::new(sextant_testing::sextant_bin())
        .args(["validate", "-f"])
        .arg(&file)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("sextant validate runs")
        .success()
}

#[test]
fn validation_agrees_with_envoy_on_regexes_near_the_program_size_limit() {
    let Some(envoy) = envoy() else { return };
    let dir = std::env::temp_dir().join(format!("sextant-re2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // With the program size Envoy reports for each; its limit is 100.
    for (regex, size) in [
        ("x{96}", 100),
        ("x{97}", 101),
        ("/x{94}", 99),
        ("^x{98}$", 100),
        ("^/x{98}$", 102),
        ("/x{80}y{10}", 95),
        ("[ab]{96}", 100),
        ("[ab]{97}", 101),
        ("[a-z0-9]{5,30}", 89),
        ("[a-z0-9]{5,36}", 107),
        ("^/api/(v1|v2|v3)/[a-z]{10}/[0-9]+/x{77}$", 100),
        ("^/api/(v1|v2|v3)/[a-z]{10}/[0-9]+/x{78}$", 101),
    ] {
        let envoy_accepts = envoy_accepts(&envoy, &dir, regex, "");
        assert_eq!(envoy_accepts, size <= 100, "Envoy on {regex:?}");
        assert_eq!(
            sextant_accepts(&dir, regex, &["--max-regex-program-size", "100"]),
            envoy_accepts,
            "sextant validate and Envoy disagree on {regex:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `^x{n}$` spelled with repetitions RE2 accepts (at most 1000 each): n + 2 instructions.
fn anchored_xs(n: usize) -> String {
    let mut regex = String::from("^");
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        regex.push_str(&format!("x{{{k}}}"));
        left -= k;
    }
    regex.push('$');
    regex
}

/// Istio's bootstrap raises Envoy's `re2.max_program_size.error_level` to 32768
/// (`pkg/bootstrap/config.go`, `extractRuntimeFlags`), so regexes Istio accepts are not
/// NACKed. `sextant bootstrap` sets the same runtime, and `sextant validate` checks the same
/// bound by default: the regex of 32768 instructions passes both, one more fails both.
#[test]
fn sextant_bootstrap_and_validation_share_istios_regex_limit() {
    let Some(envoy) = envoy() else { return };
    let dir = std::env::temp_dir().join(format!("sextant-re2-istio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bootstrap = sextant_testing::run(
        std::process::Command::new(sextant_testing::sextant_bin()).args([
            "bootstrap",
            "--node-id",
            "sidecar~127.0.0.1~a.default~default.svc.cluster.local",
        ]),
    );
    // Its `layered_runtime` block, as it is: from the key to the next top-level key.
    let runtime: String = bootstrap
        .lines()
        .skip_while(|l| !l.starts_with("layered_runtime:"))
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with(' '))
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    assert!(
        runtime.contains("re2.max_program_size.error_level: \"32768\""),
        "{bootstrap}"
    );
    // RE2 (like Go's parser, which Istio's validation uses) also refuses a repetition count
    // over 1000, nested counts multiplied.
    for (regex, accepted, what) in [
        (
            "(a|b|c|d|e|f|g|h|i|j){40}".to_owned(),
            true,
            "a program of about 300",
        ),
        (anchored_xs(32766), true, "a program of 32768"),
        (anchored_xs(32767), false, "a program of 32769"),
        (
            "/(a|b|c|d|e|f|g|h|i|j){1001}".to_owned(),
            false,
            "a count of 1001",
        ),
        (
            "/((a|b){30}){40}".to_owned(),
            false,
            "nested counts of 1200",
        ),
        ("/((a|b){25}){40}".to_owned(), true, "nested counts of 1000"),
    ] {
        assert_eq!(
            envoy_accepts(&envoy, &dir, &regex, &runtime),
            accepted,
            "Envoy with the runtime of `sextant bootstrap` on {what}"
        );
        assert_eq!(
            sextant_accepts(&dir, &regex, &[]),
            accepted,
            "sextant validate on {what}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_lease_holder_marks_a_virtual_service_envoy_rejected_in_its_status() {
    let (Some(envoy), Some(k)) = (envoy(), kubectl()) else {
        return;
    };
    let net = 44u8;
    let dir = std::env::temp_dir().join(format!("sextant-nack-kube-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cluster = Cluster::start(&dir, 0);
    cluster.kubectl(&k, &["apply", "-f", repo("crds").to_str().expect("utf-8")]);
    let manifest = dir.join("mesh.yaml");
    let apply = |ratings_regex: &str| {
        std::fs::write(
            &manifest,
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: reviews}}\nspec:\n  ports: [{{name: http, port: 9080}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: ratings}}\nspec:\n  ports: [{{name: http, port: 9080}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n  - route: [{{destination: {{host: reviews}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: ratings}}\nspec:\n  hosts: [ratings]\n  http:\n  - match: [{{uri: {{regex: '{ratings_regex}'}}}}]\n    directResponse: {{status: 418}}\n  - route: [{{destination: {{host: ratings}}}}]\n"),
        )
        .expect("write");
        cluster.kubectl(&k, &["apply", "-f", manifest.to_str().expect("utf-8")]);
    };
    apply("/teapot");

    let serve = Serve::new();
    let _sextant = Process(
        serve
            .command(&sextant_testing::sextant_bin())
            .env("KUBECONFIG", cluster.kubeconfig())
            .args([
                "--debounce-after-ms",
                "50",
                "--hold-on-plaintext-nacks",
                "--max-regex-program-size",
                "1000",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sextant serve starts"),
    );
    serve.wait_ready(Duration::from_secs(30)).expect("ready");
    let node = format!("sidecar~127.0.{net}.99~client-0.default~default.svc.cluster.local");
    let bind = format!("127.0.{net}.100");
    let proxy = sextant_testing::Envoy::start(&envoy, &dir, &node, serve.xds, &bind, false, net);
    proxy.set_runtime("re2.max_program_size.error_level", "100");
    let routes = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    wait_for("routes ACKed", Duration::from_secs(45), || {
        let t = syncz(serve.admin_addr(), &node)?["types"][routes].clone();
        (!t["acked_version"].is_null() && t["acked_version"] == t["sent_version"]).then_some(())
    });
    let condition = |name: &str, field: &str| {
        cluster.kubectl(
            &k,
            &[
                "get",
                "vs",
                name,
                "-o",
                &format!("jsonpath={{.status.conditions[0].{field}}}"),
            ],
        )
    };

    apply(TOO_BIG);
    wait_for("ratings marked rejected", Duration::from_secs(30), || {
        (condition("ratings", "reason") == "Rejected").then_some(())
    });
    assert_eq!(condition("ratings", "status"), "False");
    let message = condition("ratings", "message");
    assert!(message.contains("program size"), "{message}");
    assert!(
        message.contains("last accepted version is served"),
        "{message}"
    );
    assert_eq!(condition("reviews", "reason"), "Accepted");

    // Fixed: released, and accepted again.
    apply("/coffee");
    wait_for("ratings accepted again", Duration::from_secs(30), || {
        (condition("ratings", "reason") == "Accepted").then_some(())
    });
    let _ = std::fs::remove_dir_all(&dir);
}
