//! Status of VirtualServices, DestinationRules, Gateways and Sidecars: a `Reconciled`
//! condition (accepted, with any unsupported fields named; invalid, with every error and its
//! field path; or rejected by a proxy, with Envoy's error, while Sextant holds the object back),
//! Istio's `validationMessages` (the analysis `sextant validate` and `sextant analyze` give,
//! `sextant_index::analysis`, run once per published snapshot) and `observedGeneration`,
//! written with server-side apply under field manager `sextant`, only while this replica holds
//! the Lease, and only when it changes.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
};
use prometheus_client::metrics::counter::Counter;
use serde_json::{Value, json};
use sextant_index::analysis;
use sextant_model::{Kind, ObjectRef, Snapshot};
use tokio::sync::watch;

use crate::{Generations, Seen};

/// The field manager status is written under.
pub const FIELD_MANAGER: &str = "sextant";

/// What the status of one object says, without timestamps (to tell whether it changed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `metadata.generation` it refers to.
    pub generation: i64,
    /// Accepted or not.
    pub accepted: bool,
    /// Why: `Accepted`, `Invalid` (validation refused it) or `Rejected` (a proxy did).
    pub reason: &'static str,
    /// For people: the errors, or the fields not supported.
    pub message: String,
    /// A ServiceEntry's allocated addresses (`status.addresses`), by host.
    pub addresses: BTreeMap<String, String>,
    /// What the analysis found (`status.validationMessages`), in its order.
    pub messages: Vec<Finding>,
}

/// One analysis message as the status carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Istio's message type.
    pub code: analysis::Code,
    /// For people.
    pub description: String,
}

/// What the status writer reads of one snapshot, computed once per snapshot in O(objects):
/// the analysis by object, and which objects the snapshot holds (each verdict looks one up).
#[derive(Debug, Default)]
pub struct Analysis {
    /// `sextant_index::analysis` of the snapshot, by object.
    pub messages: HashMap<ObjectRef, Vec<analysis::Message>>,
    /// The configuration objects the snapshot holds (WorkloadEntries apart: they are keyed).
    pub known: HashSet<ObjectRef>,
}

impl Analysis {
    /// Of `snapshot`.
    pub fn of(snapshot: &Snapshot) -> Analysis {
        let known = (snapshot.virtual_services.iter().map(|v| &v.id))
            .chain(snapshot.destination_rules.iter().map(|d| &d.id))
            .chain(snapshot.gateways.iter().map(|g| &g.id))
            .chain(snapshot.sidecars.iter().map(|s| &s.id))
            .chain(snapshot.service_entries.iter().map(|s| &s.id))
            .cloned()
            .collect();
        Analysis {
            messages: analysis::by_object(snapshot),
            known,
        }
    }
}

/// Objects held back after proxies rejected them, with what to say about each.
pub type Held = Arc<BTreeMap<ObjectRef, String>>;

/// The verdict on `id` as last `seen`, in `snapshot` (whose `analysis` it carries) and among
/// the `held` objects, if the snapshot knows the object.
pub fn verdict(
    snapshot: &Snapshot,
    analysis: &Analysis,
    id: &ObjectRef,
    seen: &Seen,
    held: &Held,
) -> Option<Verdict> {
    let generation = seen.generation;
    let refused = |reason, message| {
        Some(Verdict {
            generation,
            accepted: false,
            reason,
            message,
            addresses: BTreeMap::new(),
            messages: Vec::new(),
        })
    };
    if let Some(e) = &seen.unreadable {
        return refused("Invalid", format!("not read: {e}"));
    }
    if let Some(errors) = snapshot.invalid.get(id) {
        return refused("Invalid", errors.join("; "));
    }
    if let Some(message) = held.get(id) {
        return refused("Rejected", message.clone());
    }
    let known = match id.kind {
        Kind::VirtualService
        | Kind::DestinationRule
        | Kind::Gateway
        | Kind::Sidecar
        | Kind::ServiceEntry => analysis.known.contains(id),
        Kind::WorkloadEntry => snapshot
            .workload_entries
            .contains_key(&(id.namespace.clone(), id.name.clone())),
        _ => false,
    };
    known.then(|| Verdict {
        generation,
        accepted: true,
        reason: "Accepted",
        message: match snapshot.warnings.get(id) {
            Some(w) => format!("accepted; not supported by sextant: {}", w.join("; ")),
            None => "accepted".to_owned(),
        },
        addresses: allocated(snapshot, id),
        messages: analysis
            .messages
            .get(id)
            .into_iter()
            .flatten()
            .map(|m| Finding {
                code: m.code,
                description: m.description.clone(),
            })
            .collect(),
    })
}

