//! Creating a synthetic mesh's manifests in the test API server through kube's dynamic API,
//! 16 at a time (the Kubernetes-path benchmarks: `kube_index`, `envoy`).

use futures_util::{StreamExt, stream};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::Value;

/// Creates every object of `objects`; panics naming the first one the server refuses.
pub async fn create(client: &kube::Client, objects: Vec<Value>) {
    stream::iter(objects)
        .for_each_concurrent(16, |o| {
            let client = client.clone();
            async move {
                let api_version = o["apiVersion"].as_str().unwrap_or_default();
                let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
                let kind = o["kind"].as_str().unwrap_or_default();
                let plural = match kind {
                    "EndpointSlice" => "endpointslices".to_owned(),
                    "CustomResourceDefinition" => "customresourcedefinitions".to_owned(),
                    k => format!("{}s", k.to_lowercase()),
                };
                let ar = ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk(group, version, kind),
                    &plural,
                );
                let object: DynamicObject = serde_json::from_value(o.clone()).expect("object");
                let api: Api<DynamicObject> = match o["metadata"]["namespace"].as_str() {
                    Some(ns) => Api::namespaced_with(client, ns, &ar),
                    None => Api::all_with(client, &ar),
                };
                api.create(&PostParams::default(), &object)
                    .await
                    .unwrap_or_else(|e| panic!("creating {kind} {}: {e}", o["metadata"]["name"]));
            }
        })
        .await;
}
