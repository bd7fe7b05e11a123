//! Admission webhooks configured by `clientConfig.service`, as the chart registers Sextant's:
//! the test API server resolves the Service through its EndpointSlices and calls the ready
//! endpoint over HTTPS, verifying the certificate for `NAME.NAMESPACE.svc`. A Service without
//! a ready endpoint fails the call, and the failure policy decides.

use std::{path::Path, process::Stdio, time::Duration};

use sextant_testing::{Process, Serve, helm, kubectl, repo, wait_for};

#[path = "support/api.rs"]
mod api;
use api::{Api, temp_dir};

/// The chart's Service in front of Sextant (its webhook port is `https-webhook` behind 443),
/// and one EndpointSlice of it with one endpoint at `address:port`, ready or not.
fn service_with_endpoint(address: &str, port: u16, ready: bool) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: sextant, namespace: sextant-system}}\nspec:\n  selector: {{app: sextant}}\n  ports:\n  - {{name: https-webhook, port: 443, targetPort: https-webhook}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: sextant-abcde\n  namespace: sextant-system\n  labels: {{kubernetes.io/service-name: sextant}}\naddressType: IPv4\nports:\n- {{name: https-webhook, port: {port}, protocol: TCP}}\nendpoints:\n- addresses: ['{address}']\n  conditions: {{ready: {ready}}}\n"
    )
}

/// A VirtualService that Sextant's validation rejects (the CRD schema accepts it).
const INVALID: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: worse}\nspec:\n  hosts: [ratings]\n  http:\n  - match: [{uri: {regex: '('}}]\n    route: [{destination: {host: ratings}}]\n";

const VALID: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: fine}\nspec:\n  hosts: [ratings]\n  http:\n  - route: [{destination: {host: ratings}}]\n";

fn apply(api: &Api, k: &Path, dir: &Path, name: &str, yaml: &str) -> std::process::Output {
    let file = dir.join(name);
    std::fs::write(&file, yaml).expect("write");
    api.kubectl(k, &["apply", "-f", file.to_str().expect("utf-8")])
}

/// Applies `yaml`, which must succeed.
fn applied(api: &Api, k: &Path, dir: &Path, name: &str, yaml: &str) {
    let out = apply(api, k, dir, name, yaml);
    assert!(
        out.status.success(),
        "{yaml}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cluster_with_crds(name: &str) -> Option<(std::path::PathBuf, std::path::PathBuf, Api)> {
    let k = kubectl()?;
    let dir = temp_dir(name);
    let api = Api::start(&dir);
    api.ok(&k, &["apply", "-f", repo("crds").to_str().expect("path")]);
    api.ok(&k, &["create", "namespace", "sextant-system"]);
    Some((k, dir, api))
}

#[test]
fn a_service_without_a_ready_endpoint_fails_the_call_and_the_failure_policy_decides() {
    let Some((k, dir, api)) = cluster_with_crds("testapi-webhook-unready") else {
        return;
    };
    let out = apply(
        &api,
        &k,
        &dir,
        "svc.yaml",
        &service_with_endpoint("127.0.0.1", 1, false),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = |policy: &str| {
        format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: sextant-validator}}\nwebhooks:\n- name: validation.sextant.io\n  clientConfig:\n    service: {{name: sextant, namespace: sextant-system, path: /validate, port: 443}}\n  rules:\n  - operations: [CREATE, UPDATE]\n    apiGroups: [networking.istio.io]\n    apiVersions: ['*']\n    resources: [virtualservices]\n  failurePolicy: {policy}\n  sideEffects: None\n  admissionReviewVersions: [v1]\n"
        )
    };
    applied(&api, &k, &dir, "hook.yaml", &config("Fail"));
    let out = apply(&api, &k, &dir, "vs.yaml", VALID);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains(
            "failed calling webhook \"validation.sextant.io\": no endpoints available for service \"sextant\""
        ),
        "{stderr}"
    );
    // A Service port the webhook does not name.
    let mut other_port = config("Fail");
    other_port = other_port.replace("port: 443", "port: 8443");
    applied(&api, &k, &dir, "hook.yaml", &other_port);
    let out = apply(&api, &k, &dir, "vs.yaml", VALID);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no service port 8443 found for service \"sextant\""),
        "{stderr}"
    );
    applied(&api, &k, &dir, "hook.yaml", &config("Ignore"));
    let out = apply(&api, &k, &dir, "vs.yaml", VALID);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_charts_webhook_reaches_sextant_serve_through_its_service() {
    let Some(helm) = helm() else { return };
    let Some((k, dir, api)) = cluster_with_crds("testapi-webhook-chart") else {
        return;
    };
    let serve = Serve::new();
    let out = apply(
        &api,
        &k,
        &dir,
        "svc.yaml",
        &service_with_endpoint("127.0.0.1", serve.webhook, true),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The chart's own configuration, unchanged: `clientConfig.service`, no caBundle.
    let rendered = sextant_testing::run(
        std::process::Command::new(&helm)
            .args(["template", "sextant"])
            .arg(repo("charts/sextant"))
            .args([
                "-n",
                "sextant-system",
                "--show-only",
                "templates/webhook.yaml",
            ]),
    );
    assert!(rendered.contains("service:"), "{rendered}");
    let out = apply(&api, &k, &dir, "webhook.yaml", &rendered);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let log = dir.join("sextant.log");
    let _sextant = Process(
        serve
            .command(&sextant_testing::sextant_bin())
            .env("KUBECONFIG", &api.kubeconfig)
            .env("POD_NAMESPACE", "sextant-system")
            .env("POD_NAME", "sextant-0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("sextant serve starts"),
    );
    if let Err(e) = serve.wait_ready(Duration::from_secs(30)) {
        panic!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    // The Lease holder fills the caBundle in.
    wait_for("the caBundle", Duration::from_secs(40), || {
        let bundle = api.ok(
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
    });
    let out = apply(&api, &k, &dir, "invalid.yaml", INVALID);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("admission webhook \"validation.sextant.io\" denied the request"),
        "{stderr}"
    );
    assert!(
        stderr.contains("spec.http[0].match[0].uri.regex"),
        "{stderr}"
    );
    let out = apply(&api, &k, &dir, "valid.yaml", VALID);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
