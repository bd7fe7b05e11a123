//! Real kubectl 1.35's typed commands against the test API server, as a new user tries it:
//! `kubectl create namespace`, `configmap`, `secret`, `deployment`, `service`, `role`, ...
//! send protobuf bodies, which the server decodes for every built-in kind; what `get -o json`
//! shows afterwards is what was asked for. A CEL rule that cannot be evaluated reports its own
//! message, in the API server's words.

use std::path::Path;

use serde_json::Value;
use sextant_testing::{kubectl, repo};

#[path = "support/api.rs"]
mod api;
use api::{Api, temp_dir};

fn json(api: &Api, k: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&api.ok(k, &all)).expect("kubectl prints JSON")
}

#[test]
fn kubectl_create_commands_send_protobuf_the_server_decodes() {
    let Some(k) = kubectl() else { return };
    let dir = temp_dir("testapi-kubectl-create");
    let api = Api::start(&dir);
    // The body really is protobuf (kubectl logs the request headers at -v=8).
    let out = api.kubectl(&k, &["create", "namespace", "bookinfo", "-v=8"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "{log}"
    );
    let ns = json(&api, &k, &["get", "namespace", "bookinfo"]);
    assert_eq!(ns["metadata"]["name"], "bookinfo");
    assert_eq!(ns["status"]["phase"], "Active", "{ns}");

    let n = ["-n", "bookinfo"];
    let create = |args: &[&str]| {
        let mut all = vec!["create"];
        all.extend(args);
        all.extend(n);
        api.ok(&k, &all)
    };
    create(&[
        "configmap",
        "settings",
        "--from-literal=mode=fast",
        "--from-literal=empty=",
    ]);
    create(&["secret", "generic", "creds", "--from-literal=user=admin"]);
    create(&["serviceaccount", "reviews"]);
    create(&[
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=0",
        "--port=8080",
    ]);
    create(&["service", "clusterip", "web", "--tcp=80:8080"]);
    create(&[
        "role",
        "reader",
        "--verb=get,list",
        "--resource=pods,services",
    ]);
    create(&[
        "rolebinding",
        "reader",
        "--role=reader",
        "--serviceaccount=bookinfo:reviews",
    ]);
    create(&[
        "poddisruptionbudget",
        "web",
        "--selector=app=web",
        "--min-available=50%",
    ]);

    let get = |args: &[&str]| {
        let mut all = vec!["get"];
        all.extend(args);
        all.extend(n);
        json(&api, &k, &all)
    };
    let cm = get(&["configmap", "settings"]);
    assert_eq!(
        cm["data"],
        serde_json::json!({"mode": "fast", "empty": ""}),
        "{cm}"
    );
    let secret = get(&["secret", "creds"]);
    assert_eq!(secret["data"]["user"], "YWRtaW4=", "{secret}");
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(
        get(&["serviceaccount", "reviews"])["metadata"]["namespace"],
        "bookinfo"
    );
    let deployment = get(&["deployment", "web"]);
    assert_eq!(
        deployment["spec"]["replicas"], 0,
        "an explicit zero: {deployment}"
    );
    assert_eq!(deployment["spec"]["selector"]["matchLabels"]["app"], "web");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (&container["image"], &container["ports"][0]["containerPort"]),
        (&serde_json::json!("nginx:1.27"), &serde_json::json!(8080)),
        "{deployment}"
    );
    assert!(
        deployment["metadata"]["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{deployment}"
    );
    let service = get(&["service", "web"]);
    assert_eq!(
        service["spec"]["ports"][0],
        serde_json::json!({"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}),
        "{service}"
    );
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert!(
        service["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.96.")),
        "a cluster IP is allocated: {service}"
    );
    let role = get(&["role", "reader"]);
    assert_eq!(
        role["rules"][0],
        serde_json::json!({"apiGroups": [""], "resources": ["pods", "services"], "verbs": ["get", "list"]}),
        "{role}"
    );
    let binding = get(&["rolebinding", "reader"]);
    assert_eq!(
        binding["roleRef"],
        serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"})
    );
    assert_eq!(
        binding["subjects"][0],
        serde_json::json!({"kind": "ServiceAccount", "name": "reviews", "namespace": "bookinfo"})
    );
    let pdb = get(&["poddisruptionbudget", "web"]);
    assert_eq!(pdb["spec"]["minAvailable"], "50%", "IntOrString: {pdb}");

    // Deletes (kubectl sends DeleteOptions) remove the object.
    api.ok(&k, &["delete", "deployment", "web", "-n", "bookinfo"]);
    let out = api.kubectl(&k, &["get", "deployment", "web", "-n", "bookinfo"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_cel_rule_that_fails_to_evaluate_reports_its_message() {
    let Some(k) = kubectl() else { return };
    let dir = temp_dir("testapi-kubectl-cel");
    let api = Api::start(&dir);
    api.ok(&k, &["apply", "-f", repo("crds").to_str().expect("path")]);
    let bad = dir.join("dr.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  trafficPolicy:\n    connectionPool:\n      tcp: {connectTimeout: x}\n",
    )
    .expect("write");
    let out = api.kubectl(&k, &["apply", "-f", bad.to_str().expect("path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout: Invalid value: \"string\": time: invalid duration \"x\" evaluating rule: must be a valid duration greater than 1ms"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("Parsing Error"), "{stderr}");
    let vs = dir.join("vs.yaml");
    std::fs::write(
        &vs,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews}}]\n    timeout: x\n",
    )
    .expect("write");
    let out = api.kubectl(&k, &["apply", "-f", vs.to_str().expect("path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "spec.http[0].timeout: Invalid value: \"string\": time: invalid duration \"x\" evaluating rule: must be a valid duration greater than 1ms"
        ),
        "{stderr}"
    );
}
