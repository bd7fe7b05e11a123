//! Mesh telemetry with stock Envoy: a sidecar from `sextant bootstrap --sidecar-listeners`
//! serves Prometheus on its port 15090 with Istio's labels (the destination from the cluster's
//! name, the proxy's own identity from its node), writes the mesh config's access log in
//! Istio's default TEXT line or JSON keys, and passes tracing headers through unchanged with an
//! `x-request-id`.
//!
//! Every mesh runs on its own loopback network `127.0.N.0/24`: backends at `.1`–`.19`, the
//! Envoy's listeners (15090 included) bound to `.100`.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::Ordering,
    time::Duration,
};

use sextant_testing::{
    Backend, Process, Serve, envoy, free_port, http_get, request, run, sextant_bin, syncz,
    try_wait_for,
};

const METRICS_NET: u8 = 150;
const TEXT_LOG_NET: u8 = 151;
const JSON_LOG_NET: u8 = 152;
const TRACING_NET: u8 = 153;

/// The sidecar's node: Pod `productpage-v1-0` of workload `productpage-v1`.
const WORKLOAD: &str = "productpage-v1";

struct Mesh {
    dir: PathBuf,
    net: u8,
    admin: SocketAddr,
    node: String,
    _proxy: Process,
    _sextant: Process,
    _backends: Vec<Backend>,
}

/// `reviews` (one v1 Pod at `.1`, routed to subset v1) and `ratings` (at `.3`), both HTTP on
/// 9080; `echo` (at `.5`) when `echo` is set.
fn manifests(net: u8) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: reviews-v1-0, namespace: default, labels: {{app: reviews, version: v1}}}}\nspec: {{containers: [{{name: c, image: x}}]}}\nstatus: {{podIP: 127.0.{net}.1}}\n\
---\napiVersion: v1\nkind: Service\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  clusterIP: 10.96.{net}.1\n  selector: {{app: reviews}}\n  ports: [{{name: http, port: 9080}}]\n\
---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: reviews-1, namespace: default, labels: {{kubernetes.io/service-name: reviews}}}}\naddressType: IPv4\nports: [{{name: http, port: 9080}}]\nendpoints:\n- addresses: [127.0.{net}.1]\n  targetRef: {{kind: Pod, name: reviews-v1-0, namespace: default}}\n\
---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  host: reviews\n  subsets: [{{name: v1, labels: {{version: v1}}}}]\n\
---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  hosts: [reviews]\n  http: [{{route: [{{destination: {{host: reviews, subset: v1}}}}]}}]\n\
---\napiVersion: v1\nkind: Service\nmetadata: {{name: ratings, namespace: default}}\nspec:\n  clusterIP: 10.96.{net}.3\n  ports: [{{name: http, port: 9080}}]\n\
---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: ratings-1, namespace: default, labels: {{kubernetes.io/service-name: ratings}}}}\naddressType: IPv4\nports: [{{name: http, port: 9080}}]\nendpoints: [{{addresses: [127.0.{net}.3]}}]\n\
---\napiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: default}}\nspec:\n  clusterIP: 10.96.{net}.5\n  ports: [{{name: http, port: 9080}}]\n\
---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: echo-1, namespace: default, labels: {{kubernetes.io/service-name: echo}}}}\naddressType: IPv4\nports: [{{name: http, port: 9080}}]\nendpoints: [{{addresses: [127.0.{net}.5]}}]\n"
    )
}

