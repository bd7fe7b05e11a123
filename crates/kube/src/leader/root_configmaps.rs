//! The ConfigMap `istio-ca-root-cert` in every namespace, as istiod's namespace controller
//! keeps it: key `root-cert.pem` holding the mesh's trust bundle, label
//! `istio.io/config: "true"`. Istio's sidecars mount it to verify the control plane. A
//! namespace that appears gets it, and one that is edited or deleted is put back; a new
//! trust bundle (root rotation) is written everywhere.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api,
    api::{Patch, PatchParams},
    runtime::{
        WatchStreamExt,
        watcher::{self, Event},
    },
};
use serde_json::json;
use tokio::sync::watch;

/// The ConfigMap's name.
pub const NAME: &str = "istio-ca-root-cert";
/// The key holding the PEM bundle.
pub const KEY: &str = "root-cert.pem";

/// Namespaces istiod leaves alone.
const SKIPPED: [&str; 3] = ["kube-public", "kube-node-lease", "local-path-storage"];

/// Keeps the ConfigMap in every namespace holding `roots`, while `leader` is true.
pub async fn keep(
    client: kube::Client,
    mut roots: watch::Receiver<String>,
    mut leader: watch::Receiver<bool>,
) {
    loop {
        if leader.wait_for(|l| *l).await.is_err() {
            return;
        }
        tokio::select! {
            () = reconcile(client.clone(), &mut roots) => {}
            lost = leader.wait_for(|l| !*l) => if lost.is_err() { return },
        }
    }
}

/// Watches namespaces and the ConfigMaps, writing wherever the bundle is missing or stale.
async fn reconcile(client: kube::Client, roots: &mut watch::Receiver<String>) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let maps: Api<ConfigMap> = Api::all(client.clone());
    let mut namespace_events = watcher::watcher(namespaces, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut map_events = watcher::watcher(
        maps,
        watcher::Config::default().fields(&format!("metadata.name={NAME}")),
    )
    .default_backoff()
    .boxed();
    // Live namespaces, and what each one's ConfigMap holds as far as the watch saw.
    let mut live: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut bundle = roots.borrow_and_update().clone();
    loop {
        tokio::select! {
            event = namespace_events.next() => match event {
                Some(Ok(Event::Apply(ns) | Event::InitApply(ns))) => {
                    let Some(name) = ns.metadata.name.clone() else { continue };
                    tracing::debug!(namespace = %name, "namespace seen for istio-ca-root-cert");
                    let terminating = ns.status.and_then(|s| s.phase).as_deref() == Some("Terminating");
                    if SKIPPED.contains(&name.as_str()) || terminating {
                        live.remove(&name);
                        continue;
                    }
                    let held = live.entry(name.clone()).or_insert(None);
                    if held.as_deref() != Some(bundle.as_str()) {
                        write(&client, &name, &bundle).await;
                    }
                }
                Some(Ok(Event::Delete(ns))) => {
                    if let Some(name) = ns.metadata.name {
                        live.remove(&name);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "watching namespaces for istio-ca-root-cert"),
                None => return,
            },
            event = map_events.next() => match event {
                Some(Ok(Event::Apply(map) | Event::InitApply(map))) => {
                    let Some(ns) = map.metadata.namespace.clone() else { continue };
                    let held = map.data.and_then(|d| d.get(KEY).cloned());
                    if let Some(entry) = live.get_mut(&ns) {
                        *entry = held.clone();
                        if held.as_deref() != Some(bundle.as_str()) {
                            write(&client, &ns, &bundle).await;
                        }
                    }
                }
                Some(Ok(Event::Delete(map))) => {
                    if let Some(ns) = map.metadata.namespace
                        && let Some(entry) = live.get_mut(&ns)
                    {
                        *entry = None;
                        write(&client, &ns, &bundle).await;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "watching istio-ca-root-cert ConfigMaps"),
                None => return,
            },
            changed = roots.changed() => {
                if changed.is_err() {
                    return;
                }
                bundle = roots.borrow_and_update().clone();
                let names: Vec<String> = live.keys().cloned().collect();
                for ns in names {
                    write(&client, &ns, &bundle).await;
                }
            }
        }
    }
}

/// Server-side applies the ConfigMap in `namespace`.
async fn write(client: &kube::Client, namespace: &str, bundle: &str) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": NAME,
            "namespace": namespace,
            "labels": {"istio.io/config": "true"},
        },
        "data": {KEY: bundle},
    });
    match api
        .patch(
            NAME,
            &PatchParams::apply("sextant").force(),
            &Patch::Apply(&map),
        )
        .await
    {
        Ok(_) => tracing::debug!(namespace, "istio-ca-root-cert written"),
        Err(e) => tracing::warn!(namespace, error = %e, "could not write istio-ca-root-cert"),
    }
}
