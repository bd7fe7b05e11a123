//! End to end on the Kubernetes path: the test API server, real kubectl 1.35 applying the CRDs,
//! a small mesh and Istio's bookinfo networking samples unchanged, `sextant serve` watching the
//! cluster through a kubeconfig, and a real Envoy whose routing follows each step. The API server
//! is then stopped (Envoy keeps its configuration and traffic flows) and restarted (Sextant
//! resyncs and later changes arrive).

use std::{collections::BTreeMap, process::Stdio, time::Duration};

use sextant_testing::{
    Backend, Process, Serve, free_port, kubectl, metric, repo, request, split, wait_for,
};

#[path = "kube_cluster.rs"]
mod kube_cluster;
use kube_cluster::Cluster;

fn bookinfo(file: &str) -> String {
    repo("tests/fixtures/istio/samples/bookinfo/networking")
        .join(file)
        .to_str()
        .expect("utf-8")
        .to_owned()
}

/// The `reviews` service with three versions, as a user would write it for a cluster:
/// Service, Pods and their EndpointSlice.
fn mesh_manifest(ip: impl Fn(u8) -> String) -> String {
    let mut out = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, labels: {app: reviews}}\nspec:\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080}]\n",
    );
    let mut eps = String::new();
    for (host, version) in [(1, "v1"), (2, "v2"), (3, "v3")] {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: reviews-{version}, labels: {{app: reviews, version: {version}}}}}\nspec: {{containers: [{{name: reviews, image: docker.io/istio/examples-bookinfo-reviews-{version}:1.20.3}}]}}\n"
        ));
        eps.push_str(&format!(
            "- addresses: ['{}']\n  targetRef: {{kind: Pod, name: reviews-{version}, namespace: default}}\n",
            ip(host)
        ));
    }
    out.push_str(&format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: reviews-abc12, labels: {{kubernetes.io/service-name: reviews}}}}\naddressType: IPv4\nports: [{{name: http, port: 9080, protocol: TCP}}]\nendpoints:\n{eps}"
    ));
    out
}

