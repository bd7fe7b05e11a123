//! Objects, resource versions and the event log watches replay from, with optional persistence
//! to a data directory (so that objects survive a restart, as etcd's would).

use std::{
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};
use tokio::sync::broadcast;

/// Events kept for watches that resume from a resource version; older ones get `410 Gone`.
pub const LOG_LENGTH: usize = 10_000;

/// Where an object lives: group, plural, namespace (empty for cluster-scoped) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// API group.
    pub group: String,
    /// Resource plural.
    pub plural: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// A watch event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// As the watch protocol writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change.
#[derive(Clone, Debug)]
pub struct Event {
    /// Resource version after the change.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// Which object.
    pub key: Key,
    /// The object after the change (before it, for a deletion, with the new version).
    pub object: Value,
    /// The object before the change, if it existed (for selector watches: an object that
    /// stops matching is deleted from the watcher's view).
    pub previous: Option<Value>,
}

/// Live events, for a watch.
pub type Events = broadcast::Receiver<Arc<Event>>;

/// Every object, the current resource version and the recent events.
pub struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    log: VecDeque<Arc<Event>>,
    /// The oldest resource version a watch may resume from.
    oldest: u64,
    events: broadcast::Sender<Arc<Event>>,
    data_dir: Option<PathBuf>,
    uids: u64,
    /// Changed since last saved.
    dirty: bool,
}

impl Store {
    /// An empty store, or the one saved in `data_dir`.
    pub fn open(data_dir: Option<PathBuf>) -> anyhow::Result<Store> {
        let (events, _) = broadcast::channel(4096);
        let mut store = Store {
            objects: BTreeMap::new(),
            rv: 1,
            log: VecDeque::new(),
            oldest: 1,
            events,
            data_dir,
            uids: 0,
            dirty: false,
        };
        if let Some(path) = store.state_file()
            && path.exists()
        {
            let saved: Value = serde_json::from_slice(&std::fs::read(&path)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            store.rv = saved["resourceVersion"].as_u64().unwrap_or(1);
            store.uids = saved["uids"].as_u64().unwrap_or(0);
            for entry in saved["objects"].as_array().into_iter().flatten() {
                let key = Key {
                    group: entry["group"].as_str().unwrap_or_default().into(),
                    plural: entry["plural"].as_str().unwrap_or_default().into(),
                    namespace: entry["namespace"].as_str().unwrap_or_default().into(),
                    name: entry["name"].as_str().unwrap_or_default().into(),
                };
                store.objects.insert(key, entry["object"].clone());
            }
            // Watches from before the restart resume no further back than now.
            store.oldest = store.rv;
        }
        Ok(store)
    }

    fn state_file(&self) -> Option<PathBuf> {
        self.data_dir.as_ref().map(|d| d.join("objects.json"))
    }

    /// The current resource version.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// One object.
    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Objects of one resource (in one namespace, or all when `namespace` is `None`).
    pub fn list<'a>(
        &'a self,
        group: &'a str,
        plural: &'a str,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a Key, &'a Value)> + 'a {
        // Keys sort by group, plural, namespace and name: the objects asked for are one run.
        let from = Key {
            group: group.to_owned(),
            plural: plural.to_owned(),
            namespace: namespace.unwrap_or_default().to_owned(),
            name: String::new(),
        };
        self.objects.range(from..).take_while(move |(k, _)| {
            k.group == group && k.plural == plural && namespace.is_none_or(|n| k.namespace == n)
        })
    }

    /// Every object.
    pub fn list_all(&self) -> impl Iterator<Item = (&Key, &Value)> {
        self.objects.iter()
    }

    /// A fresh UID.
    pub fn uid(&mut self) -> String {
        self.uids += 1;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let h = fnv1a(format!("{nanos}-{}", self.uids).as_bytes());
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (h >> 32) as u32,
            (h >> 16) as u16,
            (h >> 4) & 0xfff,
            self.uids & 0xfff,
            h & 0xffff_ffff_ffff
        )
    }

    /// Stores `object` (its `metadata.resourceVersion` is set here) and records the event.
    pub fn put(&mut self, key: Key, mut object: Value, kind: EventType) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let previous = self.objects.get(&key).cloned();
        if kind == EventType::Deleted {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key.clone(), object.clone());
        }
        let event = Arc::new(Event {
            rv: self.rv,
            kind,
            key,
            object: object.clone(),
            previous,
        });
        self.log.push_back(event.clone());
        while self.log.len() > LOG_LENGTH {
            if let Some(e) = self.log.pop_front() {
                self.oldest = e.rv;
            }
        }
        // No receivers is fine.
        let _ = self.events.send(event);
        self.dirty = true;
        object
    }

    /// Saves what changed (to the data directory, if any): once per request, however many
    /// objects it wrote (deleting a namespace writes all of its objects).
    pub fn flush(&mut self) {
        if std::mem::take(&mut self.dirty) {
            self.save();
        }
    }

    /// Events after `rv` (for a watch resuming there) and a receiver for what follows; `None`
    /// when `rv` is older than the log reaches (`410 Gone`).
    pub fn since(&self, rv: u64) -> Option<(Vec<Arc<Event>>, Events)> {
        if rv < self.oldest {
            return None;
        }
        let past = self.log.iter().filter(|e| e.rv > rv).cloned().collect();
        Some((past, self.events.subscribe()))
    }

    fn save(&self) {
        let Some(path) = self.state_file() else {
            return;
        };
        let objects: Vec<Value> = self
            .objects
            .iter()
            .map(|(k, o)| {
                json!({"group": k.group, "plural": k.plural, "namespace": k.namespace,
                       "name": k.name, "object": o})
            })
            .collect();
        let state = json!({"resourceVersion": self.rv, "uids": self.uids, "objects": objects});
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec(&state)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::error!(path = %path.display(), error = %e, "could not save objects");
        }
    }
}

/// FNV-1a, for UIDs and document hashes (no cryptographic need).
pub(crate) fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Now in RFC 3339 with seconds, as Kubernetes writes timestamps.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Seconds since the epoch in RFC 3339 (UTC).
pub fn rfc3339(secs: u64) -> String {
    use k8s_openapi::jiff::Timestamp;
    i64::try_from(secs)
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string()
}

/// Parses an RFC 3339 timestamp to seconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let t: k8s_openapi::jiff::Timestamp = s.parse().ok()?;
    u64::try_from(t.as_second()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for secs in [0, 951_782_400, 1_764_547_200, 1_700_000_000] {
            assert_eq!(parse_rfc3339(&rfc3339(secs)), Some(secs));
        }
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    fn key(name: &str) -> Key {
        Key {
            group: String::new(),
            plural: "configmaps".into(),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn watches_resume_within_the_log_and_objects_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("testapi-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut store = Store::open(Some(dir.clone())).expect("opens");
        let first = store.put(
            key("a"),
            json!({"metadata": {"name": "a"}}),
            EventType::Added,
        );
        let rv: u64 = first["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("rv");
        store.put(
            key("b"),
            json!({"metadata": {"name": "b"}}),
            EventType::Added,
        );
        let (past, _) = store.since(rv).expect("in the log");
        assert_eq!(past.len(), 1);
        assert_eq!(past[0].key.name, "b");
        store.flush();
        let reopened = Store::open(Some(dir.clone())).expect("reopens");
        assert!(reopened.get(&key("a")).is_some());
        assert_eq!(reopened.resource_version(), store.resource_version());
        // Resuming from before the restart: the log is gone.
        assert!(reopened.since(rv).is_none());
        std::fs::remove_dir_all(&dir).ok();
    }
}
