//! `sextant serve` on free ports.

use std::{net::SocketAddr, path::Path, process::Command, time::Duration};

use crate::{free_port, process::try_wait_for, request};

/// `sextant serve` on 127.0.0.1 with a free port for each listener; the caller adds the
/// source (`--config-dir`, or a kubeconfig in the environment) and other flags.
pub struct Serve {
    /// xDS port.
    pub xds: u16,
    /// Secure (TLS) xDS port.
    pub secure_xds: u16,
    /// Admin port.
    pub admin: u16,
    /// Webhook port.
    pub webhook: u16,
}

impl Serve {
    /// Free ports for every listener.
    pub fn new() -> Serve {
        Serve::with_webhook(free_port())
    }

    /// Free ports, with the webhook on `webhook`.
    pub fn with_webhook(webhook: u16) -> Serve {
        Serve {
            xds: free_port(),
            secure_xds: free_port(),
            admin: free_port(),
            webhook,
        }
    }

    /// The command, listening on 127.0.0.1 at these ports. Directory mode keeps its root
    /// under the test process's temporary state directory, never the user's.
    pub fn command(&self, exe: &Path) -> Command {
        let mut c = Command::new(exe);
        c.env(
            "XDG_STATE_HOME",
            std::env::temp_dir().join(format!("sextant-state-{}", std::process::id())),
        );
        c.args(["serve", "--listen-address", "127.0.0.1"]).args([
            "--xds-port".to_owned(),
            self.xds.to_string(),
            "--secure-xds-port".to_owned(),
            self.secure_xds.to_string(),
            "--admin-port".to_owned(),
            self.admin.to_string(),
            "--webhook-port".to_owned(),
            self.webhook.to_string(),
        ]);
        c
    }

    /// The admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin))
    }

    /// Starts `sextant serve --config-dir config` with `extra` flags, its log (stderr) in
    /// `log`, and waits until it is ready.
    pub fn start_dir(&self, config: &Path, log: &Path, extra: &[&str]) -> crate::Process {
        let process = crate::Process(
            self.command(&crate::sextant_bin())
                .arg("--config-dir")
                .arg(config)
                .args(extra)
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(log).expect("log file"))
                .spawn()
                .expect("sextant serve starts"),
        );
        if let Err(e) = self.wait_ready(Duration::from_secs(20)) {
            panic!(
                "{e}; sextant's log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        process
    }

    /// Waits until `/ready` answers 200.
    pub fn wait_ready(&self, deadline: Duration) -> Result<(), String> {
        try_wait_for("sextant /ready", deadline, || {
            request(self.admin_addr(), "localhost", "/ready", &[]).filter(|r| r.0 == 200)
        })
        .map(|_| ())
    }
}

impl Default for Serve {
    fn default() -> Self {
        Serve::new()
    }
}
