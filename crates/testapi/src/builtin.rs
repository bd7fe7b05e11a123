//! Strict field validation of built-in kinds (kubectl sends `fieldValidation=Strict`): the
//! object is decoded into the Kubernetes API type (k8s-openapi) and encoded again; a field of
//! the request that does not survive the round trip is unknown, and a value that does not
//! decode has the wrong type. Values are not otherwise validated (no name formats, ranges or
//! cross-field rules).

use serde_json::Value;

/// Unknown fields (`spec.portz`) and type errors of a built-in object, as `(field, message)`.
pub fn check(kind: &str, object: &Value) -> Vec<(String, String)> {
    use k8s_openapi::api::{
        admissionregistration::v1 as admission, apps::v1 as apps, authentication::v1 as authn,
        authorization::v1 as authz, autoscaling::v2 as autoscaling,
        coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
        networking::v1 as networking, policy::v1 as policy, rbac::v1 as rbac,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
    fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(
        object: &Value,
    ) -> Result<Value, String> {
        let typed: T = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
        serde_json::to_value(typed).map_err(|e| e.to_string())
    }
    let decoded = match kind {
        "Namespace" => round_trip::<core::Namespace>(object),
        "Node" => round_trip::<core::Node>(object),
        "Service" => round_trip::<core::Service>(object),
        "Pod" => round_trip::<core::Pod>(object),
        "ConfigMap" => round_trip::<core::ConfigMap>(object),
        "Secret" => round_trip::<core::Secret>(object),
        "ServiceAccount" => round_trip::<core::ServiceAccount>(object),
        "Endpoints" => round_trip::<core::Endpoints>(object),
        "Event" => round_trip::<core::Event>(object),
        "EndpointSlice" => round_trip::<discovery::EndpointSlice>(object),
        "Deployment" => round_trip::<apps::Deployment>(object),
        "ClusterRole" => round_trip::<rbac::ClusterRole>(object),
        "ClusterRoleBinding" => round_trip::<rbac::ClusterRoleBinding>(object),
        "Role" => round_trip::<rbac::Role>(object),
        "RoleBinding" => round_trip::<rbac::RoleBinding>(object),
        "Lease" => round_trip::<coordination::Lease>(object),
        "ValidatingWebhookConfiguration" => {
            round_trip::<admission::ValidatingWebhookConfiguration>(object)
        }
        "MutatingWebhookConfiguration" => {
            round_trip::<admission::MutatingWebhookConfiguration>(object)
        }
        "CustomResourceDefinition" => round_trip::<apiextensions::CustomResourceDefinition>(object),
        "PodDisruptionBudget" => round_trip::<policy::PodDisruptionBudget>(object),
        "HorizontalPodAutoscaler" => round_trip::<autoscaling::HorizontalPodAutoscaler>(object),
        "NetworkPolicy" => round_trip::<networking::NetworkPolicy>(object),
        "TokenReview" => round_trip::<authn::TokenReview>(object),
        "SubjectAccessReview" => round_trip::<authz::SubjectAccessReview>(object),
        _ => return Vec::new(),
    };
    match decoded {
        Err(e) => vec![(String::new(), format!("strict decoding error: {e}"))],
        Ok(back) => {
            let mut unknown = Vec::new();
            missing(object, &back, &mut String::new(), &mut unknown);
            unknown
                .into_iter()
                .map(|f| (f, sextant_schema::UNKNOWN_FIELD.to_owned()))
                .collect()
        }
    }
}

/// Fields of `sent` that `kept` lacks. Nulls and empty values may be dropped by the round
/// trip (defaults), so only fields with content count.
fn missing(sent: &Value, kept: &Value, path: &mut String, out: &mut Vec<String>) {
    match (sent, kept) {
        (Value::Object(s), Value::Object(k)) => {
            for (name, v) in s {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(name);
                match k.get(name) {
                    Some(kv) => missing(v, kv, path, out),
                    None if !is_empty(v) => out.push(path.clone()),
                    None => {}
                }
                path.truncate(len);
            }
        }
        (Value::Array(s), Value::Array(k)) => {
            for (i, (sv, kv)) in s.iter().zip(k).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                missing(sv, kv, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_and_wrong_types_are_reported() {
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
            "spec": {"ports": [{"port": 80, "portz": 1}], "selector": {"app": "a"}}});
        assert_eq!(
            check("Service", &svc),
            [(
                "spec.ports[0].portz".to_owned(),
                sextant_schema::UNKNOWN_FIELD.to_owned()
            )]
        );
        let wrong = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
            "spec": {"ports": [{"port": "eighty"}]}});
        assert!(
            check("Service", &wrong)[0]
                .1
                .contains("strict decoding error")
        );
        let fine = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "labels": {}},
            "spec": {"ports": [{"port": 80, "targetPort": "http"}], "type": "ClusterIP"}});
        assert!(check("Service", &fine).is_empty());
        assert!(check("Unknown", &fine).is_empty());
    }

    #[test]
    fn autoscalers_and_network_policies_are_checked_strictly() {
        let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "s"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "s"},
                     "minReplicas": 3, "maxReplicas": 6, "targetCPU": 80}});
        assert_eq!(
            check("HorizontalPodAutoscaler", &hpa),
            [(
                "spec.targetCPU".to_owned(),
                sextant_schema::UNKNOWN_FIELD.to_owned()
            )]
        );
        let policy = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "s"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                     "ingress": [{"ports": [{"protocol": "TCP", "port": 15010}],
                                  "form": [{"podSelector": {}}]}]}});
        assert_eq!(
            check("NetworkPolicy", &policy),
            [(
                "spec.ingress[0].form".to_owned(),
                sextant_schema::UNKNOWN_FIELD.to_owned()
            )]
        );
        let mut fine = policy.clone();
        fine["spec"]["ingress"][0]["from"] = fine["spec"]["ingress"][0]["form"].take();
        fine["spec"]["ingress"][0]
            .as_object_mut()
            .expect("a rule")
            .remove("form");
        assert!(check("NetworkPolicy", &fine).is_empty());
        let wrong = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "s"}, "spec": {"podSelector": {}, "ingress": "all"}});
        assert!(
            check("NetworkPolicy", &wrong)[0]
                .1
                .contains("strict decoding error")
        );
    }

    #[test]
    fn unknown_fields_of_a_pod_spec_and_its_containers_are_reported() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"bogus": 1, "containers": [{"name": "c", "image": "i", "portz": [1]}],
                     "initContainers": [{"name": "i", "args": ["-p", "15001"], "restartPolicy": "Always",
                                         "securityContext": {"runAsUser": 1337, "capabilitiez": {}}}],
                     "volumes": [{"name": "v", "emptyDir": {"medium": "Memory"}}]}});
        let fields: Vec<String> = check("Pod", &pod).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            ["spec.bogus", "spec.containers[0].portz"],
            "an empty unknown object is not content"
        );
        let mut typo = pod.clone();
        typo["spec"]["initContainers"][0]["securityContext"]["capabilitiez"] =
            json!({"add": ["NET_ADMIN"]});
        assert!(
            check("Pod", &typo)
                .iter()
                .any(|(f, _)| f == "spec.initContainers[0].securityContext.capabilitiez")
        );
        let wrong = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": "http"}]}]}});
        assert!(check("Pod", &wrong)[0].1.contains("strict decoding error"));
    }
}
