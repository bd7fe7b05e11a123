//! The mesh built the way a cluster builds it: Pods created through the test API server are
//! injected by Sextant's webhook, and a node shim playing the kubelet
//! (`sextant_testing::kubelet`) turns each into a network namespace running the injected
//! Pod's containers: `sextant iptables` as the init container, the plain Envoy sidecar from
//! the bootstrap in its arguments (authenticating with the Pod's projected token), and the
//! application. The control plane and the API server run in the node's namespace; nothing
//! leaves the namespaces the test makes. Root only.

use std::{path::Path, process::Command, process::Stdio, time::Duration};

use serde_json::Value;
use sextant_testing::{
    Process, envoy, helm, kubectl,
    kubelet::Kubelet,
    netns::{Lan, NODE_ADDRESS, Netns},
    repo, sextant_bin, try_wait_for, wait_for,
};

#[path = "kube_cluster.rs"]
mod kube_cluster;
#[path = "mesh_support.rs"]
mod mesh_support;
use mesh_support::{MESH_APP, WAIT, call, get, productpage, temp_dir, vip, write};

const API_PORT: &str = "6443";

fn kubectl_in(node: &Netns, kubectl: &Path, dir: &Path) -> Command {
    let mut c = node.command(kubectl);
    c.env("KUBECONFIG", dir.join("kubeconfig")).env("HOME", dir);
    c
}

fn apply(node: &Netns, kubectl: &Path, dir: &Path, name: &str, yaml: &str) {
    let file = dir.join(format!("{name}.yaml"));
    write(&file, yaml);
    sextant_testing::run(
        kubectl_in(node, kubectl, dir)
            .args(["apply", "-f"])
            .arg(&file),
    );
}

/// A bookinfo Pod whose application is `mesh-app` (the shim runs commands, not images);
/// ratings asks for a native sidecar.
fn bookinfo_pod(app: &str, version: &str) -> String {
    let mut args = format!("[serve, --name, {app}-{version}, --listen, \"0.0.0.0:9080\"");
    if app == "productpage" {
        for callee in ["reviews", "ratings"] {
            args.push_str(&format!(
                ", --call, \"http://{}:9080/{callee}\"",
                vip(callee)
            ));
        }
    }
    args.push(']');
    let annotations = if app == "ratings" {
        ", annotations: {sidecar.istio.io/nativeSidecar: \"true\"}"
    } else {
        ""
    };
    // reviews is created as its Deployment's ReplicaSet creates it: the name is generated
    // after admission, so the injector sees only the workload (WORKLOAD_NAME), while the
    // sidecar's node id carries the Pod's own name.
    let name = if app == "reviews" {
        format!(
            "generateName: {app}-{version}-7f9c8d-, ownerReferences: [{{apiVersion: apps/v1, \
             kind: ReplicaSet, name: {app}-{version}-7f9c8d, uid: 5f0b8a9e-0000-4000-8000-000000000001, \
             controller: true}}]"
        )
    } else {
        format!("name: {app}-{version}")
    };
    format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: bookinfo-{app}, namespace: default}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{{name}, namespace: default, \
         labels: {{app: {app}, version: {version}}}{annotations}}}\n\
         spec:\n  serviceAccountName: bookinfo-{app}\n  containers:\n  - name: {app}\n    image: mesh-app\n\
         \x20   command: [{MESH_APP}]\n    args: {args}\n    ports: [{{containerPort: 9080}}]\n"
    )
}

fn services(pods: &[(&str, &str, &Netns)]) -> String {
    let mut out = String::new();
    for app in ["productpage", "reviews", "ratings"] {
        let addresses: Vec<String> = pods
            .iter()
            .filter(|(a, _, _)| *a == app)
            .map(|(_, name, ns)| {
                format!(
                    "{{addresses: [{}], targetRef: {{kind: Pod, name: {name}, namespace: default}}}}",
                    ns.ip
                )
            })
            .collect();
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {app}, namespace: default}}\n\
             spec: {{clusterIP: {}, selector: {{app: {app}}}, ports: [{{name: http, port: 9080, targetPort: 9080}}]}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {app}-1, namespace: default, labels: {{kubernetes.io/service-name: {app}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 9080}}]\nendpoints: [{}]\n",
            vip(app),
            addresses.join(", ")
        ));
    }
    out
}

