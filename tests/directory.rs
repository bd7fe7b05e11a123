//! `sextant serve --config-dir` under files that go bad and a directory that is replaced: a
//! bad file is reported (log and `sextant_config_dir_bad_files`) and keeps its last good
//! objects while every other file is served, from the start; the directory is followed when
//! it is removed and created again or swapped as Kubernetes swaps a ConfigMap volume.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use sextant_testing::{Process, Serve, http_get, metric, wait_for};

const WAIT: Duration = Duration::from_secs(20);

const BAD_FILES: &str = "sextant_config_dir_bad_files";

/// A VirtualService `name` for host `name`.
fn virtual_service(name: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  hosts:\n  - {name}\n  http:\n  - route:\n    - destination:\n        host: {name}\n"
    )
}

/// `sextant serve --config-dir` on a copy of `examples/` (in `root/config`, set up by
/// `setup` before it starts), its log kept.
struct DirServe {
    root: PathBuf,
    serve: Serve,
    _sextant: Process,
}

impl DirServe {
    fn start(name: &str, args: &[&str], setup: impl FnOnce(&Path)) -> DirServe {
        let root = std::env::temp_dir().join(format!("sextant-dir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let config = root.join("config");
        copy_examples(&config);
        setup(&config);
        let serve = Serve::new();
        let log = std::fs::File::create(root.join("sextant.log")).expect("log file");
        let sextant = Process(
            serve
                .command(&sextant_testing::sextant_bin())
                .arg("--config-dir")
                .arg(&config)
                .args(["--debounce-after-ms", "20", "--debounce-max-ms", "200"])
                .args(args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("sextant serve starts"),
        );
        serve.wait_ready(WAIT).expect("ready");
        DirServe {
            root,
            serve,
            _sextant: sextant,
        }
    }

    fn config(&self) -> PathBuf {
        self.root.join("config")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("sextant.log")).unwrap_or_default()
    }

    /// The VirtualServices served (`/debug/configz`).
    fn virtual_services(&self) -> Vec<String> {
        let text = http_get(self.serve.admin_addr(), "/debug/configz").unwrap_or_default();
        let configz: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        configz["virtual_services"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    }

    /// The service hostnames served (`/debug/registryz`).
    fn services(&self) -> Vec<String> {
        let text = http_get(self.serve.admin_addr(), "/debug/registryz").unwrap_or_default();
        let registryz: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        registryz
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["hostname"].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits until the VirtualService `default/name` is served.
    fn wait_served(&self, name: &str) {
        let id = format!("default/{name}");
        wait_for(&format!("VirtualService {id} served"), WAIT, || {
            self.virtual_services()
                .iter()
                .any(|v| v.ends_with(&id))
                .then_some(())
        });
    }

    /// The examples' mesh is still served: its services and its VirtualService.
    fn examples_served(&self) {
        assert!(
            self.services()
                .iter()
                .any(|h| h.starts_with("reviews.default")),
            "{:?}",
            self.services()
        );
        self.wait_served("reviews");
    }

    /// Waits until the bad-files gauge reads `n` and the log names `file` with `why`.
    fn wait_reported(&self, n: f64, file: &str, why: &str) {
        let admin = self.serve.admin_addr();
        wait_for(&format!("{n} bad file(s) counted"), WAIT, || {
            metric(admin, BAD_FILES).filter(|v| *v == n)
        });
        wait_for(&format!("{file} reported: {why}"), WAIT, || {
            self.log()
                .lines()
                .any(|l| l.contains("bad config file") && l.contains(file) && l.contains(why))
                .then_some(())
        });
    }
}

impl Drop for DirServe {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn copy_examples(to: &Path) {
    std::fs::create_dir_all(to).expect("config dir");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for entry in std::fs::read_dir(examples).expect("examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, to.join(path.file_name().expect("name"))).expect("copy");
        }
    }
}

/// Writes `path` by renaming a finished file over it, as editors and `kubectl cp` do.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[test]
fn bad_files_present_at_startup_are_reported_and_the_rest_is_served() {
    let server = DirServe::start("startup", &["--max-input-bytes", "65536"], |config| {
        std::fs::write(config.join("binary.yaml"), b"kind: \xff\xfe\x00garbage").expect("write");
        let mut big = virtual_service("big");
        big.push_str(&format!("# {}\n", "x".repeat(70_000)));
        std::fs::write(config.join("big.yaml"), big).expect("write");
    });
    server.examples_served();
    server.wait_reported(2.0, "binary.yaml", "not UTF-8");
    server.wait_reported(2.0, "big.yaml", "over the 65536-byte limit");
    let bounded = r#"sextant_xds_bounded_total{bound="file_bytes"}"#;
    assert!(metric(server.serve.admin_addr(), bounded).is_some_and(|n| n >= 1.0));
    assert!(
        !server
            .virtual_services()
            .iter()
            .any(|v| v.ends_with("/big")),
        "a file refused from the start has nothing to keep"
    );
}

#[test]
fn a_bad_file_keeps_its_last_good_objects_and_does_not_freeze_the_others() {
    let server = DirServe::start("freeze", &[], |config| {
        std::fs::write(config.join("kept.yaml"), virtual_service("kept")).expect("write");
    });
    server.wait_served("kept");
    // The file goes bad: its VirtualService stays; a new file elsewhere is still read.
    std::fs::write(server.config().join("kept.yaml"), b"kind: \xff\xfe").expect("write");
    server.wait_reported(1.0, "kept.yaml", "not UTF-8");
    write_atomically(&server.config().join("new.yaml"), &virtual_service("new"));
    server.wait_served("new");
    server.wait_served("kept");
    server.examples_served();
    // Fixed again, it is good and read as it is now.
    std::fs::write(
        server.config().join("kept.yaml"),
        virtual_service("kept-renamed"),
    )
    .expect("write");
    server.wait_served("kept-renamed");
    wait_for("no bad files", WAIT, || {
        metric(server.serve.admin_addr(), BAD_FILES).filter(|n| *n == 0.0)
    });
    assert!(
        !server
            .virtual_services()
            .iter()
            .any(|v| v.ends_with("/kept"))
    );
}

#[test]
fn a_file_cut_before_its_spec_keeps_its_virtual_service() {
    let server = DirServe::start("cut", &[], |config| {
        let both = format!(
            "{}---\n{}",
            virtual_service("first"),
            virtual_service("second")
        );
        std::fs::write(config.join("routes.yaml"), both).expect("write");
    });
    server.wait_served("first");
    server.wait_served("second");
    // Written in place and read half-way: the second document ends before `spec:`.
    let whole = format!(
        "{}---\n{}",
        virtual_service("first"),
        virtual_service("second")
    );
    let cut = &whole[..whole.rfind("spec:").expect("spec")];
    std::fs::write(server.config().join("routes.yaml"), cut).expect("write");
    server.wait_reported(1.0, "routes.yaml", "has no spec");
    write_atomically(&server.config().join("new.yaml"), &virtual_service("new"));
    server.wait_served("new");
    let served = server.virtual_services();
    for name in ["first", "second", "reviews"] {
        assert!(
            served
                .iter()
                .any(|v| v.ends_with(&format!("default/{name}"))),
            "{name} not served: {served:?}"
        );
    }
}

#[test]
fn a_directory_removed_and_created_again_is_followed() {
    let server = DirServe::start("recreate", &[], |_| {});
    server.examples_served();
    std::fs::remove_dir_all(server.config()).expect("remove");
    // Gone for a moment: what was served stays (a directory being replaced is not empty).
    wait_for("the removal seen", WAIT, || {
        server
            .log()
            .contains("cannot read the config directory")
            .then_some(())
    });
    server.examples_served();
    copy_examples(&server.config());
    std::fs::write(server.config().join("after.yaml"), virtual_service("after")).expect("write");
    server.wait_served("after");
    // And it is watched, not merely read once more.
    std::fs::write(server.config().join("later.yaml"), virtual_service("later")).expect("write");
    server.wait_served("later");
    server.examples_served();
}

/// A ConfigMap volume: files are links `NAME -> ..data/NAME`, `..data` links to a
/// timestamped directory, and an update renames a new `..data` link over the old one.
#[test]
fn a_configmap_volume_swap_is_followed() {
    fn version(config: &Path, stamp: &str, files: &[(&str, String)]) {
        let dir = config.join(format!("..{stamp}"));
        std::fs::create_dir_all(&dir).expect("dir");
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("write");
        }
        let previous = std::fs::read_link(config.join("..data")).ok();
        let tmp = config.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("..{stamp}"), &tmp).expect("link");
        std::fs::rename(&tmp, config.join("..data")).expect("swap");
        // The kubelet then removes the old version.
        if let Some(previous) = previous {
            std::fs::remove_dir_all(config.join(previous)).expect("old version removed");
        }
    }
    let server = DirServe::start("configmap", &[], |config| {
        version(
            config,
            "2026_01_01",
            &[("routes.yaml", virtual_service("one"))],
        );
        std::os::unix::fs::symlink("..data/routes.yaml", config.join("routes.yaml")).expect("link");
    });
    server.wait_served("one");
    version(
        &server.config(),
        "2026_01_02",
        &[("routes.yaml", virtual_service("two"))],
    );
    server.wait_served("two");
    assert!(
        !server
            .virtual_services()
            .iter()
            .any(|v| v.ends_with("/one"))
    );
    version(
        &server.config(),
        "2026_01_03",
        &[("routes.yaml", virtual_service("three"))],
    );
    server.wait_served("three");
    server.examples_served();
}

/// The compiled config of a sidecar in `default` (`/debug/config_dump`), as text.
fn sidecar_dump(server: &DirServe) -> String {
    http_get(
        server.serve.admin_addr(),
        "/debug/config_dump?proxy=sidecar~10.1.0.9~client.default~default.svc.cluster.local",
    )
    .unwrap_or_default()
}

#[test]
fn an_edited_mesh_config_file_changes_what_proxies_get_and_a_bad_one_keeps_the_last() {
    let mesh_dir =
        std::env::temp_dir().join(format!("sextant-dir-mesh-file-{}", std::process::id()));
    std::fs::create_dir_all(&mesh_dir).expect("mesh config dir");
    let mesh = mesh_dir.join("mesh");
    // Istio's fields Sextant does not use are fine.
    std::fs::write(&mesh, "accessLogFile: /dev/stdout\n").expect("mesh config");
    let server = DirServe::start(
        "mesh-config",
        &["--mesh-config", mesh.to_str().expect("utf-8")],
        |_| {},
    );
    server.examples_served();
    wait_for("ALLOW_ANY: unknown hosts pass through", WAIT, || {
        let dump = sidecar_dump(&server);
        (dump.contains("allow_any") && !dump.contains("block_all")).then_some(())
    });
    write_atomically(&mesh, "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n");
    wait_for("REGISTRY_ONLY: unknown hosts get 502", WAIT, || {
        sidecar_dump(&server).contains("block_all").then_some(())
    });
    std::fs::write(&mesh, "outboundTrafficPolicy:\n  mode: SOMETIMES\n").expect("bad edit");
    wait_for("the bad mesh config reported with its field", WAIT, || {
        server
            .log()
            .lines()
            .any(|l| {
                l.contains("cannot read the mesh config")
                    && l.contains("outboundTrafficPolicy.mode")
            })
            .then_some(())
    });
    assert!(
        sidecar_dump(&server).contains("block_all"),
        "the last good one stays"
    );
    let _ = std::fs::remove_dir_all(&mesh_dir);
}
