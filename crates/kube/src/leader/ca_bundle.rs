//! The validating webhook's `caBundle`: the API server calls the webhook over TLS with
//! Sextant's CA, so the ValidatingWebhookConfiguration must name that CA.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// Keeps every webhook of the ValidatingWebhookConfiguration `name` pointing at `bundle`,
/// while `leader` is true (checked every 5 s and on each change of leadership).
pub async fn keep(
    client: kube::Client,
    name: String,
    bundle: String,
    mut leader: tokio::sync::watch::Receiver<bool>,
) {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
    loop {
        if *leader.borrow_and_update() {
            match api.get_opt(&name).await {
                Ok(Some(config)) => {
                    let mut webhooks =
                        serde_json::to_value(config.webhooks.clone().unwrap_or_default())
                            .unwrap_or_else(|_| json!([]));
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
                            Ok(_) => tracing::info!(%name, "webhook caBundle updated"),
                            Err(e) => {
                                tracing::warn!(%name, error = %e, "could not update the webhook caBundle")
                            }
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%name, error = %e, "could not read the webhook configuration")
                }
            }
        }
        tokio::select! {
            changed = leader.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
