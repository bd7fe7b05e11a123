use std::time::Duration;

use k8s_openapi::{ByteString, api::core::v1::Secret};

use super::*;
use crate::clusters::State;

/// A kubeconfig for an API server nobody listens on: its watches fail at once.
fn unreachable_kubeconfig() -> String {
    "apiVersion: v1\nkind: Config\nclusters:\n- name: b\n  cluster: {server: 'http://127.0.0.1:1'}\ncontexts:\n- name: b\n  context: {cluster: b, user: b}\ncurrent-context: b\nusers:\n- name: b\n  user: {token: abc}\n".to_owned()
}

fn secret(name: &str, keys: &[&str]) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.metadata.namespace = Some("istio-system".into());
    s.metadata.labels = Some([("istio/multiCluster".to_owned(), "true".to_owned())].into());
    s.data = Some(
        keys.iter()
            .map(|k| {
                (
                    (*k).to_owned(),
                    ByteString(unreachable_kubeconfig().into_bytes()),
                )
            })
            .collect(),
    );
    s
}

fn remotes(
    max_clusters: usize,
    grace: Duration,
    stale: StaleEndpoints,
) -> (RemoteClusters, Clusters) {
    let clusters = Clusters::default();
    let (changed, _) = mpsc::unbounded_channel();
    let index = Arc::new(Mutex::new(Index::new("cluster.local", "Kubernetes")));
    let settings = Settings {
        local: "Kubernetes".into(),
        max_clusters,
        grace,
        stale,
        bounds: crate::client::ResponseBounds::default(),
    };
    (
        RemoteClusters::new(
            settings,
            index,
            changed,
            Counters::default(),
            clusters.clone(),
        ),
        clusters,
    )
}

impl RemoteClusters {
    /// As the Secret watch does on an event.
    fn set_secret(&self, secret: &Secret) {
        let mut m = self.manager();
        let found = secret::registrations(secret, &m.settings.local);
        let name = secret.metadata.name.clone().unwrap_or_default();
        m.set_secret(0, name, found);
        m.reconcile();
    }

    fn delete_secret(&self, name: &str) {
        let mut m = self.manager();
        m.secrets.remove(&(0, name.to_owned()));
        m.reconcile();
    }
}

fn state_of(clusters: &Clusters, id: &str) -> Option<crate::clusters::ClusterStatus> {
    clusters.list().into_iter().find(|c| c.cluster == id)
}

impl RemoteClusters {
    fn tasks(&self) -> usize {
        self.manager().running.values().map(|r| r.tasks.len()).sum()
    }
}

#[tokio::test]
async fn clusters_past_the_bound_are_refused_and_take_a_freed_place() {
    let (remotes, clusters) = remotes(1, DEFAULT_GRACE, StaleEndpoints::Remove);
    remotes.set_secret(&secret("remote", &["B", "C"]));
    assert!(state_of(&clusters, "C").is_none(), "C is not watched");
    let refused = clusters.refused();
    assert_eq!(refused.count, 1);
    let error = &refused.examples[0].reason;
    assert!(error.contains("--max-remote-clusters (1)"), "{error}");
    assert!(
        error.starts_with("Secret istio-system/remote key C"),
        "{error}"
    );
    // B runs (and fails to connect): not refused for the bound.
    let b = state_of(&clusters, "B").expect("B is listed");
    assert!(
        !b.error
            .unwrap_or_default()
            .contains("--max-remote-clusters")
    );
    // B goes: C takes its place.
    remotes.set_secret(&secret("remote", &["C"]));
    assert!(state_of(&clusters, "B").is_none());
    assert!(state_of(&clusters, "C").is_some());
    assert_eq!(clusters.refused().count, 0);
    remotes.delete_secret("remote");
    assert!(clusters.list().is_empty());
}

