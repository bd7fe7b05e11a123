//! What a Pod being created says about its workload, derived as Istio's injector derives it
//! (`pkg/kube/util.go` `GetDeployMetaFromPod`, the injection template's canonical labels):
//! the Pod usually has no name yet, only its controller.

use serde_json::Value;

/// The workload's name: the Deployment behind a ReplicaSet's Pod (the ReplicaSet's name less
/// its `pod-template-hash`), an Argo Rollout likewise, an OpenShift DeploymentConfig, the
/// CronJob behind a Job named `NAME-TIMESTAMP`, else the controller's name, else the Pod's.
pub fn deployment_name(pod: &Value) -> String {
    let metadata = &pod["metadata"];
    let name = metadata["name"].as_str().unwrap_or_default();
    let generated = metadata["generateName"]
        .as_str()
        .is_some_and(|g| !g.is_empty());
    let controller = metadata["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["controller"] == true);
    let (true, Some(controller)) = (generated, controller) else {
        return name.to_owned();
    };
    let owner = controller["name"].as_str().unwrap_or_default();
    let label = |key: &str| metadata["labels"][key].as_str().filter(|v| !v.is_empty());
    let hash_suffix = |hash: &str| {
        owner
            .strip_suffix(hash)
            .and_then(|rest| rest.strip_suffix('-'))
    };
    let derived = match controller["kind"].as_str().unwrap_or_default() {
        "ReplicaSet" => label("pod-template-hash")
            .and_then(hash_suffix)
            .or_else(|| label("rollouts-pod-template-hash").and_then(hash_suffix))
            .unwrap_or(owner),
        "ReplicationController" => label("deploymentconfig").unwrap_or(owner),
        "Job" => cron_job(owner).unwrap_or(owner),
        _ => owner,
    };
    if derived.is_empty() {
        name.to_owned()
    } else {
        derived.to_owned()
    }
}

/// The CronJob of a Job it created, `NAME-` and 8 to 10 digits.
fn cron_job(job: &str) -> Option<&str> {
    let (name, stamp) = job.rsplit_once('-')?;
    let digits = (8..=10).contains(&stamp.len()) && stamp.bytes().all(|b| b.is_ascii_digit());
    (digits && !name.is_empty()).then_some(name)
}

/// `service.istio.io/canonical-name`: the label if set, else `app.kubernetes.io/name`, else
/// `app`, else the workload's name; at most 63 characters, without leading or trailing
/// `-`, `_` or `.`.
pub fn canonical_name(labels: &Value, workload: &str) -> String {
    let name = first_label(
        labels,
        &[
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ],
    )
    .unwrap_or(workload);
    let cut: String = name.chars().take(63).collect();
    cut.trim_matches(['-', '_', '.']).to_owned()
}

/// `service.istio.io/canonical-revision`: the label if set, else `app.kubernetes.io/version`,
/// else `version`, else `latest`.
pub fn canonical_revision(labels: &Value) -> String {
    first_label(
        labels,
        &[
            "service.istio.io/canonical-revision",
            "app.kubernetes.io/version",
            "version",
        ],
    )
    .unwrap_or("latest")
    .to_owned()
}

fn first_label<'a>(labels: &'a Value, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| labels[*k].as_str().filter(|v| !v.is_empty()))
}

/// The Pod as messages name it: `NAMESPACE/NAME`, or its name's prefix while the API server
/// has yet to generate the rest.
pub fn display_name(pod: &Value, namespace: &str) -> String {
    let metadata = &pod["metadata"];
    match (
        metadata["name"].as_str().filter(|n| !n.is_empty()),
        metadata["generateName"].as_str().filter(|n| !n.is_empty()),
    ) {
        (Some(name), _) => format!("{namespace}/{name}"),
        (None, Some(prefix)) => format!("{namespace}/{prefix}* (name not yet generated)"),
        (None, None) => format!("{namespace}/(unnamed)"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(kind: &str, owner: &str, labels: Value) -> Value {
        json!({"metadata": {"generateName": format!("{owner}-"), "labels": labels,
            "ownerReferences": [{"kind": kind, "name": owner, "controller": true}]}})
    }

    #[test]
    fn a_replica_sets_pod_belongs_to_its_deployment() {
        let p = pod(
            "ReplicaSet",
            "reviews-v1-7d4f9",
            json!({"pod-template-hash": "7d4f9"}),
        );
        assert_eq!(deployment_name(&p), "reviews-v1");
        let bare = pod("ReplicaSet", "reviews-v1-7d4f9", json!({}));
        assert_eq!(deployment_name(&bare), "reviews-v1-7d4f9");
    }

    #[test]
    fn a_jobs_pod_belongs_to_its_cron_job() {
        assert_eq!(
            deployment_name(&pod("Job", "backup-28001234", json!({}))),
            "backup"
        );
        assert_eq!(
            deployment_name(&pod("Job", "backup-1", json!({}))),
            "backup-1"
        );
    }

    #[test]
    fn a_named_pod_without_a_controller_is_its_own_workload() {
        let p = json!({"metadata": {"name": "debug", "ownerReferences": []}});
        assert_eq!(deployment_name(&p), "debug");
    }

    #[test]
    fn canonical_labels_follow_istios_order() {
        let labels = json!({"app": "reviews", "version": "v2"});
        assert_eq!(canonical_name(&labels, "reviews-v2"), "reviews");
        assert_eq!(canonical_revision(&labels), "v2");
        assert_eq!(canonical_name(&json!({}), "-web_"), "web");
        assert_eq!(canonical_revision(&json!({})), "latest");
        let long = "a".repeat(70);
        assert_eq!(canonical_name(&json!({"app": long}), "x").len(), 63);
    }
}
