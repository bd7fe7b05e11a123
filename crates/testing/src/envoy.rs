//! A real Envoy started from `sextant bootstrap`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::{Process, run, sextant_bin};

/// A real Envoy with a bootstrap from `sextant bootstrap`.
pub struct Envoy {
    /// Its outbound listener for port 9080.
    pub listener: SocketAddr,
    /// Its admin address.
    pub admin: SocketAddr,
    /// Where its log (level `warning` and up) goes.
    pub log: PathBuf,
    /// Bootstrap, admin address and log files, removed when done.
    files: Vec<PathBuf>,
    process: Option<Process>,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // Stopped first, so that it writes nothing after its files are gone.
        drop(self.process.take());
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

impl Envoy {
    /// Sets a runtime value in Envoy's admin layer (over the bootstrap's static layer), as an
    /// operator does with `/runtime_modify`.
    pub fn set_runtime(&self, key: &str, value: &str) {
        let status = crate::http_post(self.admin, &format!("/runtime_modify?{key}={value}"));
        assert_eq!(status, Some(200), "Envoy's /runtime_modify?{key}={value}");
    }

    /// Starts Envoy for `node` against the xDS port, its listeners bound to `bind`; files go
    /// beside `dir`, named by `tag`.
    pub fn start(
        envoy: &Path,
        dir: &Path,
        node: &str,
        xds: u16,
        bind: &str,
        delta: bool,
        tag: u8,
    ) -> Envoy {
        let mut xds_args = vec!["--xds-address".to_owned(), format!("127.0.0.1:{xds}")];
        if delta {
            xds_args.push("--delta".into());
        }
        Envoy::launch(envoy, dir, node, bind, tag, &xds_args)
    }

    /// Starts Envoy for `node` with these `sextant bootstrap` arguments for reaching the
    /// control plane (`--xds-address`, `--delta`, TLS files).
    pub fn launch(
        envoy: &Path,
        dir: &Path,
        node: &str,
        bind: &str,
        tag: u8,
        xds_args: &[String],
    ) -> Envoy {
        let mut args = vec![
            "bootstrap".to_owned(),
            "--node-id".into(),
            node.to_owned(),
            "--bind-address".into(),
            bind.to_owned(),
            "--admin-port".into(),
            "0".into(),
        ];
        args.extend_from_slice(xds_args);
        let yaml = run(Command::new(sextant_bin()).args(&args));
        let bootstrap = dir
            .join("..")
            .join(format!("envoy-{}-{tag}.yaml", std::process::id()));
        std::fs::write(&bootstrap, yaml).expect("write bootstrap");
        // Envoy's admin binds port 0 and reports the port it got: no race for free ports.
        let admin_path = bootstrap.with_extension("admin");
        let envoy_log = bootstrap.with_extension("log");
        let _ = std::fs::remove_file(&admin_path);
        let process = Process(
            Command::new(envoy)
                .args([
                    "-c",
                    bootstrap.to_str().expect("utf-8"),
                    "--use-dynamic-base-id",
                ])
                .args([
                    "--concurrency",
                    "1",
                    "-l",
                    "warning",
                    "--admin-address-path",
                ])
                .arg(&admin_path)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&envoy_log).expect("log file"))
                .spawn()
                .expect("envoy starts"),
        );
        let admin: SocketAddr =
            crate::try_wait_for("Envoy's admin address", Duration::from_secs(30), || {
                std::fs::read_to_string(&admin_path)
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|e| {
                panic!(
                    "{e}; Envoy's log:\n{}",
                    std::fs::read_to_string(&envoy_log).unwrap_or_default()
                )
            });
        Envoy {
            listener: format!("{bind}:9080").parse().expect("addr"),
            admin,
            log: envoy_log.clone(),
            files: vec![bootstrap.clone(), admin_path, envoy_log],
            process: Some(process),
        }
    }
}
