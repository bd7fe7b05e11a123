//! Sidecars in Pods, for real: each Pod is a network namespace holding an application that
//! knows nothing of the mesh, a plain Envoy running as the proxy's user (1337), and the
//! capture rules `sextant iptables` sets up. The Pods are joined by a bridge in a namespace of
//! its own, where `sextant serve` runs on a directory of manifests. Root only (see
//! `sextant_testing::netns`).
//!
//! Shown here: bookinfo's productpage reaches reviews and ratings by their Service addresses;
//! VirtualService routing and fault injection apply; under STRICT mutual TLS a Pod without a
//! sidecar cannot reach a meshed Pod while meshed Pods reach each other and see the caller's
//! SPIFFE identity; Envoy's own connections are not captured; excluded ports bypass the proxy;
//! unknown destinations pass through under ALLOW_ANY and are blocked under REGISTRY_ONLY.

use std::{path::Path, process::Stdio};

use serde_json::Value;

#[path = "mesh_support.rs"]
mod mesh_support;
use mesh_support::{MESH_APP, WAIT, call, get, productpage, stat, temp_dir, vip, write};
use sextant_testing::{
    Process, envoy,
    netns::{Lan, NODE_ADDRESS, Netns},
    run, sextant_bin, wait_for,
};

const PROXY_UID: u32 = 1337;

/// A bookinfo workload: its Pod, version and service account.
struct Workload {
    app: &'static str,
    version: &'static str,
    account: &'static str,
}

const PRODUCTPAGE: Workload = Workload {
    app: "productpage",
    version: "v1",
    account: "bookinfo-productpage",
};
const REVIEWS_V1: Workload = Workload {
    app: "reviews",
    version: "v1",
    account: "bookinfo-reviews",
};
const REVIEWS_V2: Workload = Workload {
    app: "reviews",
    version: "v2",
    account: "bookinfo-reviews",
};
const RATINGS: Workload = Workload {
    app: "ratings",
    version: "v1",
    account: "bookinfo-ratings",
};

/// Makes `path` (and what is under it) readable by the proxy's user.
fn readable(path: &Path) {
    run(std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(path));
}

/// Services, their EndpointSlices and Pods, and the reviews DestinationRule with its subsets.
fn bookinfo(pods: &[(&Workload, &Netns)]) -> String {
    let mut out = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n");
    for app in ["productpage", "reviews", "ratings"] {
        let ports = if app == "ratings" {
            "[{name: http, port: 9080, targetPort: 9080}, {name: tcp-db, port: 9999, targetPort: 9999}]"
        } else {
            "[{name: http, port: 9080, targetPort: 9080}]"
        };
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {app}, namespace: default}}\n\
             spec: {{clusterIP: {}, selector: {{app: {app}}}, ports: {ports}}}\n",
            vip(app)
        ));
        let endpoints: Vec<String> = pods
            .iter()
            .filter(|(w, _)| w.app == app)
            .map(|(w, ns)| {
                format!(
                    "{{addresses: [{}], targetRef: {{kind: Pod, name: {}-{}, namespace: default}}}}",
                    ns.ip, w.app, w.version
                )
            })
            .collect();
        let slice_ports = if app == "ratings" {
            "[{name: http, port: 9080}, {name: tcp-db, port: 9999}]"
        } else {
            "[{name: http, port: 9080}]"
        };
        out.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {app}-1, namespace: default, labels: {{kubernetes.io/service-name: {app}}}}}\n\
             addressType: IPv4\nports: {slice_ports}\nendpoints: [{}]\n",
            endpoints.join(", ")
        ));
    }
    for (w, ns) in pods {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {app}-{version}, namespace: default, \
             labels: {{app: {app}, version: {version}, security.istio.io/tlsMode: istio}}}}\n\
             spec: {{serviceAccountName: {account}, containers: [{{name: {app}, image: bookinfo}}]}}\n\
             status: {{podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n",
            app = w.app,
            version = w.version,
            account = w.account,
            ip = ns.ip
        ));
    }
    out.push_str(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {name: reviews, namespace: default}\n\
         spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]}\n",
    );
    out
}

