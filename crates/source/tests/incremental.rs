//! The directory source reads only what changed: with a real notify watch on a directory of
//! thousands of files, one edited file is read and parsed once, and nothing else is. The
//! reads and parses are counted (`DirCounters`), never timed.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use sextant_index::Index;
use sextant_model::Snapshot;
use sextant_source::{DirCounters, DirSource};
use tokio::sync::mpsc;

const FILES: usize = 2000;

fn virtual_service(name: &str, weight: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  namespace: ns\nspec:\n  hosts: [{name}]\n  http:\n  - route:\n    - destination: {{host: {name}, subset: v1}}\n      weight: {weight}\n    - destination: {{host: {name}, subset: v2}}\n      weight: {}\n",
        100 - weight
    )
}

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: ns\nspec:\n  ports:\n  - port: 80\n    name: http\n"
    )
}

/// A fresh directory of `FILES` files, each a Service and its VirtualService.
fn directory(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("sextant-incremental-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("more")).expect("dir");
    for i in 0..FILES {
        let sub = if i % 2 == 0 { "" } else { "more" };
        let name = format!("svc-{i}");
        let text = format!("{}---\n{}", service(&name), virtual_service(&name, 50));
        std::fs::write(dir.join(sub).join(format!("{name}.yaml")), text).expect("write");
    }
    dir
}

struct Watched {
    source: DirSource,
    counters: DirCounters,
    changed: mpsc::UnboundedReceiver<()>,
}

fn watched(dir: &Path) -> Watched {
    let counters = DirCounters::default();
    let mut source = DirSource::new(
        dir.to_path_buf(),
        "default".into(),
        Arc::new(Mutex::new(Index::new("cluster.local", "Kubernetes"))),
    )
    .counters(counters.clone());
    let (tx, changed) = mpsc::unbounded_channel();
    source.watch(tx).expect("watch");
    Watched {
        source,
        counters,
        changed,
    }
}

impl Watched {
    /// Waits for notify's events about a change to stop coming (the debounce's job in
    /// `serve`), then publishes.
    async fn publish_after_change(&mut self) -> Arc<Snapshot> {
        tokio::time::timeout(Duration::from_secs(30), self.changed.recv())
            .await
            .expect("notify reports the change")
            .expect("watching");
        while tokio::time::timeout(Duration::from_millis(300), self.changed.recv())
            .await
            .is_ok()
        {}
        self.source.publish().0
    }

    fn reads(&self) -> (u64, u64, u64, u64) {
        (
            self.counters.files_read.get(),
            self.counters.objects_parsed.get(),
            self.counters.objects_applied.get(),
            self.counters.full_reads.get(),
        )
    }
}

fn weight_of(snapshot: &Snapshot, name: &str) -> Option<String> {
    let vs = snapshot
        .virtual_services
        .iter()
        .find(|v| v.id.name == name)?;
    Some(format!("{:?}", vs.http))
}

#[tokio::test]
async fn one_changed_file_among_thousands_is_the_only_file_read() {
    let dir = directory("one");
    let mut w = watched(&dir);
    let (first, _) = w.source.reload();
    assert_eq!(first.virtual_services.len(), FILES);
    assert_eq!(
        w.reads(),
        (FILES as u64, 2 * FILES as u64, 2 * FILES as u64, 1)
    );
    let before = weight_of(&first, "svc-7").expect("svc-7");

    // One file edited in place, in a subdirectory.
    let file = dir.join("more/svc-7.yaml");
    let text = format!("{}---\n{}", service("svc-7"), virtual_service("svc-7", 90));
    std::fs::write(&file, text).expect("write");
    let snapshot = w.publish_after_change().await;
    let (reads, parsed, applied, full) = w.reads();
    assert_eq!(full, 1, "no second full read");
    assert_eq!(reads - FILES as u64, 1, "only the edited file is read");
    assert_eq!(
        parsed - 2 * FILES as u64,
        2,
        "only its two objects are parsed"
    );
    assert_eq!(
        applied - 2 * FILES as u64,
        2,
        "only its two objects are applied"
    );
    let after = weight_of(&snapshot, "svc-7").expect("svc-7");
    assert_ne!(before, after);
    assert!(after.contains("90"), "{after}");
    assert_eq!(snapshot.virtual_services.len(), FILES);

    // A file removed: nothing is read, its two objects are deleted.
    std::fs::remove_file(dir.join("svc-8.yaml")).expect("remove");
    let snapshot = w.publish_after_change().await;
    assert_eq!(w.reads().0 - FILES as u64, 1, "a removal reads nothing");
    assert_eq!(w.reads().2 - 2 * FILES as u64, 4);
    assert!(weight_of(&snapshot, "svc-8").is_none());
    assert_eq!(snapshot.services.len(), FILES - 1);

    // A directory moved in is listed and its files read; nothing else is.
    let outside = dir.with_extension("new");
    let _ = std::fs::remove_dir_all(&outside);
    std::fs::create_dir_all(&outside).expect("dir");
    for name in ["extra-a", "extra-b"] {
        let text = format!("{}---\n{}", service(name), virtual_service(name, 10));
        std::fs::write(outside.join(format!("{name}.yaml")), text).expect("write");
    }
    std::fs::rename(&outside, dir.join("extra")).expect("move in");
    let snapshot = w.publish_after_change().await;
    assert_eq!(w.reads().0 - FILES as u64, 3, "the two moved-in files");
    assert!(weight_of(&snapshot, "extra-b").is_some());
    assert_eq!(w.reads().3, 1, "still one full read");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_object_in_two_files_comes_from_the_last_and_survives_either_going() {
    let dir = std::env::temp_dir().join(format!("sextant-incremental-dup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("a.yaml"), virtual_service("r", 10)).expect("write");
    std::fs::write(dir.join("b.yaml"), virtual_service("r", 20)).expect("write");
    let mut w = watched(&dir);
    let (snapshot, _) = w.source.reload();
    assert!(weight_of(&snapshot, "r").expect("r").contains("20"));
    std::fs::remove_file(dir.join("b.yaml")).expect("remove");
    let snapshot = w.publish_after_change().await;
    assert!(weight_of(&snapshot, "r").expect("a's copy").contains("10"));
    std::fs::remove_file(dir.join("a.yaml")).expect("remove");
    let snapshot = w.publish_after_change().await;
    assert!(weight_of(&snapshot, "r").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_configmap_volume_swap_reads_its_directory_again() {
    // Kubernetes' atomic writer: files are links through `..data`, which is swapped.
    let dir = std::env::temp_dir().join(format!("sextant-incremental-cm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("..v1")).expect("dir");
    std::fs::write(dir.join("..v1/r.yaml"), virtual_service("r", 10)).expect("write");
    std::os::unix::fs::symlink("..v1", dir.join("..data")).expect("link");
    std::os::unix::fs::symlink("..data/r.yaml", dir.join("r.yaml")).expect("link");
    let mut w = watched(&dir);
    let (snapshot, _) = w.source.reload();
    assert!(weight_of(&snapshot, "r").expect("r").contains("10"));

    std::fs::create_dir_all(dir.join("..v2")).expect("dir");
    std::fs::write(dir.join("..v2/r.yaml"), virtual_service("r", 30)).expect("write");
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).expect("link");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap");
    let snapshot = w.publish_after_change().await;
    assert!(weight_of(&snapshot, "r").expect("r").contains("30"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_file_reached_through_a_link_is_read_again_by_every_path() {
    // `b.yaml` links to `a.yaml`: notify names one path for an edit; both must follow.
    let dir = std::env::temp_dir().join(format!("sextant-incremental-link-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).expect("dir");
    std::fs::write(dir.join("a.yaml"), virtual_service("r", 10)).expect("write");
    std::os::unix::fs::symlink("a.yaml", dir.join("b.yaml")).expect("link");
    std::fs::write(dir.join("sub/s.yaml"), virtual_service("s", 10)).expect("write");
    std::os::unix::fs::symlink("sub", dir.join("zlink")).expect("link");
    let mut w = watched(&dir);
    let (snapshot, _) = w.source.reload();
    assert!(weight_of(&snapshot, "r").expect("r").contains("10"));

    std::fs::write(dir.join("a.yaml"), virtual_service("r", 20)).expect("write");
    let snapshot = w.publish_after_change().await;
    assert!(weight_of(&snapshot, "r").expect("r").contains("20"));
    std::fs::write(dir.join("sub/s.yaml"), virtual_service("s", 30)).expect("write");
    let snapshot = w.publish_after_change().await;
    assert!(weight_of(&snapshot, "s").expect("s").contains("30"));

    // The file gone, the link dangles: nothing is served from either path.
    std::fs::remove_file(dir.join("a.yaml")).expect("remove");
    let snapshot = w.publish_after_change().await;
    assert!(weight_of(&snapshot, "r").is_none());
    std::fs::remove_file(dir.join("sub/s.yaml")).expect("remove");
    let snapshot = w.publish_after_change().await;
    assert!(weight_of(&snapshot, "s").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_mesh_config_named_through_another_spelling_of_the_directory_is_followed() {
    let base =
        std::env::temp_dir().join(format!("sextant-incremental-mesh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let dir = base.join("config");
    std::fs::create_dir_all(&dir).expect("dir");
    std::os::unix::fs::symlink("config", base.join("link")).expect("link");
    std::fs::write(dir.join("r.yaml"), virtual_service("r", 10)).expect("write");
    let mesh = |policy: &str| format!("outboundTrafficPolicy:\n  mode: {policy}\n");
    std::fs::write(dir.join("mesh.yaml"), mesh("ALLOW_ANY")).expect("write");
    for spelling in [
        base.join("link/mesh.yaml"),
        base.join("other/../config/mesh.yaml"),
    ] {
        let counters = DirCounters::default();
        let mut source = DirSource::new(
            dir.clone(),
            "default".into(),
            Arc::new(Mutex::new(Index::new("cluster.local", "Kubernetes"))),
        )
        .mesh_config_file(spelling.clone())
        .counters(counters.clone());
        let (tx, changed) = mpsc::unbounded_channel();
        source.watch(tx).expect("watch");
        let mut w = Watched {
            source,
            counters,
            changed,
        };
        let (first, _) = w.source.reload();
        let policy = format!("{:?}", first.outbound_traffic_policy);

        std::fs::write(dir.join("r.yaml"), virtual_service("r", 40)).expect("write");
        let snapshot = w.publish_after_change().await;
        assert!(
            weight_of(&snapshot, "r").expect("r").contains("40"),
            "{spelling:?}: the directory is still followed"
        );
        std::fs::write(dir.join("mesh.yaml"), mesh("REGISTRY_ONLY")).expect("write");
        let snapshot = w.publish_after_change().await;
        assert_ne!(
            format!("{:?}", snapshot.outbound_traffic_policy),
            policy,
            "{spelling:?}: the mesh config is followed"
        );
        std::fs::write(dir.join("mesh.yaml"), mesh("ALLOW_ANY")).expect("write");
        w.publish_after_change().await;
    }
    let _ = std::fs::remove_dir_all(&base);
}

#[tokio::test]
async fn a_file_that_is_not_a_manifest_publishes_nothing_new() {
    let dir =
        std::env::temp_dir().join(format!("sextant-incremental-notes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("r.yaml"), virtual_service("r", 10)).expect("write");
    let mut w = watched(&dir);
    let (first, _) = w.source.reload();
    for name in ["notes.txt", ".r.yaml.swp", "r.yaml~"] {
        std::fs::write(dir.join(name), "x").expect("write");
        let snapshot = w.publish_after_change().await;
        assert_eq!(snapshot.version, first.version, "{name}");
    }
    assert_eq!(w.reads().0, 1, "nothing read again");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn removing_a_link_to_a_subdirectory_keeps_the_subdirectory_followed() {
    // inotify watches `sub` once for both paths; removing `zlink` must not end it.
    let dir =
        std::env::temp_dir().join(format!("sextant-incremental-unlink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).expect("dir");
    std::fs::write(dir.join("sub/z.yaml"), virtual_service("z", 10)).expect("write");
    std::os::unix::fs::symlink("sub", dir.join("zlink")).expect("link");
    let mut w = watched(&dir);
    w.source.reload();
    std::fs::remove_file(dir.join("zlink")).expect("unlink");
    let snapshot = w.publish_after_change().await;
    assert!(weight_of(&snapshot, "z").expect("z").contains("10"));
    std::fs::write(dir.join("sub/z.yaml"), virtual_service("z", 20)).expect("write");
    let snapshot = w.publish_after_change().await;
    assert!(weight_of(&snapshot, "z").expect("z").contains("20"));
    std::fs::write(dir.join("sub/w.yaml"), virtual_service("w", 30)).expect("write");
    let snapshot = w.publish_after_change().await;
    assert!(weight_of(&snapshot, "w").is_some());
    let _ = std::fs::remove_dir_all(&dir);
}
