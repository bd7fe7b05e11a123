//! `sextant proxy-status` and `sextant proxy-config --server` against a running Sextant with
//! real Envoys: two clients of one mesh, one of them stricter about regexes than the control
//! plane, so that it alone NACKs a route configuration.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use sextant_testing::{Backend, Envoy, Process, Serve, envoy, http_get, request, wait_for};

/// A directory mesh on loopback net `127.0.<net>.0/24`: `reviews` and `ratings` on port 9080
/// (their routes share one RouteConfiguration), and a VirtualService on `ratings` whose
/// regex the test changes.
struct Mesh {
    dir: PathBuf,
    net: u8,
    _backends: Vec<Backend>,
}

impl Mesh {
    fn new(net: u8) -> Mesh {
        let dir = std::env::temp_dir().join(format!("sextant-status-{}-{net}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ip = |h: u8| format!("127.0.{net}.{h}");
        let mut yaml = String::new();
        let mut backends = Vec::new();
        for (h, svc) in [(1, "reviews"), (2, "ratings")] {
            backends.push(Backend::start(&format!("{}:9080", ip(h)), svc).expect("backend"));
            let pod = format!("{svc}-0");
            yaml.push_str(&format!("---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: default, labels: {{app: {svc}}}}}\nspec: {{containers: [{{name: c, image: x}}]}}\nstatus: {{podIP: {}}}\n", ip(h)));
            yaml.push_str(&format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: {svc}, namespace: default}}\nspec:\n  clusterIP: 10.96.{net}.{h}\n  selector: {{app: {svc}}}\n  ports: [{{name: http, port: 9080}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {svc}-1, namespace: default, labels: {{kubernetes.io/service-name: {svc}}}}}\naddressType: IPv4\nports: [{{name: http, port: 9080}}]\nendpoints:\n- addresses: [{}]\n  targetRef: {{kind: Pod, name: {pod}, namespace: default}}\n", ip(h)));
        }
        let mesh = Mesh {
            dir,
            net,
            _backends: backends,
        };
        mesh.write("mesh.yaml", &yaml);
        mesh.ratings("/teapot");
        mesh
    }

    fn write(&self, file: &str, text: &str) {
        let tmp = self.dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, self.dir.join(file)).expect("rename");
    }