#[test]
fn pods_created_through_the_api_server_are_injected_run_and_meshed() {
    let (Some(envoy), Some(kubectl), Some(helm)) = (envoy(), kubectl(), helm()) else {
        return;
    };
    let Some(mut lan) = Lan::new("pods") else {
        return;
    };
    let node = lan.node().clone();
    let dir = temp_dir("pods");
    // The sidecars run `envoy` from the PATH as the proxy's user.
    let envoy_bin = sextant_testing::netns::proxy_envoy(&envoy, &dir);
    let log = |name: &str| std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
    let mut processes = Vec::new();

    // The API server and the control plane, in the node's namespace.
    let testapi = sextant_bin().with_file_name("sextant-testapi");
    processes.push(Process(
        node.command(&testapi)
            .args(["--port", API_PORT, "--data-dir"])
            .arg(dir.join("data"))
            .arg("--kubeconfig")
            .arg(dir.join("kubeconfig"))
            .stdout(Stdio::null())
            .stderr(log("testapi"))
            .spawn()
            .expect("sextant-testapi starts"),
    ));
    wait_for("the test API server", WAIT, || {
        kubectl_in(&node, &kubectl, &dir)
            .args(["get", "namespaces"])
            .output()
            .ok()
            .filter(|o| o.status.success())
    });
    sextant_testing::run(
        kubectl_in(&node, &kubectl, &dir)
            .args(["apply", "-f"])
            .arg(repo("crds")),
    );
    // The chart's injector registration, calling the webhook on the node's address.
    let injector =
        kube_cluster::chart_injector_config(&helm, &format!("https://{NODE_ADDRESS}:15017/inject"));
    apply(&node, &kubectl, &dir, "injector", &injector);
    apply(
        &node,
        &kubectl,
        &dir,
        "namespace",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: default, labels: {istio-injection: enabled}}\n",
    );
    processes.push(Process(
        node.command(sextant_bin())
            .env("KUBECONFIG", dir.join("kubeconfig"))
            .env("XDG_STATE_HOME", dir.join("state"))
            .args(["serve", "--listen-address", &NODE_ADDRESS.to_string()])
            .args(["--debounce-after-ms", "50"])
            .args(["--sidecar-xds-address", &format!("{NODE_ADDRESS}:15012")])
            .stdout(Stdio::null())
            .stderr(log("serve"))
            .spawn()
            .expect("sextant serve starts"),
    ));
    let ready = try_wait_for("sextant to be ready", WAIT, || {
        get(&node, &format!("http://{NODE_ADDRESS}:15014/ready"))
            .ok()
            .filter(|(s, _)| *s == 200)
    });
    if let Err(e) = ready {
        panic!(
            "{e}\n{}",
            std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
        );
    }
    // The Lease holder fills the injector's caBundle; until then the API server cannot call it.
    wait_for("the injector's caBundle", WAIT, || {
        let out = kubectl_in(&node, &kubectl, &dir)
            .args([
                "get",
                "mutatingwebhookconfiguration",
                "sextant-sidecar-injector",
            ])
            .args(["-o", "jsonpath={.webhooks[0].clientConfig.caBundle}"])
            .output()
            .ok()?;
        (!out.stdout.is_empty()).then_some(())
    });

    for (app, version) in [("productpage", "v1"), ("reviews", "v1"), ("ratings", "v1")] {
        let file = dir.join(format!("{app}.yaml"));
        write(&file, &bookinfo_pod(app, version));
        sextant_testing::run(
            kubectl_in(&node, &kubectl, &dir)
                .args(["create", "-f"])
                .arg(&file),
        );
    }
    let reviews_name = sextant_testing::run(kubectl_in(&node, &kubectl, &dir).args([
        "get",
        "pods",
        "-l",
        "app=reviews",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]));
    assert!(
        reviews_name.starts_with("reviews-v1-7f9c8d-"),
        "{reviews_name}"
    );
    // The stored Pods carry the sidecar the webhook added: ratings' a native sidecar, in
    // its init containers after istio-init and running for the Pod's life.
    let stored = |name: &str| -> Value {
        serde_json::from_str(&sextant_testing::run(
            kubectl_in(&node, &kubectl, &dir).args(["get", "pod", name, "-o", "json"]),
        ))
        .expect("JSON")
    };
    let names = |pod: &Value, key: &str| -> Vec<String> {
        pod["spec"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    };
    let front = stored("productpage-v1");
    assert_eq!(names(&front, "initContainers"), ["istio-init"], "{front}");
    assert!(
        names(&front, "containers").contains(&"istio-proxy".to_owned()),
        "{front}"
    );
    assert_eq!(
        front["metadata"]["labels"]["security.istio.io/tlsMode"],
        "istio"
    );
    // A regular sidecar outlives the application by Istio's terminationDrainDuration.
    let proxy = front["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "istio-proxy")
        .expect("istio-proxy");
    assert_eq!(
        proxy["lifecycle"]["preStop"]["sleep"]["seconds"], 5,
        "{proxy}"
    );
    let native = stored("ratings-v1");
    assert_eq!(
        names(&native, "initContainers"),
        ["istio-init", "istio-proxy"],
        "{native}"
    );
    assert_eq!(names(&native, "containers"), ["ratings"], "{native}");
    assert_eq!(
        native["spec"]["initContainers"][1]["restartPolicy"], "Always",
        "{native}"
    );

    // The shim runs them.
    let path = [
        sextant_bin().parent().expect("dir").to_owned(),
        envoy_bin.parent().expect("dir").to_owned(),
        Path::new(MESH_APP).parent().expect("dir").to_owned(),
    ]
    .iter()
    .map(|p| p.display().to_string())
    .chain(["/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()])
    .collect::<Vec<_>>()
    .join(":");
    let (shim_node, shim_kubectl, shim_dir) = (node.clone(), kubectl.clone(), dir.clone());
    let mut kubelet = Kubelet::new(
        move || kubectl_in(&shim_node, &shim_kubectl, &shim_dir),
        &dir.join("pods"),
        path,
    );
    std::fs::create_dir_all(dir.join("pods")).expect("pods dir");
    kubelet
        .sync(&mut lan)
        .unwrap_or_else(|e| panic!("the shim: {e}"));
    let pod = |name: &str| kubelet.pod("default", name).expect("running").netns.clone();
    let (pp, reviews, ratings) = (pod("productpage-v1"), pod(&reviews_name), pod("ratings-v1"));
    apply(
        &node,
        &kubectl,
        &dir,
        "services",
        &services(&[
            ("productpage", "productpage-v1", &pp),
            ("reviews", &reviews_name, &reviews),
            ("ratings", "ratings-v1", &ratings),
        ]),
    );

    // productpage reaches reviews and ratings by Service address, through both sidecars,
    // over mutual TLS with the identity its token proved.
    let page = try_wait_for(
        "productpage to reach reviews and ratings",
        Duration::from_secs(60),
        || {
            productpage(&pp).filter(|p| {
                call(p, "reviews")["status"] == 200 && call(p, "ratings")["status"] == 200
            })
        },
    );
    let page = page.unwrap_or_else(|e| {
        let logs: String = ["productpage-v1", reviews_name.as_str(), "ratings-v1"]
            .iter()
            .map(|name| {
                std::fs::read_to_string(
                    dir.join("pods")
                        .join(format!("default-{name}"))
                        .join("istio-proxy.log"),
                )
                .unwrap_or_default()
            })
            .collect();
        panic!("{e}: {:?}\n{logs}", productpage(&pp))
    });
    for app in ["reviews", "ratings"] {
        let xfcc = call(&page, app)["body"]["xfcc"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            xfcc.contains("URI=spiffe://cluster.local/ns/default/sa/bookinfo-productpage"),
            "{app} saw {xfcc:?}"
        );
    }
    // STRICT for the reviews workload alone, by its labels: the generated Pod's sidecar knows
    // its Pod (from the name in its node id), so it takes the policy and refuses a caller
    // without a sidecar, while productpage, meshed, still gets through.
    let direct = format!("http://{}:9080/", reviews.ip);
    assert_eq!(
        get(&node, &direct).map(|(s, _)| s),
        Ok(200),
        "PERMISSIVE by default"
    );
    apply(
        &node,
        &kubectl,
        &dir,
        "reviews-strict",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {name: reviews-strict, namespace: default}\n\
         spec: {selector: {matchLabels: {app: reviews}}, mtls: {mode: STRICT}}\n",
    );
    wait_for(
        "STRICT on the reviews workload to refuse plaintext",
        WAIT,
        || get(&node, &direct).err(),
    );
    assert!(
        productpage(&pp).is_some_and(|p| call(&p, "reviews")["status"] == 200),
        "meshed callers still reach reviews"
    );
    drop(kubelet);
    drop(processes);
    drop(lan);
    let _ = std::fs::remove_dir_all(&dir);
}
