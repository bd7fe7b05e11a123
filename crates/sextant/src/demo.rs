//! `sextant demo`: the bookinfo-like mesh of `examples/` served to a real Envoy, with small
//! backends on their own loopback addresses, while a sequence of route changes is applied and
//! the traffic split is printed as it happens. Also the helpers the end-to-end tests share
//! (backends, a minimal HTTP client, waiting on a condition).

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::cli::DemoArgs;

/// Kills a child process when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An HTTP/1.1 backend that answers every request with its name, or 503 while `fail` is set.
pub struct Backend {
    stop: Arc<AtomicBool>,
    /// Answer 503 instead.
    pub fail: Arc<AtomicBool>,
}

impl Backend {
    /// Listens on `addr` (e.g. `127.0.1.3:9080`).
    pub fn start(addr: &str, name: &'static str) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let fail = Arc::new(AtomicBool::new(false));
        let (s, f) = (stop.clone(), fail.clone());
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let failing = f.load(Ordering::Relaxed);
                        thread::spawn(move || serve_one(&mut conn, name, failing));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Ok(Backend { stop, fail })
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_one(conn: &mut TcpStream, name: &str, failing: bool) {
    conn.set_nonblocking(false).ok();
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    }
    let status = if failing {
        "503 Service Unavailable"
    } else {
        "200 OK"
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
        name.len()
    );
}

/// One HTTP/1.1 request: `(status, body, response head)`.
pub fn request(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String, String)> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    conn.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.trim() == "chunked"
        })
    });
    let body = if chunked {
        unchunk(body)?
    } else {
        body.to_owned()
    };
    Some((status, body, head.to_owned()))
}

/// The body of a chunked HTTP/1.1 response (Envoy's admin answers that way).
fn unchunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// Polls `f` until it returns `Some`, or fails after `deadline`.
pub fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= until {
            return Err(format!("timed out waiting for {what}"));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

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

    /// The command, listening on 127.0.0.1 at these ports.
    pub fn command(&self, exe: &std::path::Path) -> Command {
        let mut c = Command::new(exe);
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

    /// Waits until `/ready` answers 200.
    pub fn wait_ready(&self, deadline: Duration) -> Result<(), String> {
        wait_for("sextant /ready", deadline, || {
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

/// A demo step: what it shows, the VirtualService's `http` rules, request headers to try.
type Step = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const STEPS: &[Step] = &[
    (
        "all traffic to reviews v1",
        "  - route: [{destination: {host: reviews, subset: v1}}]\n",
        &[],
    ),
    (
        "50/50 between v1 and v3",
        "  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 50}\n    - {destination: {host: reviews, subset: v3}, weight: 50}\n",
        &[],
    ),
    (
        "end-user: jason goes to v2, everyone else to v1 (half the requests carry the header)",
        "  - match: [{headers: {end-user: {exact: jason}}}]\n    route: [{destination: {host: reviews, subset: v2}}]\n  - route: [{destination: {host: reviews, subset: v1}}]\n",
        &[("end-user", "jason")],
    ),
    (
        "fault injection: 30% of requests aborted with 503, the rest to v1",
        "  - fault: {abort: {httpStatus: 503, percentage: {value: 30}}}\n    route: [{destination: {host: reviews, subset: v1}}]\n",
        &[],
    ),
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
    for (i, (title, http, headers)) in STEPS.iter().enumerate() {
        let tmp = work.join(".vs.tmp");
        std::fs::write(&tmp, vs_file(http)).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &vs).map_err(|e| e.to_string())?;
        println!("step {}: {title}", i + 1);
        // Wait until Envoy has the new routes: the first request of the pattern succeeds.
        thread::sleep(Duration::from_millis(400));
        wait_for("Envoy to apply the routes", Duration::from_secs(15), || {
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