/// The capture rules `sextant iptables` applies inside `pod` (as Istio's init container runs
/// `istio-iptables`), with `extra` flags.
fn capture(pod: &Netns, extra: &[&str]) {
    let mut args = vec![
        "iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x",
        "", "-b", "*",
    ];
    args.extend_from_slice(extra);
    run(pod.command(sextant_bin()).args(&args));
}

/// The capture rules' packet counters in `pod`'s nat table (`iptables-save -c`), by rule text.
fn nat_counters(pod: &Netns) -> String {
    pod.run("iptables-save", &["-c", "-t", "nat"])
}

#[test]
fn a_captured_bookinfo_mesh_routes_secures_and_bypasses_as_istio_does() {
    let Some(envoy) = envoy() else { return };
    let Some(mut lan) = Lan::new("capture") else {
        return;
    };
    let dir = temp_dir("capture");
    let envoy_bin = sextant_testing::netns::proxy_envoy(&envoy, &dir);
    let config = dir.join("config");
    std::fs::create_dir_all(&config).expect("config dir");
    let ca = dir.join("ca");
    run(std::process::Command::new(sextant_bin())
        .args(["ca", "init", "--dir"])
        .arg(&ca));

    let node = lan.node().clone();
    let workloads = [&PRODUCTPAGE, &REVIEWS_V1, &REVIEWS_V2, &RATINGS];
    let pods: Vec<(&Workload, Netns)> = workloads
        .iter()
        .map(|w| (*w, lan.pod(&format!("{}{}", &w.app[..4], w.version))))
        .collect();
    let legacy = lan.pod("legacy");
    let refs: Vec<(&Workload, &Netns)> = pods.iter().map(|(w, n)| (*w, n)).collect();
    write(&config.join("bookinfo.yaml"), &bookinfo(&refs));

    let mut processes: Vec<Process> = Vec::new();
    let log = |name: &str| std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
    processes.push(Process(
        node.command(sextant_bin())
            .args(["serve", "--config-dir"])
            .arg(&config)
            .arg("--ca-dir")
            .arg(&ca)
            .args(["--listen-address", &NODE_ADDRESS.to_string()])
            .stdout(Stdio::null())
            .stderr(log("serve"))
            .spawn()
            .expect("sextant serve starts"),
    ));
    // An address outside the mesh, for passthrough.
    processes.push(Process(
        node.command(MESH_APP)
            .args([
                "serve",
                "--name",
                "outside",
                "--listen",
                &format!("{NODE_ADDRESS}:7070"),
            ])
            .stderr(Stdio::null())
            .spawn()
            .expect("mesh-app starts"),
    ));
    wait_for("sextant to be ready", WAIT, || {
        get(&node, &format!("http://{NODE_ADDRESS}:15014/ready"))
            .ok()
            .filter(|(s, _)| *s == 200)
    });

    for (w, pod) in &pods {
        // ratings' database port is left to the application (excluded inbound), and
        // productpage reaches it directly (excluded outbound), as operators exclude a database.
        match w.app {
            "ratings" => capture(pod, &["-d", "15090,15021,15020,9999"]),
            "productpage" => capture(pod, &["-d", "15090,15021,15020", "-o", "9999"]),
            _ => capture(pod, &["-d", "15090,15021,15020"]),
        }
        let certs = dir.join(format!("certs-{}", w.account));
        if !certs.exists() {
            run(std::process::Command::new(sextant_bin())
                .args(["ca", "issue", "--ca-dir"])
                .arg(&ca)
                .args([
                    "--namespace",
                    "default",
                    "--service-account",
                    w.account,
                    "--out-dir",
                ])
                .arg(&certs));
        }
        let node_id = format!(
            "sidecar~{}~{}-{}.default~default.svc.cluster.local",
            pod.ip, w.app, w.version
        );
        let bootstrap = run(std::process::Command::new(sextant_bin())
            .args([
                "bootstrap",
                "--node-id",
                &node_id,
                "--interception",
                "REDIRECT",
            ])
            .args(["--xds-address", &format!("{NODE_ADDRESS}:15012")])
            .arg("--xds-root-cert")
            .arg(certs.join("root-cert.pem"))
            .arg("--xds-cert")
            .arg(certs.join("cert-chain.pem"))
            .arg("--xds-key")
            .arg(certs.join("key.pem")));
        let path = dir.join(format!("envoy-{}-{}.yaml", w.app, w.version));
        std::fs::write(&path, bootstrap).expect("bootstrap");
        readable(&dir);
        processes.push(Process(
            pod.command_as(PROXY_UID, &envoy_bin)
                .arg("-c")
                .arg(&path)
                .args(["--disable-hot-restart", "-l", "warning"])
                .stdout(Stdio::null())
                .stderr(log(&format!("envoy-{}-{}", w.app, w.version)))
                .spawn()
                .expect("envoy starts"),
        ));
        let name = format!("{}-{}", w.app, w.version);
        let mut app = pod.command(MESH_APP);
        app.args(["serve", "--name", &name, "--listen", "0.0.0.0:9080"]);
        match w.app {
            "productpage" => {
                for callee in ["reviews", "ratings"] {
                    app.args(["--call", &format!("http://{}:9080/{callee}", vip(callee))]);
                }
            }
            "ratings" => {
                app.args(["--listen", "0.0.0.0:9999"]);
            }
            _ => {}
        }
        processes.push(Process(
            app.stderr(Stdio::null()).spawn().expect("mesh-app starts"),
        ));
    }
    for (w, pod) in &pods {
        wait_for(
            &format!("{}-{}'s Envoy to be configured", w.app, w.version),
            WAIT,
            || {
                get(pod, "http://127.0.0.1:15000/ready")
                    .ok()
                    .filter(|(s, _)| *s == 200)
            },
        );
    }
    let pp = &pods[0].1;
    let ratings = &pods[3].1;

    // productpage calls reviews and ratings by their Service addresses; the calls go through
    // both sidecars, over mutual TLS (auto mTLS toward `tlsMode: istio` Pods).
    let page = wait_for("productpage to reach reviews and ratings", WAIT, || {
        productpage(pp)
            .filter(|p| call(p, "reviews")["status"] == 200 && call(p, "ratings")["status"] == 200)
    });
    let caller = "URI=spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
    for app in ["reviews", "ratings"] {
        let xfcc = call(&page, app)["body"]["xfcc"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            xfcc.contains(caller),
            "{app} saw x-forwarded-client-cert {xfcc:?}: {page}"
        );
    }
    assert!(
        stat(
            pp,
            "cluster.outbound|9080||reviews.default.svc.cluster.local;.upstream_rq_total"
        ) >= 1,
        "productpage's sidecar carried the call to reviews"
    );

    // VirtualService routing: all of reviews to v2.
    write(
        &config.join("reviews-vs.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\n\
         spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v2}}]}]}\n",
    );
    wait_for("reviews to route to v2 only", WAIT, || {
        let all_v2 = (0..6).all(|_| {
            productpage(pp).is_some_and(|p| call(&p, "reviews")["body"]["name"] == "reviews-v2")
        });
        all_v2.then_some(())
    });
    // Fault injection: ratings aborts with 418.
    write(
        &config.join("ratings-vs.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings, namespace: default}\n\
         spec: {hosts: [ratings], http: [{fault: {abort: {httpStatus: 418, percentage: {value: 100}}}, \
         route: [{destination: {host: ratings}}]}]}\n",
    );
    wait_for("ratings calls to be aborted with 418", WAIT, || {
        productpage(pp).filter(|p| call(p, "ratings")["status"] == 418)
    });
    std::fs::remove_file(config.join("ratings-vs.yaml")).expect("remove");

    // STRICT: a Pod without a sidecar is refused; meshed Pods still reach each other.
    let direct = format!("http://{}:9080/", ratings.ip);
    assert_eq!(
        get(&legacy, &direct).map(|(s, _)| s),
        Ok(200),
        "PERMISSIVE accepts plaintext from a Pod without a sidecar"
    );
    write(
        &config.join("strict.yaml"),
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\n\
         spec: {mtls: {mode: STRICT}}\n",
    );
    wait_for("STRICT to refuse the Pod without a sidecar", WAIT, || {
        get(&legacy, &direct).err()
    });
    let page = wait_for("meshed Pods to still reach each other", WAIT, || {
        productpage(pp).filter(|p| call(p, "ratings")["status"] == 200)
    });
    assert!(
        call(&page, "ratings")["body"]["xfcc"]
            .as_str()
            .unwrap_or_default()
            .contains(caller)
    );

    // Excluded ports bypass the proxies: ratings' 9999 is not captured inbound, and
    // productpage's outbound 9999 is not captured either, so plaintext works under STRICT and
    // productpage's sidecar never sees the connection.
    let passthrough_before = stat(pp, "cluster.PassthroughCluster.upstream_cx_total");
    let db = format!("http://{}:9999/", ratings.ip);
    let (status, body) = get(pp, &format!("http://127.0.0.1:9080/fetch?url={db}")).expect("fetch");
    assert_eq!(
        (status, &body["status"]),
        (200, &Value::from(200)),
        "{body}"
    );
    assert_eq!(
        body["body"]["xfcc"],
        Value::Null,
        "no proxy on the excluded port: {body}"
    );
    assert_eq!(
        get(&legacy, &db).map(|(s, _)| s),
        Ok(200),
        "inbound 9999 is excluded"
    );
    assert_eq!(
        stat(pp, "cluster.PassthroughCluster.upstream_cx_total"),
        passthrough_before
    );
    let outbound_9999 = stat(
        pp,
        "cluster.outbound|9999||ratings.default.svc.cluster.local;.upstream_cx_total",
    );
    assert_eq!(
        outbound_9999, 0,
        "productpage's sidecar carried the excluded port"
    );

    // Envoy's own connections (xDS, and its upstream connections to reviews and ratings) are
    // not captured: the proxy's user is let through, and the counters show it.
    let counters = nat_counters(pp);
    let owner_return = counters
        .lines()
        .find(|l| {
            l.contains("--uid-owner 1337") && l.ends_with("-j RETURN") && !l.contains("-o lo")
        })
        .unwrap_or_else(|| panic!("no uid-owner RETURN rule:\n{counters}"));
    let packets: u64 = owner_return
        .trim_start_matches('[')
        .split(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    assert!(
        packets > 0,
        "the proxy's own traffic went through its RETURN rule: {owner_return}"
    );
    assert_eq!(
        stat(pp, "control_plane.connected_state"),
        1,
        "the sidecar's xDS stream is up"
    );
    // One page is two connections from the application (to reviews and to ratings); had the
    // sidecar's own upstream connections been captured, they would have come back to 15001 too.
    let captured = || stat(pp, "http.outbound_0.0.0.0_9080.downstream_cx_total");
    let before = captured();
    assert!(productpage(pp).is_some());
    assert_eq!(
        captured() - before,
        2,
        "only the application's connections were captured"
    );

    // Unknown destinations: ALLOW_ANY passes them through; REGISTRY_ONLY blocks them.
    let outside = format!("http://{NODE_ADDRESS}:7070/");
    let fetch_outside = || get(pp, &format!("http://127.0.0.1:9080/fetch?url={outside}")).ok();
    let (_, body) = fetch_outside().expect("fetch");
    assert_eq!(
        body["status"], 200,
        "ALLOW_ANY passes an unknown destination through: {body}"
    );
    assert!(stat(pp, "cluster.PassthroughCluster.upstream_cx_total") > passthrough_before);
    write(
        &config.join("registry-only.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: default}\n\
         spec: {outboundTrafficPolicy: {mode: REGISTRY_ONLY}}\n",
    );
    wait_for(
        "REGISTRY_ONLY to block the unknown destination",
        WAIT,
        || {
            fetch_outside()
                .filter(|(_, b)| b["status"] != 200)
                .map(|_| ())
        },
    );
    assert!(stat(pp, "cluster.BlackHoleCluster.upstream_cx_none_healthy") >= 1);
    drop(processes);
    drop(lan);
    let _ = std::fs::remove_dir_all(&dir);
}
