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
        m.secrets.insert((0, name), found);
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

#[tokio::test]
async fn clusters_past_the_bound_are_shown_failing_and_take_a_freed_place() {
    let (remotes, clusters) = remotes(1, DEFAULT_GRACE, StaleEndpoints::Remove);
    remotes.set_secret(&secret("remote", &["B", "C"]));
    let c = state_of(&clusters, "C").expect("C is listed");
    assert_eq!(c.state, State::Failing);
    let error = c.error.expect("why");
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
    let c = state_of(&clusters, "C").expect("C is listed");
    assert!(
        !c.error
            .unwrap_or_default()
            .contains("--max-remote-clusters")
    );
    remotes.delete_secret("remote");
    assert!(clusters.list().is_empty());
}

#[tokio::test]
async fn a_second_registration_of_an_id_and_the_local_id_are_ignored() {
    let (remotes, clusters) = remotes(8, DEFAULT_GRACE, StaleEndpoints::Remove);
    remotes.set_secret(&secret("first", &["B", "Kubernetes"]));
    remotes.set_secret(&secret("second", &["B"]));
    let ids: Vec<String> = clusters.list().into_iter().map(|c| c.cluster).collect();
    assert_eq!(ids, ["B"]);
    assert_eq!(
        state_of(&clusters, "B").expect("B").origin,
        "Secret istio-system/first key B"
    );
    // The first goes: the second registration is used.
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
