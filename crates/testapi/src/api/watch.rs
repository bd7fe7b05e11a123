//! Watches: past events from the requested resource version (or the current objects, with an
//! optional end-of-initial-events bookmark), then live events, as JSON lines, until the
//! timeout or the client leaves. A version older than the event log, or a watch that falls
//! behind, ends with a `410 Expired` error event.

use std::{collections::BTreeMap, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{ApiError, Server, Target, at_version, is_true, selectors};
use crate::{
    kinds::ResourceType,
    select::Selector,
    store::{Event, EventType},
};

/// What a watcher sees: one resource type, maybe one namespace, and the objects its selectors
/// match.
struct Scope {
    t: ResourceType,
    namespace: Option<String>,
    labels: Selector,
    fields: Selector,
}

impl Scope {
    fn matches(&self, object: &Value) -> bool {
        self.labels.matches_labels(object) && self.fields.matches_fields(object)
    }

    /// The event a watcher with these selectors sees: an object that starts matching is
    /// ADDED, one that stops matching is DELETED.
    fn seen_as(&self, e: &Event) -> Option<&'static str> {
        if e.key.group != self.t.group
            || e.key.plural != self.t.plural
            || self
                .namespace
                .as_ref()
                .is_some_and(|n| e.key.namespace != *n)
        {
            return None;
        }
        let now = self.matches(&e.object);
        let before = e.previous.as_ref().is_some_and(|o| self.matches(o));
        match (e.kind, before, now) {
            (EventType::Deleted, _, true) | (_, true, false) => Some("DELETED"),
            (EventType::Deleted, _, false) | (_, false, false) => None,
            (_, true, true) => Some("MODIFIED"),
            (_, false, true) => Some("ADDED"),
        }
    }
}

/// One event of the watch stream: a JSON line.
fn line(kind: &str, object: Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// The `ERROR` event that ends a watch the server can no longer continue: `410 Expired`, so
/// that the client lists again.
fn expired(message: String) -> Bytes {
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "reason": "Expired", "code": 410, "message": message});
    line("ERROR", status)
}

/// A `BOOKMARK` object: only the kind and the resource version the watch has reached.
fn bookmark(t: &ResourceType, rv: u64) -> Value {
    json!({"kind": t.kind, "apiVersion": t.api_version(),
           "metadata": {"resourceVersion": rv.to_string()}})
}

/// A watch: past events (or the current objects) then live ones, as JSON lines, until the
/// timeout or the client leaves.
pub(super) async fn watch(
    server: &Arc<Server>,
    target: &Target,
    q: &BTreeMap<String, String>,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(q)?;
    let bookmarks = is_true(q, "allowWatchBookmarks");
    let initial_events = is_true(q, "sendInitialEvents");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let scope = Scope {
        t: target.t.clone(),
        namespace: target.namespace.clone(),
        labels,
        fields,
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let inner = server.inner.lock().await;
    let requested = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .map(|v| v.parse::<u64>())
        .transpose()
        .map_err(|_| ApiError::bad_request("resourceVersion: must be a number"))?;
    let t = target.t.clone();
    let mut first: Vec<Bytes> = Vec::new();
    let now = inner.store.resource_version();
    let live = match requested.filter(|_| !initial_events) {
        Some(rv) => match inner.store.since(rv) {
            Some((past, live)) => {
                for e in &past {
                    if let Some(kind) = scope.seen_as(e) {
                        first.push(line(kind, at_version(&t, e.object.clone())));
                    }
                }
                live
            }
            None => {
                drop(inner);
                let _ = tx
                    .send(Ok(expired(format!(
                        "too old resource version: {rv} ({now})"
                    ))))
                    .await;
                return Ok(stream_response(rx));
            }
        },
        None => {
            let (_, live) = inner
                .store
                .since(now)
                .expect("the current version is in the log");
            // The current objects, already of this type and namespace.
            for (_, o) in inner.store.list(
                &target.t.group,
                &target.t.plural,
                target.namespace.as_deref(),
            ) {
                if scope.matches(o) {
                    first.push(line("ADDED", at_version(&t, o.clone())));
                }
            }
            if initial_events && bookmarks {
                let mut end = bookmark(&t, now);
                end["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                first.push(line("BOOKMARK", end));
            }
            live
        }
    };
    drop(inner);
    let mut live = live;
    tokio::spawn(async move {
        for b in first {
            if tx.send(Ok(b)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_rv = now;
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if bookmarks => {
                    if tx.send(Ok(line("BOOKMARK", bookmark(&t, last_rv)))).await.is_err() {
                        return;
                    }
                }
                event = live.recv() => match event {
                    Ok(e) => {
                        last_rv = last_rv.max(e.rv);
                        if let Some(kind) = scope.seen_as(&e).filter(|_| e.rv > now) {
                            let b = line(kind, at_version(&t, e.object.clone()));
                            if tx.send(Ok(b)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        let end = expired("the watch fell behind; list again".into());
                        let _ = tx.send(Ok(end)).await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });
    Ok(stream_response(rx))
}

fn stream_response(rx: mpsc::Receiver<Result<Bytes, Infallible>>) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