#[tokio::test]
async fn a_secret_with_thousands_of_keys_holds_no_more_than_the_bound() {
    let (remotes, clusters) = remotes(2, DEFAULT_GRACE, StaleEndpoints::Remove);
    let keys: Vec<String> = (0..5000).map(|i| format!("c{i:04}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    remotes.set_secret(&secret("many", &keys));
    assert_eq!(clusters.list().len(), 2);
    // Each running cluster: its connection and the grace period's supervisor.
    assert_eq!(remotes.tasks(), 4);
    let refused = clusters.refused();
    assert_eq!(refused.count, 4998);
    assert_eq!(refused.examples.len(), crate::clusters::REFUSED_EXAMPLES);
}

#[tokio::test]
async fn a_running_registration_keeps_its_id_against_a_later_secret_sorting_first() {
    let (remotes, clusters) = remotes(8, DEFAULT_GRACE, StaleEndpoints::Remove);
    remotes.set_secret(&secret("first", &["B", "Kubernetes"]));
    remotes.set_secret(&secret("second", &["B"]));
    // Sorts before "first", arrives after it.
    remotes.set_secret(&secret("a-later", &["B"]));
    let ids: Vec<String> = clusters.list().into_iter().map(|c| c.cluster).collect();
    assert_eq!(ids, ["B"]);
    assert_eq!(
        state_of(&clusters, "B").expect("B").origin,
        "Secret istio-system/first key B"
    );
    let refused = clusters.refused();
    assert_eq!(refused.count, 2);
    assert!(
        refused.examples.iter().any(|r| r.reason
            == "Secret istio-system/a-later key B: cluster B is already registered by Secret istio-system/first key B; this registration is not used"),
        "{refused:?}"
    );
    remotes.delete_secret("a-later");
    // The first goes: the next to have arrived is used.
    remotes.delete_secret("first");
    assert_eq!(
        state_of(&clusters, "B").expect("B").origin,
        "Secret istio-system/second key B"
    );
}

#[tokio::test]
async fn kubeconfig_files_are_checked_when_given() {
    let (remotes, clusters) = remotes(8, DEFAULT_GRACE, StaleEndpoints::Remove);
    let dir = std::env::temp_dir().join(format!("sextant-remote-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let good = dir.join("b.yaml");
    std::fs::write(&good, unreachable_kubeconfig()).expect("write");
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "clusters: [").expect("write");
    remotes.add_file("B", &good).expect("a kubeconfig");
    assert!(
        remotes
            .add_file("B", &good)
            .expect_err("twice")
            .contains("given twice")
    );
    assert!(
        remotes
            .add_file("Kubernetes", &good)
            .expect_err("local")
            .contains("config cluster")
    );
    let error = remotes.add_file("C", &bad).expect_err("unreadable");
    assert!(error.contains("kubeconfig file"), "{error}");
    let missing = remotes
        .add_file("D", &dir.join("missing"))
        .expect_err("missing");
    assert!(missing.contains("cannot read it"), "{missing}");
    assert_eq!(clusters.list().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn wait_for_stale(clusters: &Clusters, id: &str) -> crate::clusters::ClusterStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = state_of(clusters, id)
            && s.stale.is_some()
        {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            state_of(clusters, id)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_failing_and_its_objects_go_after_the_grace_period() {
    let (remotes, clusters) = remotes(8, Duration::from_millis(300), StaleEndpoints::Remove);
    remotes.set_secret(&secret("remote", &["B"]));
    let status = wait_for_stale(&clusters, "B").await;
    assert_eq!(status.state, State::Failing);
    assert_eq!(status.stale, Some(Stale::Removed));
    assert!(status.errors >= 5, "{status:?}");
    assert!(status.failing_since.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keep_an_unreachable_clusters_objects_stay_after_the_grace_period() {
    let (remotes, clusters) = remotes(8, Duration::from_millis(300), StaleEndpoints::Keep);
    remotes.set_secret(&secret("remote", &["B"]));
    let status = wait_for_stale(&clusters, "B").await;
    assert_eq!(status.stale, Some(Stale::Kept));
}

#[tokio::test]
async fn a_bad_edit_of_a_working_secret_keeps_the_cluster_running() {
    let (remotes, clusters) = remotes(8, DEFAULT_GRACE, StaleEndpoints::Remove);
    remotes.set_secret(&secret("remote", &["B"]));
    let before = remotes.manager().running["B"].tasks[0].id();
    let mut bad = secret("remote", &["B"]);
    bad.data = Some([("B".to_owned(), ByteString(b"clusters: [".to_vec()))].into());
    remotes.set_secret(&bad);
    assert_eq!(
        remotes.manager().running["B"].tasks[0].id(),
        before,
        "not restarted"
    );
    assert_eq!(
        state_of(&clusters, "B").expect("B still runs").origin,
        "Secret istio-system/remote key B"
    );
    let refused = clusters.refused();
    assert_eq!(refused.count, 1, "{refused:?}");
    let reason = &refused.examples[0].reason;
    assert!(
        reason.starts_with("Secret istio-system/remote key B: ")
            && reason.ends_with("goes on running with its previous kubeconfig"),
        "{reason}"
    );
    // Mended: nothing refused, and the same kubeconfig does not restart it.
    remotes.set_secret(&secret("remote", &["B"]));
    assert_eq!(clusters.refused().count, 0);
    assert_eq!(remotes.manager().running["B"].tasks[0].id(), before);
}