impl Mesh {
    /// Sextant on a directory with [`manifests`] and the mesh config `mesh_config`, the
    /// backends, and the productpage sidecar with Istio's static listeners.
    fn start(net: u8, mesh_config: &str) -> Option<Mesh> {
        let envoy = envoy()?;
        let dir =
            std::env::temp_dir().join(format!("sextant-telemetry-{}-{net}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("config")).expect("temp dir");
        std::fs::write(dir.join("config/mesh.yaml"), manifests(net)).expect("manifests");
        std::fs::write(dir.join("mesh-config.yaml"), mesh_config).expect("mesh config");
        let backends = vec![
            Backend::start(&format!("127.0.{net}.1:9080"), "reviews").expect("backend"),
            Backend::start(&format!("127.0.{net}.3:9080"), "ratings").expect("backend"),
        ];
        let serve = Serve::new();
        let sextant = Process(
            serve
                .command(&sextant_bin())
                .args(["--config-dir", dir.join("config").to_str().expect("utf-8")])
                .args([
                    "--mesh-config",
                    dir.join("mesh-config.yaml").to_str().expect("utf-8"),
                ])
                .args(["--debounce-after-ms", "50"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("sextant serve starts"),
        );
        serve.wait_ready(Duration::from_secs(20)).expect("ready");
        let node = format!("sidecar~127.0.{net}.99~{WORKLOAD}-0.default~default.svc.cluster.local");
        // The 15090 listener reaches Envoy's admin interface on a port the bootstrap names.
        let admin_port = free_port().to_string();
        let xds = format!("127.0.0.1:{}", serve.xds);
        let bind = format!("127.0.{net}.100");
        let yaml = run(Command::new(sextant_bin()).args([
            "bootstrap",
            "--node-id",
            &node,
            "--bind-address",
            &bind,
            "--admin-port",
            &admin_port,
            "--xds-address",
            &xds,
            "--sidecar-listeners",
            "--label",
            "app=productpage",
            "--label",
            "version=v1",
            "--meta",
            &format!("WORKLOAD_NAME={WORKLOAD}"),
        ]));
        let bootstrap = dir.join("envoy.yaml");
        std::fs::write(&bootstrap, yaml).expect("bootstrap");
        let proxy = Process(
            Command::new(&envoy)
                .args([
                    "-c",
                    bootstrap.to_str().expect("utf-8"),
                    "--use-dynamic-base-id",
                ])
                // As Istio's agent and Sextant's injector start it: access logs within 1 s.
                .args(["--concurrency", "1", "-l", "warning"])
                .args(["--file-flush-interval-msec", "1000"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("envoy.log")).expect("log"))
                .spawn()
                .expect("envoy starts"),
        );
        let admin = serve.admin_addr();
        try_wait_for("every type ACKed", Duration::from_secs(45), || {
            let types = syncz(admin, &node)?["types"].as_object()?.clone();
            (types.len() >= 4
                && types.values().all(|t| {
                    t["acked_version"] == t["sent_version"] && !t["sent_version"].is_null()
                }))
            .then_some(())
        })
        .unwrap_or_else(|e| {
            let log = std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default();
            panic!(
                "{e}: {:?}\nEnvoy's log: {log}",
                http_get(admin, "/debug/syncz")
            )
        });
        Some(Mesh {
            dir,
            net,
            admin,
            node,
            _proxy: proxy,
            _sextant: sextant,
            _backends: backends,
        })
    }

    fn at(&self, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, self.net, 100], port))
    }

    /// `GET path` for `host` through the sidecar, until it answers `status` (the sidecar may
    /// still be warming its routes on the first requests).
    fn get(&self, host: &str, path: &str, headers: &[(&str, &str)], status: u16) -> String {
        try_wait_for(
            &format!("GET {host}{path} answers {status}"),
            Duration::from_secs(15),
            || {
                let (code, body, _) = request(self.at(9080), host, path, headers)?;
                (code == status).then_some(body)
            },
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn scrape(&self) -> Vec<Sample> {
        let text = http_get(self.at(15090), "/stats/prometheus").expect("a scrape of :15090");
        text.lines().filter_map(Sample::parse).collect()
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One line of Prometheus' text format: a metric, its labels and its value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Sample {
    fn parse(line: &str) -> Option<Sample> {
        if line.starts_with('#') || line.is_empty() {
            return None;
        }
        let (series, value) = line.rsplit_once(' ')?;
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        let mut rest = labels;
        while let Some((key, after)) = rest.split_once("=\"") {
            let end = after.find('"')?;
            map.insert(
                key.trim_start_matches(',').to_owned(),
                after[..end].to_owned(),
            );
            rest = &after[end + 1..];
        }
        Some(Sample {
            name: name.to_owned(),
            labels: map,
            value: value.parse().ok()?,
        })
    }

    fn has(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

/// The labels the productpage sidecar puts on the stats of what it sends.
const SOURCE: &[(&str, &str)] = &[
    ("source_workload", WORKLOAD),
    ("source_workload_namespace", "default"),
    ("source_app", "productpage"),
    ("source_version", "v1"),
    ("source_cluster", "Kubernetes"),
];

#[test]
fn prometheus_counts_requests_by_source_destination_and_response_code() {
    let Some(mesh) = Mesh::start(METRICS_NET, "") else {
        return;
    };
    for _ in 0..5 {
        assert_eq!(mesh.get("reviews", "/", &[], 200), "reviews");
    }
    mesh._backends[1].fail.store(true, Ordering::Relaxed);
    for _ in 0..3 {
        mesh.get("ratings", "/", &[], 503);
    }
    let reviews: Vec<(&str, &str)> = [
        (
            "cluster_name",
            "outbound|9080|v1|reviews.default.svc.cluster.local",
        ),
        ("destination_service", "reviews.default.svc.cluster.local"),
        ("destination_service_name", "reviews"),
        ("destination_service_namespace", "default"),
        ("destination_port", "9080"),
        ("destination_subset", "v1"),
        ("envoy_response_code", "200"),
    ]
    .into_iter()
    .chain(SOURCE.iter().copied())
    .collect();
    let samples = try_wait_for(
        "5 requests to reviews counted",
        Duration::from_secs(10),
        || {
            let samples = mesh.scrape();
            samples
                .iter()
                .any(|s| s.name == "envoy_cluster_upstream_rq" && s.has(&reviews) && s.value == 5.0)
                .then_some(samples)
        },
    )
    .unwrap_or_else(|e| {
        let text = http_get(mesh.at(15090), "/stats/prometheus").unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("upstream_rq{"))
            .collect();
        panic!(
            "{e}; envoy_cluster_upstream_rq lines:\n{}",
            lines.join("\n")
        )
    });
    let counted = samples
        .iter()
        .find(|s| s.name == "envoy_cluster_upstream_rq" && s.has(&reviews))
        .expect("found above");
    assert!(
        !counted
            .labels
            .keys()
            .any(|k| k.starts_with("destination_workload")),
        "no peer workload without Istio's metadata exchange: {counted:?}"
    );
    // The name stays Envoy's, and its labels are the cluster's name taken apart.
    assert!(
        samples
            .iter()
            .any(|s| s.name == "envoy_cluster_upstream_rq_total"
                && s.has(&reviews[..6])
                && s.value == 5.0),
        "envoy_cluster_upstream_rq_total for reviews"
    );
    // Istio's default retries may send each failing request more than once.
    assert!(
        samples.iter().any(|s| s.name == "envoy_cluster_upstream_rq"
            && s.has(&[
                ("destination_service_name", "ratings"),
                ("destination_subset", ""),
                ("envoy_response_code", "503"),
                ("source_workload", WORKLOAD),
            ])
            && s.value >= 3.0),
        "503s to ratings"
    );
    // The proxy's identity is a fixed value: every stat of this sidecar carries it.
    let live = samples
        .iter()
        .find(|s| s.name == "envoy_server_live")
        .expect("envoy_server_live");
    assert!(live.has(SOURCE), "{live:?}");
}

/// One line of Istio's default TEXT access log, split into its fields: quoted ones whole,
/// the others at spaces.
fn text_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut rest = line.trim_end();
    while !rest.is_empty() {
        rest = rest.trim_start();
        let (field, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').expect("closing quote");
            (&quoted[..end], &quoted[end + 1..])
        } else if let Some(bracketed) = rest.strip_prefix('[') {
            let end = bracketed.find(']').expect("closing bracket");
            (&bracketed[..end], &bracketed[end + 1..])
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        fields.push(field.to_owned());
        rest = after;
    }
    fields
}

fn lines_with(path: &Path, needle: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[test]
fn access_log_has_a_line_per_request_in_istios_text_format() {
    let log = std::env::temp_dir().join(format!("sextant-telemetry-{TEXT_LOG_NET}.log"));
    let _ = std::fs::remove_file(&log);
    let mesh_config = format!("accessLogFile: {}\n", log.display());
    let Some(mesh) = Mesh::start(TEXT_LOG_NET, &mesh_config) else {
        return;
    };
    for _ in 0..3 {
        mesh.get(
            "reviews",
            "/text-log?n=1",
            &[("user-agent", "telemetry-test")],
            200,
        );
    }
    let lines = try_wait_for("3 access log lines", Duration::from_secs(10), || {
        let lines = lines_with(&log, "/text-log?n=1");
        (lines.len() >= 3).then_some(lines)
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", std::fs::read_to_string(&log)));
    let _ = std::fs::remove_file(&log);
    // Requests retried while the sidecar warmed up may add lines; the last three are ours.
    for line in &lines[lines.len() - 3..] {
        let f = text_fields(line);
        assert_eq!(f.len(), 22, "Istio's 22 fields: {f:?}");
        assert_eq!(f[1], "GET /text-log?n=1 HTTP/1.1", "{line}");
        assert_eq!(f[2], "200", "{line}");
        assert_eq!(f[3], "-", "no response flags: {line}");
        assert_eq!(f[4], "via_upstream", "{line}");
        assert_eq!(f[12], "telemetry-test", "{line}");
        assert_eq!(f[13].len(), 36, "an x-request-id: {line}");
        assert_eq!(f[14], "reviews", "{line}");
        assert_eq!(f[15], "127.0.151.1:9080", "{line}");
        assert_eq!(
            f[16], "outbound|9080|v1|reviews.default.svc.cluster.local",
            "{line}"
        );
        assert_eq!(f[18], "127.0.151.100:9080", "{line}");
    }
}

#[test]
fn access_log_turns_json_when_the_mesh_config_changes() {
    let text = std::env::temp_dir().join(format!("sextant-telemetry-{JSON_LOG_NET}.log"));
    let json = std::env::temp_dir().join(format!("sextant-telemetry-{JSON_LOG_NET}.json"));
    let _ = std::fs::remove_file(&text);
    let _ = std::fs::remove_file(&json);
    let Some(mesh) = Mesh::start(
        JSON_LOG_NET,
        &format!("accessLogFile: {}\n", text.display()),
    ) else {
        return;
    };
    mesh.get("reviews", "/before", &[], 200);
    // Live: the mesh config file changes, Sextant pushes the listeners again.
    let edited = format!(
        "accessLogFile: {}\naccessLogEncoding: JSON\n",
        json.display()
    );
    std::fs::write(mesh.path("mesh-config.yaml.tmp"), edited).expect("write");
    std::fs::rename(
        mesh.path("mesh-config.yaml.tmp"),
        mesh.path("mesh-config.yaml"),
    )
    .expect("rename");
    let line = try_wait_for("a JSON access log line", Duration::from_secs(20), || {
        mesh.get("reviews", "/json-log", &[], 200);
        lines_with(&json, "/json-log").pop()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let entry: serde_json::Value = serde_json::from_str(&line).expect("one JSON object a line");
    assert_eq!(entry["method"], "GET", "{entry}");
    assert_eq!(entry["path"], "/json-log", "{entry}");
    assert_eq!(entry["response_code"], 200, "{entry}");
    assert_eq!(
        entry["upstream_cluster"],
        "outbound|9080|v1|reviews.default.svc.cluster.local"
    );
    assert_eq!(entry["authority"], "reviews", "{entry}");
    assert!(
        entry["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert_eq!(
        lines_with(&text, "/json-log"),
        Vec::<String>::new(),
        "the TEXT file is no longer written"
    );
    assert_eq!(
        lines_with(&text, "/before").len(),
        1,
        "{:?}",
        std::fs::read_to_string(&text)
    );

    // A format Envoy refuses (`%FOO%`) is refused with the mesh config, which stays as it
    // was: no listener push Envoy would NACK, and JSON lines go on. A directory change after
    // it, once it routes, shows the bad mesh config was read before it.
    let bad = format!(
        "accessLogFile: {}\naccessLogEncoding: JSON\naccessLogFormat: '{{\"x\": \"%FOO%\"}}'\n",
        json.display()
    );
    std::fs::write(mesh.path("mesh-config.yaml.tmp"), bad).expect("write");
    std::fs::rename(
        mesh.path("mesh-config.yaml.tmp"),
        mesh.path("mesh-config.yaml"),
    )
    .expect("rename");
    std::fs::write(
        mesh.path("config/teapot.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings, namespace: default}\nspec:\n  hosts: [ratings]\n  http:\n  - match: [{uri: {prefix: /teapot}}]\n    directResponse: {status: 418}\n  - route: [{destination: {host: ratings}}]\n",
    )
    .expect("write");
    mesh.get("ratings", "/teapot", &[], 418);
    let stream = syncz(mesh.admin, &mesh.node).expect("connected");
    let nacks: Vec<&serde_json::Value> = stream["types"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, t)| &t["last_nack"])
        .filter(|n| !n.is_null())
        .collect();
    assert!(nacks.is_empty(), "Envoy NACKed: {stream}");
    let line = try_wait_for("JSON lines go on", Duration::from_secs(20), || {
        mesh.get("reviews", "/after-bad", &[], 200);
        lines_with(&json, "/after-bad").pop()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(line.starts_with('{'), "{line}");
    let _ = std::fs::remove_file(&text);
    let _ = std::fs::remove_file(&json);
}

/// A backend answering every request with the request's head, as received, in its body.
fn echo_backend(addr: &str) -> SocketAddr {
    let listener = TcpListener::bind(addr).expect("echo backend");
    let local = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                head.len()
            );
            let _ = stream.write_all(answer.as_bytes());
            let _ = stream.write_all(&head);
        }
    });
    local
}

/// The headers of a request head, by lower-case name.
fn headers_seen(head: &str) -> BTreeMap<String, String> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
}

#[test]
fn tracing_headers_reach_the_backend_unchanged_with_a_request_id() {
    let Some(mesh) = Mesh::start(TRACING_NET, "") else {
        return;
    };
    echo_backend(&format!("127.0.{TRACING_NET}.5:9080"));
    let trace = [
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "1"),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
    ];
    let seen = headers_seen(&mesh.get("echo", "/trace", &trace, 200));
    for (name, value) in trace {
        assert_eq!(
            seen.get(name).map(String::as_str),
            Some(value),
            "{name} unchanged; the backend saw {seen:?}"
        );
    }
    let id = seen
        .get("x-request-id")
        .unwrap_or_else(|| panic!("an x-request-id; the backend saw {seen:?}"));
    assert_eq!(id.trim().len(), 36, "a UUID: {id}");
    // A request id the caller sets is the one the backend sees (a sidecar trusts its app).
    let given = "0b8e7c4a-1f43-4c41-9a55-7f1e0e7f2b10";
    let seen = headers_seen(&mesh.get("echo", "/trace", &[("x-request-id", given)], 200));
    assert_eq!(
        seen.get("x-request-id").map(String::as_str),
        Some(given),
        "the caller's x-request-id kept; the backend saw {seen:?}"
    );
}