#[test]
fn kubectl_apply_of_istio_samples_reaches_envoy_and_survives_an_api_server_restart() {
    let (Some(envoy), Some(k)) = (sextant_testing::envoy(), kubectl()) else {
        return;
    };
    let net = 33u8;
    let ip = |host: u8| format!("127.0.{net}.{host}");
    let dir = std::env::temp_dir().join(format!("sextant-e2e-kube-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    // Below the ephemeral range: while the API server is down, no outgoing connection (every
    // watch of every test's replicas) can take its port before it comes back.
    let mut cluster = Cluster::start(&dir, free_port());
    let port = cluster.addr.port();

    cluster.kubectl(&k, &["apply", "-f", repo("crds").to_str().expect("utf-8")]);
    let manifest = dir.join("mesh.yaml");
    std::fs::write(&manifest, mesh_manifest(ip)).expect("write");
    cluster.kubectl(&k, &["apply", "-f", manifest.to_str().expect("utf-8")]);
    for (host, version) in [(1, "v1"), (2, "v2"), (3, "v3")] {
        let status = format!(
            r#"{{"status":{{"phase":"Running","podIP":"{}"}}}}"#,
            ip(host)
        );
        cluster.kubectl(
            &k,
            &[
                "patch",
                "pod",
                &format!("reviews-{version}"),
                "--subresource=status",
                "--type=merge",
                "-p",
                &status,
            ],
        );
    }
    let _backends: Vec<Backend> = [(1, "v1"), (2, "v2"), (3, "v3")]
        .into_iter()
        .map(|(h, v)| Backend::start(&format!("{}:9080", ip(h)), v).expect("backend"))
        .collect();

    let serve = Serve::new();
    let (xds, admin_addr) = (serve.xds, serve.admin_addr());
    let log = dir.join("sextant.log");
    let _sextant = Process(
        serve
            .command(&sextant_testing::sextant_bin())
            .env("KUBECONFIG", cluster.kubeconfig())
            .args(["--debounce-after-ms", "50"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("sextant serve starts"),
    );
    let sextant_log = || std::fs::read_to_string(&log).unwrap_or_default();
    if let Err(e) = serve.wait_ready(Duration::from_secs(30)) {
        panic!("{e}\nsextant's log:\n{}", sextant_log());
    }
    let node = format!(
        "sidecar~{}~client-0.default~default.svc.cluster.local",
        ip(99)
    );
    let proxy = sextant_testing::Envoy::start(&envoy, &dir, &node, xds, &ip(100), false, net);
    let listener = proxy.listener;

    // Istio's samples, unchanged: every service to v1, then reviews 50/50 between v1 and v3.
    cluster.kubectl(
        &k,
        &["apply", "-f", &bookinfo("virtual-service-all-v1.yaml")],
    );
    cluster.kubectl(&k, &["apply", "-f", &bookinfo("destination-rule-all.yaml")]);
    if let Err(e) =
        sextant_testing::try_wait_for("v1 through Envoy", Duration::from_secs(45), || {
            request(listener, "reviews", "/", &[]).filter(|(s, b, _)| *s == 200 && b == "v1")
        })
    {
        panic!("{e}\nsextant's log:\n{}", sextant_log());
    }
    assert_eq!(split(listener, 20), BTreeMap::from([("v1".to_owned(), 20)]));
    cluster.kubectl(
        &k,
        &[
            "apply",
            "-f",
            &bookinfo("virtual-service-reviews-50-v3.yaml"),
        ],
    );
    wait_for("v3 receives traffic", Duration::from_secs(15), || {
        request(listener, "reviews", "/", &[]).filter(|(_, b, _)| b == "v3")
    });
    sextant_testing::assert_even_split(listener, "v1", "v3");
    let table = cluster.kubectl(&k, &["get", "vs"]);
    assert!(
        table.starts_with("NAME") && table.contains("HOSTS"),
        "{table}"
    );
    // The status Sextant writes (this single replica holds the Lease).
    wait_for(
        "status on the VirtualService",
        Duration::from_secs(20),
        || {
            let yaml = cluster.kubectl(&k, &["get", "vs", "reviews", "-o", "yaml"]);
            (yaml.contains("type: Reconciled")
                && yaml.contains("status: \"True\"")
                && yaml.contains("observedGeneration: 2"))
            .then_some(())
        },
    );

    // The API server goes away: Envoy keeps its configuration, traffic flows, Sextant stays
    // ready on its last snapshot and counts the watch errors.
    cluster.stop();
    wait_for("watch errors counted", Duration::from_secs(20), || {
        metric(admin_addr, "sextant_kube_watch_errors_total").filter(|v| *v >= 1.0)
    });
    let counts = split(listener, 40);
    assert_eq!(
        counts.get("v1").copied().unwrap_or(0) + counts.get("v3").copied().unwrap_or(0),
        40,
        "{counts:?}"
    );
    assert!(request(admin_addr, "localhost", "/ready", &[]).is_some_and(|(s, _, _)| s == 200));

    // It comes back with its data: Sextant resyncs, and a later change reaches Envoy.
    let cluster = Cluster::start(&dir, port);
    cluster.kubectl(
        &k,
        &["apply", "-f", &bookinfo("virtual-service-reviews-v3.yaml")],
    );
    if let Err(e) = sextant_testing::try_wait_for(
        "all traffic to v3 after the restart",
        Duration::from_secs(60),
        || {
            split(listener, 10)
                .get("v3")
                .filter(|n| **n == 10)
                .map(|_| ())
        },
    ) {
        panic!("{e}\nsextant's log:\n{}", sextant_log());
    }
    drop(proxy);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The type of the first response of an ADS stream for clusters, from the xDS server on
/// `port`.
fn cds_response(port: u16) -> Option<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .ok()?
            .connect()
            .await
            .ok()?;
        let node = "sidecar~10.1.0.9~probe.default~default.svc.cluster.local";
        let first = tokio::time::timeout(
            Duration::from_secs(5),
            sextant_testing::first_clusters(channel, node, None),
        )
        .await
        .ok()?
        .ok()?;
        Some(first.type_url)
    })
}

#[test]
fn two_replicas_both_serve_and_exactly_one_writes_status() {
    let Some(k) = kubectl() else { return };
    let dir = std::env::temp_dir().join(format!("sextant-e2e-replicas-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cluster = Cluster::start(&dir, 0);
    cluster.kubectl(&k, &["apply", "-f", repo("crds").to_str().expect("utf-8")]);
    // One VirtualService Sextant accepts, one it rejects (the schema allows any regex string;
    // Istio's rules do not).
    let configs = dir.join("vs.yaml");
    let write = |generation_marker: &str| {
        std::fs::write(
            &configs,
            format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: good}}\nspec:\n  hosts: [reviews]\n  http:\n  - route: [{{destination: {{host: reviews}}}}]\n    timeout: {generation_marker}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: bad}}\nspec:\n  hosts: [ratings]\n  http:\n  - match: [{{uri: {{regex: '('}}}}]\n    route: [{{destination: {{host: ratings}}}}]\n"),
        )
        .expect("write");
    };
    write("5s");
    cluster.kubectl(&k, &["apply", "-f", configs.to_str().expect("utf-8")]);

    // Replica 0's webhook port is fixed before it starts: the webhook configuration names it.
    let webhook_port = free_port();
    let start = |n: usize| {
        let serve = if n == 0 {
            Serve::with_webhook(webhook_port)
        } else {
            Serve::new()
        };
        let process = Process(
            serve
                .command(&sextant_testing::sextant_bin())
                .env("KUBECONFIG", cluster.kubeconfig())
                .env("POD_NAME", format!("sextant-{n}"))
                .args(["--lease-duration-seconds", "3"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(format!("sextant-{n}.log"))).expect("log"))
                .spawn()
                .expect("sextant serve starts"),
        );
        (process, serve.xds, serve.admin_addr())
    };
    let mut replicas = vec![start(0), start(1)];
    for (_, xds, admin) in &replicas {
        wait_for("replica ready", Duration::from_secs(30), || {
            request(*admin, "localhost", "/ready", &[]).filter(|(s, _, _)| *s == 200)
        });
        // Both serve xDS.
        let url = wait_for("a CDS response", Duration::from_secs(10), || {
            cds_response(*xds)
        });
        assert!(url.ends_with("envoy.config.cluster.v3.Cluster"), "{url}");
    }
    let jsonpath = |name: &str, path: &str| {
        cluster.kubectl(&k, &["get", "vs", name, "-o", &format!("jsonpath={path}")])
    };
    wait_for(
        "status of both VirtualServices",
        Duration::from_secs(20),
        || {
            (jsonpath("good", "{.status.conditions[0].status}") == "True"
                && jsonpath("bad", "{.status.conditions[0].status}") == "False")
                .then_some(())
        },
    );
    let message = jsonpath("bad", "{.status.conditions[0].message}");
    assert!(
        message.contains("spec.http[0].match[0].uri.regex"),
        "{message}"
    );
    assert_eq!(jsonpath("good", "{.status.observedGeneration}"), "1");

    // Exactly one replica leads and writes; the other writes nothing.
    let (leaders, writers): (Vec<f64>, Vec<f64>) = replicas
        .iter()
        .map(|(_, _, admin)| {
            (
                metric(*admin, "sextant_leader").unwrap_or(-1.0),
                metric(*admin, "sextant_status_writes_total").unwrap_or(-1.0),
            )
        })
        .unzip();
    let leader = leaders.iter().position(|l| *l == 1.0).expect("a leader");
    assert_eq!(
        leaders.iter().filter(|l| **l == 1.0).count(),
        1,
        "{leaders:?}"
    );
    assert!(writers[leader] >= 2.0, "{writers:?}");
    assert_eq!(writers[1 - leader], 0.0, "{writers:?}");

    // The admission webhook: registered without a caBundle, which the Lease holder fills in
    // from the CA both replicas share; then an invalid VirtualService (valid for the CRD
    // schema) is denied with every error, and one the schema rejects never reaches it.
    let webhook = dir.join("webhook.yaml");
    std::fs::write(
        &webhook,
        format!("apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: sextant-validator}}\nwebhooks:\n- name: validation.sextant.io\n  clientConfig: {{url: 'https://127.0.0.1:{webhook_port}/validate'}}\n  rules:\n  - operations: [CREATE, UPDATE]\n    apiGroups: [networking.istio.io]\n    apiVersions: ['*']\n    resources: [virtualservices, destinationrules]\n  failurePolicy: Fail\n  sideEffects: None\n  admissionReviewVersions: [v1]\n"),
    )
    .expect("write");
    cluster.kubectl(&k, &["apply", "-f", webhook.to_str().expect("utf-8")]);
    wait_for(
        "caBundle set by the Lease holder",
        Duration::from_secs(40),
        || {
            let bundle = cluster.kubectl(
                &k,
                &[
                    "get",
                    "validatingwebhookconfiguration",
                    "sextant-validator",
                    "-o",
                    "jsonpath={.webhooks[0].clientConfig.caBundle}",
                ],
            );
            (bundle.len() > 100).then_some(())
        },
    );
    let invalid = dir.join("invalid.yaml");
    std::fs::write(
        &invalid,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: worse}\nspec:\n  hosts: [ratings]\n  http:\n  - match: [{uri: {regex: '('}, headers: {x-user: {prefix: ''}}}]\n    route: [{destination: {host: ratings}}]\n",
    )
    .expect("write");
    let stderr = cluster.kubectl_fails(&k, &["apply", "-f", invalid.to_str().expect("utf-8")]);
    assert!(
        stderr.contains("admission webhook \"validation.sextant.io\" denied the request"),
        "{stderr}"
    );
    assert!(
        stderr.contains("spec.http[0].match[0].uri.regex"),
        "{stderr}"
    );
    assert!(
        stderr.contains("spec.http[0].match[0].headers[x-user].prefix"),
        "{stderr}"
    );
    std::fs::write(
        &invalid,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: worse}\nspec:\n  hosts: [ratings]\n  http:\n  - route: [{destination: {host: ratings}, weight: fifty}]\n",
    )
    .expect("write");
    let stderr = cluster.kubectl_fails(&k, &["apply", "-f", invalid.to_str().expect("utf-8")]);
    assert!(
        stderr.contains("The VirtualService \"worse\" is invalid"),
        "{stderr}"
    );
    assert!(stderr.contains("spec.http[0].route[0].weight"), "{stderr}");

    // The webhook names replica 0 alone (no Service in front here), which may be the one
    // about to go away.
    cluster.kubectl(
        &k,
        &[
            "delete",
            "validatingwebhookconfiguration",
            "sextant-validator",
        ],
    );

    // The leader goes away: the other takes the Lease over and reports the next change.
    replicas.remove(leader);
    write("6s");
    cluster.kubectl(&k, &["apply", "-f", configs.to_str().expect("utf-8")]);
    wait_for(
        "the survivor reports generation 2",
        Duration::from_secs(30),
        || (jsonpath("good", "{.status.observedGeneration}") == "2").then_some(()),
    );
    let admin = replicas[0].2;
    assert_eq!(metric(admin, "sextant_leader"), Some(1.0));
    assert!(metric(admin, "sextant_status_writes_total").unwrap_or(0.0) >= 1.0);
    drop(replicas);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The secure xDS port with service-account tokens, as Istio's sidecars authenticate: the
