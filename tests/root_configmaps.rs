//! What Istio's sidecars need from istiod in a cluster, against the test API server with real
//! kubectl: the ConfigMap `istio-ca-root-cert` (key `root-cert.pem`, the mesh's trust bundle)
//! in every namespace, kept by the Lease holder: namespaces created later get it, and an
//! edited or deleted one is put back.

mod kube_cluster;

use std::{process::Stdio, time::Duration};

use kube_cluster::Cluster;
use sextant_testing::{Process, Serve, free_port, kubectl, repo, sextant_bin, try_wait_for};

#[test]
fn every_namespace_gets_the_mesh_root_and_keeps_it() {
    let Some(k) = kubectl() else { return };
    let dir = std::env::temp_dir().join(format!("sextant-rootcm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let cluster = Cluster::start(&dir, free_port());
    cluster.kubectl(&k, &["apply", "-f", repo("crds").to_str().expect("utf-8")]);
    // `kubectl apply` sends JSON, which the test API server reads for every kind.
    let namespace = |name: &str| {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n"),
        )
        .expect("namespace manifest");
        cluster.kubectl(&k, &["apply", "-f", path.to_str().expect("utf-8")]);
    };
    namespace("early");
    let ca = dir.join("ca");
    let serve = Serve::new();
    let log = dir.join("sextant.log");
    let _sextant = Process(
        serve
            .command(&sextant_bin())
            .env("KUBECONFIG", cluster.kubeconfig())
            .args(["--ca-dir", ca.to_str().expect("utf-8")])
            .args(["--lease-duration-seconds", "3"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("sextant serve starts"),
    );
    if let Err(e) = serve.wait_ready(Duration::from_secs(30)) {
        panic!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    let root = std::fs::read_to_string(ca.join("ca.crt")).expect("the CA's root");
    // What the ConfigMap in `ns` holds, or None.
    let held = |ns: &str| -> Option<String> {
        let out = cluster
            .kubectl_command(
                &k,
                &[
                    "get",
                    "configmap",
                    "istio-ca-root-cert",
                    "-n",
                    ns,
                    "-o",
                    "json",
                ],
            )
            .output()
            .ok()?;
        let map: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (map["metadata"]["labels"]["istio.io/config"] == "true")
            .then(|| map["data"]["root-cert.pem"].as_str().map(str::to_owned))
            .flatten()
    };
    let wait = |what: &str, ns: &str| {
        if let Err(e) = try_wait_for(what, Duration::from_secs(30), || {
            held(ns).filter(|h| *h == root)
        }) {
            panic!(
                "{e}: {:?}\n{}",
                held(ns),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    };
    wait("the root in a namespace that existed", "early");
    wait("the root in default", "default");

    // A namespace created later gets it too.
    namespace("later");
    wait("the root in a new namespace", "later");

    // Edited or deleted, it is put back.
    cluster.kubectl(
        &k,
        &[
            "patch",
            "configmap",
            "istio-ca-root-cert",
            "-n",
            "early",
            "--type=merge",
            "-p",
            r#"{"data":{"root-cert.pem":"tampered"}}"#,
        ],
    );
    wait("an edited bundle restored", "early");
    cluster.kubectl(
        &k,
        &["delete", "configmap", "istio-ca-root-cert", "-n", "later"],
    );
    wait("a deleted bundle recreated", "later");

    // Namespaces istiod leaves alone stay alone.
    assert_eq!(held("kube-public"), None);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `sextant serve` on `cluster`, without `--ca-dir`: the CA comes from the cluster.
fn serve_on(cluster: &Cluster, log: &std::path::Path) -> (Serve, Process) {
    let serve = Serve::new();
    let process = Process(
        serve
            .command(&sextant_bin())
            .env("KUBECONFIG", cluster.kubeconfig())
            .args(["--lease-duration-seconds", "2"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("sextant serve starts"),
    );
    if let Err(e) = serve.wait_ready(Duration::from_secs(30)) {
        panic!("{e}\n{}", std::fs::read_to_string(log).unwrap_or_default());
    }
    (serve, process)
}

#[test]
fn the_clusters_root_survives_restarts_and_a_plug_in_ca_replaces_it() {
    let (Some(k), Some(openssl)) = (kubectl(), sextant_testing::openssl()) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("sextant-rootcm2-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let cluster = Cluster::start(&dir, free_port());
    cluster.kubectl(&k, &["apply", "-f", repo("crds").to_str().expect("utf-8")]);
    let bundle = || -> Option<String> {
        let out = cluster
            .kubectl_command(
                &k,
                &["get", "configmap", "istio-ca-root-cert", "-o", "json"],
            )
            .output()
            .ok()?;
        let map: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        map["data"]["root-cert.pem"].as_str().map(str::to_owned)
    };
    let log = dir.join("sextant.log");
    let first = {
        let _sextant = serve_on(&cluster, &log);
        try_wait_for("the root published", Duration::from_secs(30), bundle).unwrap_or_else(|e| {
            panic!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default())
        })
    };
    // The Secret sextant-ca holds it.
    assert_eq!(cluster.sextant_root(&k), first);

    // A restart: the same root, rewritten by the new process once the old one's is tampered.
    {
        let (serve, _sextant) = serve_on(&cluster, &log);
        try_wait_for("the new process leads", Duration::from_secs(30), || {
            sextant_testing::metric(serve.admin_addr(), "sextant_leader").filter(|v| *v == 1.0)
        })
        .expect("leader");
        cluster.kubectl(
            &k,
            &[
                "patch",
                "configmap",
                "istio-ca-root-cert",
                "--type=merge",
                "-p",
                r#"{"data":{"root-cert.pem":"tampered"}}"#,
            ],
        );
        try_wait_for("the same root restored", Duration::from_secs(30), || {
            bundle().filter(|b| *b == first)
        })
        .expect("the root after a restart");
    }

    // A plug-in CA in the Secret cacerts: the operator's root is the mesh's from the next start.
    let cacerts = dir.join("cacerts");
    sextant_testing::plugin_ca(&openssl, &cacerts);
    let read = |f: &str| std::fs::read_to_string(cacerts.join(f)).expect("file");
    // `kubectl create secret` sends protobuf; its JSON goes through `apply`.
    let secret_json = cluster.kubectl(
        &k,
        &[
            "create",
            "secret",
            "generic",
            "cacerts",
            "--dry-run=client",
            "-o",
            "json",
            &format!("--from-file={}", cacerts.display()),
        ],
    );
    std::fs::write(dir.join("cacerts.json"), secret_json).expect("secret");
    cluster.kubectl(
        &k,
        &[
            "apply",
            "-f",
            dir.join("cacerts.json").to_str().expect("utf-8"),
        ],
    );
    {
        let _sextant = serve_on(&cluster, &log);
        try_wait_for(
            "the operator's root published",
            Duration::from_secs(30),
            || bundle().filter(|b| *b == read("root-cert.pem")),
        )
        .unwrap_or_else(|e| {
            panic!(
                "{e}: {:?}\n{}",
                bundle(),
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
}