/// The addresses allocated to the hosts of ServiceEntry `id`, by host.
fn allocated(snapshot: &Snapshot, id: &ObjectRef) -> BTreeMap<String, String> {
    let Some(se) = (id.kind == Kind::ServiceEntry)
        .then(|| snapshot.service_entries.iter().find(|s| s.id == *id))
        .flatten()
        .filter(|se| se.auto_allocate)
    else {
        return BTreeMap::new();
    };
    se.hosts
        .iter()
        .filter_map(|h| Some((h.clone(), snapshot.allocated_addresses.get(h)?.to_string())))
        .collect()
}

/// `validationMessages` written at most per object; the last says how many more there are.
pub const MAX_MESSAGES: usize = 100;
/// Bytes of the condition's message and of one message's description, at most: an object's
/// status must stay far under the API server's 1.5 MiB object and 3 MiB request limits.
pub const MAX_MESSAGE_BYTES: usize = 32 << 10;

/// `text` cut to `max` bytes on a character boundary, saying so.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... (cut at {max} bytes)", &text[..end])
}

/// The status body of an object, as applied: at most [`MAX_MESSAGES`] messages, texts cut at
/// [`MAX_MESSAGE_BYTES`].
pub fn status_patch(id: &ObjectRef, v: &Verdict, now: &str) -> Value {
    let mut patch = json!({
        "apiVersion": crate::api_resource(id.kind).api_version,
        "kind": id.kind.as_str(),
        "metadata": {"name": id.name, "namespace": id.namespace},
        "status": {
            "observedGeneration": v.generation,
            "conditions": [{
                "type": "Reconciled",
                "status": if v.accepted { "True" } else { "False" },
                "reason": v.reason,
                "message": cut(&v.message, MAX_MESSAGE_BYTES),
                "observedGeneration": v.generation,
                "lastTransitionTime": now,
            }],
        },
    });
    // Written even when empty: an apply that leaves a field out does not remove it everywhere
    // (the test API server keeps it), and an empty list says the analysis found nothing.
    let more = v.messages.len().saturating_sub(MAX_MESSAGES);
    patch["status"]["validationMessages"] = v
        .messages
        .iter()
        .take(MAX_MESSAGES)
        .enumerate()
        .map(|(i, m)| {
            let mut description = cut(&m.description, MAX_MESSAGE_BYTES);
            if more > 0 && i + 1 == MAX_MESSAGES {
                description.push_str(&format!(
                    " (and {more} more messages: `sextant analyze` lists them all)"
                ));
            }
            json!({
                "type": {"code": m.code.code, "name": m.code.name},
                "level": m.code.level.as_upper(),
                "documentationUrl": m.code.documentation_url(),
                "description": description,
            })
        })
        .collect();
    if !v.addresses.is_empty() {
        patch["status"]["addresses"] = v
            .addresses
            .iter()
            .map(|(host, value)| json!({"host": host, "value": value}))
            .collect();
    }
    patch
}

