//! The admission webhooks' `caBundle`: the API server calls the webhooks over TLS with
//! Sextant's CA, so the ValidatingWebhookConfiguration (`/validate`) and the
//! MutatingWebhookConfiguration (`/inject`) must name that CA.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::{
    Resource,
    api::{Api, ApiResource, DynamicObject, Patch, PatchParams},
};
use serde_json::json;

/// Keeps every webhook of the ValidatingWebhookConfiguration `name` pointing at `bundle`,
/// while `leader` is true (checked every 5 s and on each change of leadership).
pub async fn keep(
    client: kube::Client,
    name: String,
    bundle: String,
    leader: tokio::sync::watch::Receiver<bool>,
) {
    keep_kind::<ValidatingWebhookConfiguration>(client, name, bundle, leader).await;
}

/// Keeps every webhook of the MutatingWebhookConfiguration `name` (sidecar injection)
/// pointing at `bundle`, as [`keep`] does for the validating one.
pub async fn keep_mutating(
    client: kube::Client,
    name: String,
    bundle: String,
    leader: tokio::sync::watch::Receiver<bool>,
) {
    keep_kind::<MutatingWebhookConfiguration>(client, name, bundle, leader).await;
}

async fn keep_kind<K>(
    client: kube::Client,
    name: String,
    bundle: String,
    mut leader: tokio::sync::watch::Receiver<bool>,
) where
    K: Resource<DynamicType = ()>,
{
    // Both kinds hold `webhooks[].clientConfig.caBundle`; read them as JSON alike.
    let api: Api<DynamicObject> = Api::all_with(client, &ApiResource::erase::<K>(&()));
    let kind = K::kind(&());
    loop {
        if *leader.borrow_and_update() {
            match api.get_opt(&name).await {
                Ok(Some(config)) => {
                    let mut webhooks = config.data["webhooks"].clone();
                    let mut stale = false;
                    for w in webhooks.as_array_mut().into_iter().flatten() {
                        if w["clientConfig"]["caBundle"] != json!(bundle) {
                            w["clientConfig"]["caBundle"] = json!(bundle);
                            stale = true;
                        }
                    }
                    if stale {
                        // With the version read: a concurrent edit makes this a conflict,
                        // retried on the next round, instead of being overwritten.
                        let patch = Patch::Merge(json!({
                            "metadata": {"resourceVersion": config.metadata.resource_version},
                            "webhooks": webhooks,
                        }));
                        match api.patch(&name, &PatchParams::default(), &patch).await {
                            Ok(_) => tracing::info!(%kind, %name, "webhook caBundle updated"),
                            Err(e) => {
                                tracing::warn!(%kind, %name, error = %e, "could not update the webhook caBundle")
                            }
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%kind, %name, error = %e, "could not read the webhook configuration")
                }
            }
        }
        tokio::select! {
            changed = leader.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