    /// Requests to `ratings` whose path matches `regex` get 418, the rest go to `ratings`.
    fn ratings(&self, regex: &str) {
        self.write(
            "ratings.yaml",
            &format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: ratings, namespace: default}}\nspec:\n  hosts: [ratings]\n  http:\n  - match: [{{uri: {{regex: '{regex}'}}}}]\n    directResponse: {{status: 418}}\n  - route: [{{destination: {{host: ratings}}}}]\n"),
        );
    }

    /// Client `n`'s node id: Pod `client-N` in `default`.
    fn node(&self, n: u8) -> String {
        format!(
            "sidecar~127.0.{}.{}~client-{n}.default~default.svc.cluster.local",
            self.net,
            100 + n
        )
    }

    /// Starts Envoy (state of the world or delta) as client `n`, listening on
    /// `127.0.<net>.<100+n>`, once reviews answer through it.
    fn client(&self, envoy: &Path, serve: &Serve, n: u8, delta: bool) -> Envoy {
        let bind = format!("127.0.{}.{}", self.net, 100 + n);
        let tag = self.net.wrapping_mul(4).wrapping_add(n);
        let proxy = Envoy::start(
            envoy,
            &self.dir,
            &self.node(n),
            serve.xds,
            &bind,
            delta,
            tag,
        );
        wait_for("traffic through Envoy", Duration::from_secs(45), || {
            request(proxy.listener, "reviews", "/", &[])
                .filter(|(status, body, _)| *status == 200 && body == "reviews")
        });
        proxy
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `sextant serve` on the mesh, its own regex limit above Envoy's default (so that regexes
/// it accepts can be rejected by a stricter Envoy), and nothing held back after NACKs.
fn serve(mesh: &Mesh) -> (Serve, Process) {
    let serve = Serve::new();
    let log = mesh.dir.join("..").join(format!(
        "sextant-status-{}-{}.log",
        std::process::id(),
        mesh.net
    ));
    let process = serve.start_dir(
        &mesh.dir,
        &log,
        &[
            "--debounce-after-ms",
            "50",
            "--max-regex-program-size",
            "1000",
        ],
    );
    (serve, process)
}

/// A table line's cells: two spaces or more apart (a cell has at most one space inside).
fn cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `sextant ARGS`: its standard output, which must succeed.
fn sextant(args: &[&str]) -> String {
    let out = Command::new(sextant_testing::sextant_bin())
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .expect("sextant runs");
    assert!(
        out.status.success(),
        "sextant {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `sextant proxy-status -o json` (and any `extra` arguments) against `admin`.
fn status_json(admin: SocketAddr, extra: &[&str]) -> Value {
    let server = admin.to_string();
    let mut args = vec!["proxy-status", "--server", server.as_str(), "-o", "json"];
    args.extend(extra);
    serde_json::from_str(&sextant(&args)).expect("JSON")
}

/// The proxy named `name` in a `proxy-status` view.
fn proxy<'a>(view: &'a Value, name: &str) -> Option<&'a Value> {
    view["proxies"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

/// Every type Envoy asks for is SYNCED and the proxy holds the latest snapshot.
fn synced_at_latest(view: &Value, name: &str) -> bool {
    let Some(p) = proxy(view, name) else {
        return false;
    };
    let types = p["types"].as_object().expect("types");
    ["CDS", "LDS", "EDS", "RDS"]
        .iter()
        .all(|t| types[*t]["state"] == "SYNCED")
        && p["version"] == view["latest_snapshot"]
}

/// A regex whose RE2 program (about 156 instructions) passes Envoy's default limit of 100.
const TOO_BIG: &str = "/x{150}";

#[test]
fn proxy_status_shows_the_envoy_that_nacked_stale_until_a_fix_syncs_it_sotw() {
    the_envoy_that_nacked_is_stale_until_a_fix_syncs_it(false, 61);
}

#[test]
fn proxy_status_shows_the_envoy_that_nacked_stale_until_a_fix_syncs_it_delta() {
    the_envoy_that_nacked_is_stale_until_a_fix_syncs_it(true, 64);
}

fn the_envoy_that_nacked_is_stale_until_a_fix_syncs_it(delta: bool, net: u8) {
    let Some(envoy) = envoy() else { return };
    let mesh = Mesh::new(net);
    let (serve, _sextant) = serve(&mesh);
    let admin = serve.admin_addr();
    let (good, bad) = ("client-0.default", "client-1.default");
    let _good = mesh.client(&envoy, &serve, 0, delta);
    let strict = mesh.client(&envoy, &serve, 1, delta);
    // This Envoy's regex limit is Envoy's own default, below what Sextant was told.
    strict.set_runtime("re2.max_program_size.error_level", "100");
    let before = wait_for("both proxies SYNCED", Duration::from_secs(20), || {
        let view = status_json(admin, &[]);
        (synced_at_latest(&view, good) && synced_at_latest(&view, bad)).then_some(view)
    });
    assert_eq!(
        proxy(&before, good).expect("listed")["types"]["ECDS"]["state"],
        "NOT SENT",
        "Envoy never asks for extension configs: {before}"
    );
    assert_eq!(
        proxy(&before, good).expect("listed")["node_id"],
        mesh.node(0)
    );
    let protocol = if delta { "delta" } else { "sotw" };
    assert_eq!(proxy(&before, bad).expect("listed")["protocol"], protocol);

    mesh.ratings(TOO_BIG);
    let view = wait_for("the strict Envoy's NACK", Duration::from_secs(20), || {
        let view = status_json(admin, &[]);
        (proxy(&view, bad)?["types"]["RDS"]["nacked"] == true && synced_at_latest(&view, good))
            .then_some(view)
    });
    let stale = proxy(&view, bad).expect("listed");
    let routes = &stale["types"]["RDS"];
    assert_eq!(routes["state"], "STALE", "{view}");
    assert!(
        routes["error"]
            .as_str()
            .is_some_and(|e| e.contains("program size")),
        "Envoy's error: {routes}"
    );
    assert_eq!(stale["types"]["CDS"]["state"], "SYNCED", "{view}");
    assert_eq!(stale["nacks"][0]["type"], "RDS");
    assert!(
        stale["version"].as_u64() < view["latest_snapshot"].as_u64(),
        "the strict Envoy holds an older version: {view}"
    );

    // The table: a line per proxy, the NACK in the last column.
    let server = admin.to_string();
    let table = sextant(&["proxy-status", "--server", &server]);
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .map(cells)
            .unwrap_or_else(|| panic!("{name} listed:\n{table}"))
    };
    assert_eq!(
        cells(table.lines().next().expect("a header"))[..7],
        ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS"],
        "{table}"
    );
    assert_eq!(
        row(bad)[2..7],
        ["SYNCED", "SYNCED", "SYNCED", "STALE (NACKed)", "NOT SENT"],
        "{table}"
    );
    let nack = row(bad).last().cloned().unwrap_or_default();
    assert!(
        nack.starts_with("RDS: ") && nack.contains("program size"),
        "{table}"
    );
    assert_eq!(
        row(good)[2..7],
        ["SYNCED", "SYNCED", "SYNCED", "SYNCED", "NOT SENT"],
        "{table}"
    );
    assert_eq!(row(good).last().map(String::as_str), Some("-"), "{table}");

    // YAML carries what JSON does.
    let yaml = sextant(&["proxy-status", "--server", &server, "-o", "yaml"]);
    let from_yaml = sextant_index::manifest::parse_documents(&yaml).expect("YAML")[0]
        .value
        .clone();
    let nacked = |v: &Value| proxy(v, bad).map(|p| p["types"]["RDS"]["nacked"].clone());
    assert_eq!(nacked(&from_yaml), Some(Value::Bool(true)), "{yaml}");
    assert_eq!(from_yaml["proxies"].as_array().map(Vec::len), Some(2));

    // One proxy: what it holds against the latest, and the NACK in full.
    let detail = sextant(&["proxy-status", bad, "--server", &server]);
    assert!(
        detail
            .lines()
            .any(|l| l.starts_with("RDS") && l.contains("STALE (NACKed)")),
        "{detail}"
    );
    assert!(detail.contains("RDS NACKed version"), "{detail}");

    // explain follows what a proxy is sent, so for the strict Envoy it says that Envoy still
    // runs the routes it accepted before; the proxy named as proxy-status names it.
    let explain = |name: &str, n: u8| -> Value {
        let address = format!("127.0.{net}.{}", 100 + n);
        let text = sextant(&[
            "explain",
            "--server",
            &server,
            "--proxy",
            name,
            "--host",
            "ratings",
            "--port",
            "9080",
            "--address",
            &address,
            "-o",
            "json",
        ]);
        serde_json::from_str(&text).expect("JSON")
    };
    let strict_view = explain(bad, 1);
    assert_eq!(strict_view["proxy"], mesh.node(1), "{strict_view}");
    let warnings = strict_view["warnings"].to_string();
    assert!(
        warnings.contains("rejected RDS") && warnings.contains("program size"),
        "{strict_view}"
    );
    let good_view = explain(good, 0);
    assert!(good_view.get("warnings").is_none(), "{good_view}");
    let one = status_json(admin, &[&mesh.node(1)]);
    assert_eq!(one["proxies"].as_array().map(Vec::len), Some(1), "{one}");

    // A fix every Envoy accepts: both converge on the new version.
    mesh.ratings("/coffee");
    let after = wait_for("both proxies SYNCED again", Duration::from_secs(20), || {
        let view = status_json(admin, &[]);
        (synced_at_latest(&view, good) && synced_at_latest(&view, bad)).then_some(view)
    });
    assert!(
        after["latest_snapshot"].as_u64() > view["latest_snapshot"].as_u64(),
        "{after}"
    );
    let fixed = proxy(&after, bad).expect("listed");
    assert_eq!(fixed["nacks"], serde_json::json!([]), "{after}");
    let table = sextant(&["proxy-status", "--server", &server]);
    assert!(!table.contains("STALE"), "{table}");
}

#[test]
fn proxy_status_of_a_proxy_not_connected_fails() {
    let Some(_envoy) = envoy() else { return };
    let mesh = Mesh::new(62);
    let (serve, _sextant) = serve(&mesh);
    let out = Command::new(sextant_testing::sextant_bin())
        .args(["proxy-status", "nobody.default", "--server"])
        .arg(serve.admin_addr().to_string())
        .output()
        .expect("sextant runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no proxy nobody.default is connected"),
        "{stderr}"
    );
}

/// The names of Envoy's dynamic resources of `kind` in its `/config_dump`.
fn envoy_names(admin: SocketAddr, kind: &str) -> Vec<String> {
    let dump: Value =
        serde_json::from_str(&http_get(admin, "/config_dump").expect("config_dump")).expect("JSON");
    let config = dump["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .find(|c| {
            c["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with(&format!("{kind}ConfigDump")))
        })
        .expect("the dump of that kind");
    let mut names: Vec<String> = match kind {
        "Clusters" => config["dynamic_active_clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["cluster"]["name"].as_str().expect("name").to_owned())
            .collect(),
        _ => config["dynamic_listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| !l["active_state"].is_null())
            .map(|l| l["name"].as_str().expect("name").to_owned())
            .collect(),
    };
    names.sort();
    names
}

/// The names of `resource` in `sextant proxy-config RESOURCE --server -o json`.
fn sextant_names(admin: SocketAddr, resource: &str, proxy: &str) -> Vec<String> {
    let server = admin.to_string();
    let list: Value = serde_json::from_str(&sextant(&[
        "proxy-config",
        resource,
        "--server",
        &server,
        "--proxy",
        proxy,
        "-o",
        "json",
    ]))
    .expect("JSON");
    let mut names: Vec<String> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| r["name"].as_str().expect("name").to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn proxy_config_server_shows_what_a_connected_envoy_holds() {
    let Some(envoy) = envoy() else { return };
    let mesh = Mesh::new(63);
    let (serve, _sextant) = serve(&mesh);
    let admin = serve.admin_addr();
    let client = mesh.client(&envoy, &serve, 0, false);
    wait_for("the client SYNCED", Duration::from_secs(20), || {
        synced_at_latest(&status_json(admin, &[]), "client-0.default").then_some(())
    });
    for (resource, kind) in [("clusters", "Clusters"), ("listeners", "Listeners")] {
        let envoys = envoy_names(client.admin, kind);
        assert!(!envoys.is_empty(), "Envoy holds {resource}");
        assert_eq!(
            sextant_names(admin, resource, "client-0.default"),
            envoys,
            "{resource} by POD.NAMESPACE"
        );
        assert_eq!(
            sextant_names(admin, resource, &mesh.node(0)),
            envoys,
            "by node id"
        );
    }

    let server = admin.to_string();
    let table = sextant(&[
        "proxy-config",
        "clusters",
        "--server",
        &server,
        "--proxy",
        "client-0.default",
    ]);
    assert!(table.starts_with("SERVICE FQDN"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("ratings.default.svc.cluster.local") && l.contains("EDS")),
        "{table}"
    );
    let yaml = sextant(&[
        "proxy-config",
        "routes",
        "--server",
        &server,
        "--proxy",
        "client-0.default",
        "-o",
        "yaml",
    ]);
    let routes = sextant_index::manifest::parse_documents(&yaml).expect("YAML")[0]
        .value
        .clone();
    assert!(
        routes
            .as_array()
            .is_some_and(|r| r.iter().any(|rc| rc["name"] == "9080")),
        "{yaml}"
    );
}

#[test]
fn proxy_config_refuses_a_directory_and_a_server_together() {
    let out = Command::new(sextant_testing::sextant_bin())
        .args([
            "proxy-config",
            "clusters",
            "--proxy",
            "a.b",
            "--server",
            "127.0.0.1:1",
        ])
        .args(["--config-dir", "."])
        .output()
        .expect("sextant runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

#[test]
fn an_endless_answer_is_cut_at_the_clients_bound() {
    // A hostile admin port: a 200 whose chunked body never ends. proxy-status reads at most
    // its bound and fails saying so, rather than growing until it is killed.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut conn in listener.incoming().flatten() {
            let mut head = [0u8; 4096];
            let _ = conn.read(&mut head);
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            );
            let chunk = [b' '; 1 << 20];
            loop {
                let sent = conn
                    .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .and_then(|()| conn.write_all(&chunk))
                    .and_then(|()| conn.write_all(b"\r\n"));
                if sent.is_err() {
                    break;
                }
            }
        }
    });
    let out = Command::new(sextant_testing::sextant_bin())
        .args(["proxy-status", "--server", &addr.to_string()])
        .output()
        .expect("sextant runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("at most 268435456 bytes"), "{stderr}");
}