/// Writes status while `leader` is true, from each snapshot `snapshots` publishes and the
/// objects `held` back; counts writes in `writes`. Runs until `snapshots` closes.
pub async fn run(
    client: Client,
    generations: Generations,
    mut leader: watch::Receiver<bool>,
    mut snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    mut held: watch::Receiver<Held>,
    writes: Counter,
) {
    let mut written: HashMap<ObjectRef, Verdict> = HashMap::new();
    // The analysis of the last snapshot: once per published snapshot, not per wake-up.
    let mut analyzed: Option<(Arc<Snapshot>, Analysis)> = None;
    loop {
        let leading = *leader.borrow_and_update();
        let snapshot = snapshots.borrow_and_update().clone();
        let holding = held.borrow_and_update().clone();
        if !leading {
            // A new term re-asserts everything.
            written.clear();
        } else if let Some(snapshot) = snapshot {
            if analyzed
                .as_ref()
                .is_none_or(|(s, _)| !Arc::ptr_eq(s, &snapshot))
            {
                analyzed = Some((snapshot.clone(), Analysis::of(&snapshot)));
            }
            let found = analyzed.as_ref().map(|(_, a)| a).expect("analyzed above");
            let pending: Vec<(ObjectRef, Verdict)> = {
                let generations = generations.lock().unwrap_or_else(|p| p.into_inner());
                // Objects gone since: a recreated one is reported again.
                written.retain(|id, _| generations.contains_key(id));
                generations
                    .iter()
                    .filter_map(|(id, seen)| {
                        let v = verdict(&snapshot, found, id, seen, &holding)?;
                        Some((id.clone(), v))
                    })
                    .filter(|(id, v)| written.get(id) != Some(v))
                    .collect()
            };
            let now = k8s_now();
            for (id, v) in pending {
                // Leadership may end in the middle of a batch.
                if !*leader.borrow() {
                    break;
                }
                let api: Api<DynamicObject> = Api::namespaced_with(
                    client.clone(),
                    &id.namespace,
                    &crate::api_resource(id.kind),
                );
                let params = PatchParams::apply(FIELD_MANAGER).force();
                match api
                    .patch_status(
                        &id.name,
                        &params,
                        &Patch::Apply(status_patch(&id, &v, &now)),
                    )
                    .await
                {
                    Ok(_) => {
                        writes.inc();
                        written.insert(id, v);
                    }
                    // Deleted meanwhile: nothing to report.
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    // Refused as too large or invalid: the same write would be refused again,
                    // so it waits for the verdict to change rather than retrying forever.
                    Err(kube::Error::Api(e)) if matches!(e.code, 413 | 422) => {
                        tracing::warn!(object = %id, error = %e, "status refused by the API server; not retried until it changes");
                        written.insert(id, v);
                    }
                    Err(e) => {
                        tracing::warn!(object = %id, error = %e, "could not write status; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
        tokio::select! {
            changed = leader.changed() => if changed.is_err() { return },
            changed = snapshots.changed() => if changed.is_err() { return },
            // Sextant alone may hold it: it is gone when the process is.
            Ok(()) = held.changed() => {}
            // Retry failed writes and pick up generations that arrived without a snapshot.
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

fn k8s_now() -> String {
    let t = k8s_openapi::jiff::Timestamp::now();
    // Kubernetes writes seconds precision.
    format!("{}", t.round(k8s_openapi::jiff::Unit::Second).unwrap_or(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs(name: &str) -> ObjectRef {
        ObjectRef {
            kind: Kind::VirtualService,
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn verdicts_name_errors_warnings_and_unreadable_objects() {
        let mut snapshot = Snapshot::default();
        snapshot
            .invalid
            .insert(vs("bad"), vec!["spec.http[0].route: required".into()]);
        let seen = |generation, unreadable: Option<&str>| Seen {
            generation,
            unreadable: unreadable.map(str::to_owned),
        };
        let none = Held::default();
        let bad = verdict(
            &snapshot,
            &Analysis::default(),
            &vs("bad"),
            &seen(3, None),
            &none,
        )
        .expect("known");
        assert_eq!((bad.accepted, bad.generation), (false, 3));
        assert!(bad.message.contains("spec.http[0].route"));
        // Not in the snapshot at all: nothing to say yet.
        assert_eq!(
            verdict(
                &snapshot,
                &Analysis::default(),
                &vs("other"),
                &seen(1, None),
                &none
            ),
            None
        );
        // Could not be read: reported as such, at the generation seen.
        let unreadable = verdict(
            &snapshot,
            &Analysis::default(),
            &vs("other"),
            &seen(2, Some("spec: invalid type")),
            &none,
        )
        .expect("reported");
        assert_eq!((unreadable.accepted, unreadable.generation), (false, 2));
        assert!(unreadable.message.contains("invalid type"));
        let patch = status_patch(&vs("bad"), &bad, "2026-01-01T00:00:00Z");
        assert_eq!(patch["status"]["conditions"][0]["reason"], "Invalid");
        assert_eq!(patch["status"]["observedGeneration"], 3);
    }

    #[test]
    fn an_object_a_proxy_rejected_is_reported_with_envoys_error() {
        let snapshot = Snapshot::default();
        let seen = Seen {
            generation: 4,
            unreadable: None,
        };
        let held: Held = Arc::new(BTreeMap::from([(vs("held"), "regex too big".to_owned())]));
        let v = verdict(&snapshot, &Analysis::default(), &vs("held"), &seen, &held).expect("known");
        assert_eq!((v.accepted, v.reason, v.generation), (false, "Rejected", 4));
        assert_eq!(
            verdict(
                &snapshot,
                &Analysis::default(),
                &vs("held"),
                &seen,
                &Held::default()
            ),
            None
        );
        let patch = status_patch(&vs("held"), &v, "2026-01-01T00:00:00Z");
        assert_eq!(patch["status"]["conditions"][0]["reason"], "Rejected");
        assert_eq!(patch["status"]["conditions"][0]["message"], "regex too big");
    }

    #[test]
    fn the_analysis_of_the_snapshot_is_in_the_status_and_follows_it() {
        let mut index = sextant_index::Index::default();
        let mut apply = |value: Value| {
            index.apply(sextant_index::Object::from_json(value, "default").expect("object"));
            index.publish().0
        };
        let seen = Seen {
            generation: 1,
            unreadable: None,
        };
        let none = Held::default();
        apply(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"ports": [{"port": 9080, "name": "http"}]}}));
        let snapshot = apply(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [
                {"destination": {"host": "reviews", "subset": "v9"}}]}]}}));
        let found = Analysis::of(&snapshot);
        let missing = verdict(&snapshot, &found, &vs("reviews"), &seen, &none).expect("known");
        assert!(missing.accepted);
        let patch = status_patch(&vs("reviews"), &missing, "2026-01-01T00:00:00Z");
        assert_eq!(
            patch["status"]["validationMessages"],
            json!([{
                "type": {"code": "IST0101", "name": "ReferencedResourceNotFound"},
                "level": "ERROR",
                "documentationUrl": "https://istio.io/latest/docs/reference/config/analysis/ist0101/",
                "description": "Referenced host+subset in destinationrule not found: \"reviews+v9\"",
            }])
        );
        let snapshot = apply(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"host": "reviews", "subsets": [{"name": "v9", "labels": {"version": "v9"}}]}}));
        let found = Analysis::of(&snapshot);
        let defined = verdict(&snapshot, &found, &vs("reviews"), &seen, &none).expect("known");
        // A different verdict, so it is written; the messages are emptied, not left behind.
        assert_ne!(defined, missing);
        let patch = status_patch(&vs("reviews"), &defined, "2026-01-01T00:00:00Z");
        assert_eq!(patch["status"]["validationMessages"], json!([]));
    }

    #[test]
    fn a_status_stays_bounded_however_many_findings() {
        let id = vs("big");
        let finding = |i: usize| Finding {
            code: analysis::REFERENCED_RESOURCE_NOT_FOUND,
            description: format!("Referenced host not found: \"h{i}\""),
        };
        let v = Verdict {
            generation: 1,
            accepted: false,
            reason: "Invalid",
            message: "x".repeat(2 << 20),
            addresses: BTreeMap::new(),
            messages: (0..5_000).map(finding).collect(),
        };
        let patch = status_patch(&id, &v, "now");
        let messages = patch["status"]["validationMessages"]
            .as_array()
            .expect("list");
        assert_eq!(messages.len(), MAX_MESSAGES);
        assert!(
            messages[MAX_MESSAGES - 1]["description"]
                .as_str()
                .is_some_and(
                    |d| d.ends_with("(and 4900 more messages: `sextant analyze` lists them all)")
                ),
            "{}",
            messages[MAX_MESSAGES - 1]
        );
        let text = patch.to_string();
        assert!(text.len() < 100 << 10, "{} bytes", text.len());
    }
}