/// token is reviewed by the API server (TokenReview, audience `istio-ca`), the identity is the
/// service account, and the node must be in its namespace.
#[test]
fn service_account_tokens_reviewed_by_the_api_server_open_the_secure_xds_port() {
    let Some(k) = kubectl() else { return };
    let dir = std::env::temp_dir().join(format!("sextant-e2e-token-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let tokens = BTreeMap::from([
        (
            "productpage-token".to_owned(),
            "system:serviceaccount:default:productpage".to_owned(),
        ),
        ("alice-token".to_owned(), "alice".to_owned()),
        (
            "vault-token".to_owned(),
            "system:serviceaccount:default:productpage@vault".to_owned(),
        ),
    ]);
    let cluster = Cluster::with_tokens(&dir, 0, tokens);
    cluster.kubectl(&k, &["apply", "-f", repo("crds").to_str().expect("utf-8")]);
    let serve = Serve::new();
    let log = dir.join("sextant.log");
    let _sextant = Process(
        serve
            .command(&sextant_testing::sextant_bin())
            .env("KUBECONFIG", cluster.kubeconfig())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("sextant serve starts"),
    );
    if let Err(e) = serve.wait_ready(Duration::from_secs(30)) {
        panic!(
            "{e}\nsextant's log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    // The root, as a user would fetch it from the cluster.
    let root_pem = cluster.sextant_root(&k);
    let node = |ns: &str| format!("sidecar~10.1.0.1~productpage-0.{ns}~{ns}.svc.cluster.local");
    let client = |token: &str| sextant_testing::SecureClient {
        root_pem: root_pem.clone(),
        identity: None,
        token: Some(token.to_owned()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let served = client("productpage-token")
            .clusters(serve.secure_xds, &node("default"))
            .await
            .expect("a service-account token opens the stream");
        assert!(!served.resources.is_empty());
        let elsewhere = client("productpage-token")
            .clusters(serve.secure_xds, &node("other"))
            .await
            .expect_err("another namespace");
        assert_eq!(
            elsewhere.code(),
            tonic::Code::PermissionDenied,
            "{elsewhere:?}"
        );
        assert!(
            elsewhere.message().contains("matched other/"),
            "{elsewhere:?}"
        );
        let user = client("alice-token")
            .clusters(serve.secure_xds, &node("default"))
            .await
            .expect_err("not a service account");
        assert_eq!(user.code(), tonic::Code::Unauthenticated);
        assert!(user.message().contains("not a service account"), "{user:?}");
        let elsewhere_audience = client("vault-token")
            .clusters(serve.secure_xds, &node("default"))
            .await
            .expect_err("a token for another audience");
        assert_eq!(elsewhere_audience.code(), tonic::Code::Unauthenticated);
        assert!(
            elsewhere_audience
                .message()
                .contains("invalid for the target audiences"),
            "{elsewhere_audience:?}"
        );
        let unknown = client("forged")
            .clusters(serve.secure_xds, &node("default"))
            .await
            .expect_err("unknown token");
        assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
        assert!(
            unknown.message().contains("invalid bearer token"),
            "{unknown:?}"
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_mesh_config_configmap_is_watched() {
    let Some(k) = kubectl() else { return };
    let dir = std::env::temp_dir().join(format!("sextant-e2e-mesh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cluster = Cluster::start(&dir, 0);
    cluster.kubectl(&k, &["apply", "-f", repo("crds").to_str().expect("utf-8")]);
    let manifest = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("manifest");
        path.to_str().expect("utf-8").to_owned()
    };
    let service = manifest(
        "service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\nspec:\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080}]\n",
    );
    let namespace = manifest(
        "namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: mesh-home}\n",
    );
    cluster.kubectl(&k, &["apply", "-f", &service, "-f", &namespace]);
    let serve = Serve::new();
    let log = dir.join("sextant.log");
    let _sextant = Process(
        serve
            .command(&sextant_testing::sextant_bin())
            .env("KUBECONFIG", cluster.kubeconfig())
            .env("POD_NAMESPACE", "mesh-home")
            .args(["--debounce-after-ms", "20", "--debounce-max-ms", "200"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("sextant serve starts"),
    );
    if let Err(e) = serve.wait_ready(Duration::from_secs(30)) {
        panic!(
            "{e}\nsextant's log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let dump = || {
        sextant_testing::http_get(
            serve.admin_addr(),
            "/debug/config_dump?proxy=sidecar~10.1.0.9~client.default~default.svc.cluster.local",
        )
        .unwrap_or_default()
    };
    wait_for("no ConfigMap: ALLOW_ANY", Duration::from_secs(20), || {
        dump().contains("allow_any").then_some(())
    });
    let mesh = manifest(
        "mesh.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: mesh-home}\ndata:\n  mesh: |\n    outboundTrafficPolicy:\n      mode: REGISTRY_ONLY\n",
    );
    cluster.kubectl(&k, &["apply", "-f", &mesh]);
    wait_for(
        "the ConfigMap's REGISTRY_ONLY",
        Duration::from_secs(20),
        || dump().contains("block_all").then_some(()),
    );
    cluster.kubectl(&k, &["delete", "configmap", "istio", "-n", "mesh-home"]);
    wait_for("deleted: ALLOW_ANY again", Duration::from_secs(20), || {
        let d = dump();
        (d.contains("allow_any") && !d.contains("block_all")).then_some(())
    });
    let _ = std::fs::remove_dir_all(&dir);
}
