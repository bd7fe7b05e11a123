//! `sextant demo`: the bookinfo-like mesh of `examples/` served to a real Envoy, with small
//! backends on their own loopback addresses, while a sequence of route changes is applied and
//! the traffic split is printed as it happens. The backends, the HTTP client and the process
//! handling are `sextant-testing`'s, which the end-to-end tests use too.

use std::{
    collections::BTreeMap,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    thread,
    time::Duration,
};

use sextant_testing::{Backend, Process, Serve, free_port, request, try_wait_for};

use crate::cli::DemoArgs;

/// A demo step.
struct Step {
    /// What it shows.
    title: &'static str,
    /// The VirtualService's `http` rules.
    http: &'static str,
    /// Headers half of the step's requests carry.
    headers: &'static [(&'static str, &'static str)],
}

const STEPS: &[Step] = &[
    Step {
        title: "all traffic to reviews v1",
        http: "  - route: [{destination: {host: reviews, subset: v1}}]\n",
        headers: &[],
    },
    Step {
        title: "50/50 between v1 and v3",
        http: "  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 50}\n    - {destination: {host: reviews, subset: v3}, weight: 50}\n",
        headers: &[],
    },
    Step {
        title: "end-user: jason goes to v2, everyone else to v1 (half the requests carry the header)",
        http: "  - match: [{headers: {end-user: {exact: jason}}}]\n    route: [{destination: {host: reviews, subset: v2}}]\n  - route: [{destination: {host: reviews, subset: v1}}]\n",
        headers: &[("end-user", "jason")],
    },
    Step {
        title: "fault injection: 30% of requests aborted with 503, the rest to v1",
        http: "  - fault: {abort: {httpStatus: 503, percentage: {value: 30}}}\n    route: [{destination: {host: reviews, subset: v1}}]\n",
        headers: &[],
    },
];

fn vs_file(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n  namespace: default\nspec:\n  hosts:\n  - reviews\n  http:\n{http}"
    )
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

pub fn run(args: DemoArgs) -> ExitCode {
    match demo(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn demo(args: DemoArgs) -> Result<(), String> {
    let DemoArgs {
        config_dir,
        envoy,
        requests,
    } = args;
    let work: PathBuf = std::env::temp_dir().join(format!("sextant-demo-{}", std::process::id()));
    copy_dir(&config_dir, &work).map_err(|e| format!("copying {}: {e}", config_dir.display()))?;
    let result = demo_in(&work, &envoy, requests);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn demo_in(work: &Path, envoy: &Path, requests: usize) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut backends = Vec::new();
    for (ip, name) in [
        ("127.0.1.3", "v1"),
        ("127.0.1.4", "v2"),
        ("127.0.1.5", "v3"),
    ] {
        backends.push(
            Backend::start(&format!("{ip}:9080"), name)
                .map_err(|e| format!("backend {name} on {ip}:9080: {e}"))?,
        );
    }
    println!("backends: reviews v1 on 127.0.1.3:9080, v2 on 127.0.1.4:9080, v3 on 127.0.1.5:9080");
    let envoy_admin = free_port();
    let serve = Serve::new();
    let (xds, admin) = (serve.xds, serve.admin);
    let _sextant = Process(
        serve
            .command(&exe)
            .args(["--config-dir", &work.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting sextant serve: {e}"))?,
    );
    serve.wait_ready(Duration::from_secs(20))?;
    println!("sextant serve: xDS on 127.0.0.1:{xds}, admin on 127.0.0.1:{admin}");
    let node = "sidecar~127.0.2.1~productpage-demo.default~default.svc.cluster.local";
    let out = Command::new(&exe)
        .args([
            "bootstrap",
            "--node-id",
            node,
            "--xds-address",
            &format!("127.0.0.1:{xds}"),
        ])
        .args([
            "--bind-address",
            "127.0.0.2",
            "--admin-port",
            &envoy_admin.to_string(),
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let bootstrap =
        std::env::temp_dir().join(format!("sextant-demo-{}-envoy.yaml", std::process::id()));
    std::fs::write(&bootstrap, &out.stdout).map_err(|e| e.to_string())?;
    let _envoy = Process(
        Command::new(envoy)
            .args([
                "-c",
                &bootstrap.display().to_string(),
                "--use-dynamic-base-id",
                "--concurrency",
                "1",
                "-l",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting Envoy ({}): {e}", envoy.display()))?,
    );
    let listener = SocketAddr::from(([127, 0, 0, 2], 9080));
    println!("envoy: outbound listener 127.0.0.2:9080, admin 127.0.0.1:{envoy_admin}\n");
    let vs = work.join("virtual-services.yaml");
    for (
        i,
        Step {
            title,
            http,
            headers,
        },
    ) in STEPS.iter().enumerate()
    {
        let tmp = work.join(".vs.tmp");
        std::fs::write(&tmp, vs_file(http)).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &vs).map_err(|e| e.to_string())?;
        println!("step {}: {title}", i + 1);
        // Wait until Envoy has the new routes: the first request of the pattern succeeds.
        thread::sleep(Duration::from_millis(400));
        try_wait_for("Envoy to apply the routes", Duration::from_secs(15), || {
            request(listener, "reviews", "/", headers)
        })?;
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for n in 1..=requests {
            let with_header = !headers.is_empty() && n % 2 == 0;
            let h: &[(&str, &str)] = if with_header { headers } else { &[] };
            let key = match request(listener, "reviews", "/", h) {
                Some((200, body, _)) => format!("reviews {body}"),
                Some((status, _, _)) => format!("HTTP {status}"),
                None => "no answer".to_owned(),
            };
            *counts.entry(key).or_default() += 1;
            if n % (requests / 4).max(1) == 0 || n == requests {
                let line: Vec<String> = counts
                    .iter()
                    .map(|(k, c)| format!("{k}: {:>3}%", c * 100 / n))
                    .collect();
                print!("\r  after {n:>4} requests  {}", line.join("   "));
                let _ = std::io::stdout().flush();
            }
        }
        println!();
        for (k, c) in &counts {
            let bar = "#".repeat(c * 40 / requests);
            println!("  {k:<12} {bar} {c}");
        }
        println!();
    }
    println!("done; cleaning up");
    drop(backends);
    let _ = std::fs::remove_file(&bootstrap);
    Ok(())
}
