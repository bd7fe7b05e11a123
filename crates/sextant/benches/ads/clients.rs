//! The server's side of the processes: the emulated proxies' processes (`proxies.rs`), started
//! from this executable and driven by line commands, and the transport floor's sender.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::Duration,
};

use tokio::sync::mpsc;

use super::{CLIENTS_ENV, now_us};

/// Set in each proxies' process: its number `k` among `client_procs()`.
pub const CLIENT_INDEX_ENV: &str = "SEXTANT_BENCH_CLIENT_INDEX";

/// How many processes run the emulated proxies: `SEXTANT_BENCH_CLIENT_PROCS` (default 1).
/// With more than one, process `k` of `n` runs the proxies `i` with `i % n == k`, and no
/// process is pinned, so the server and the proxies share both cores.
pub fn client_procs() -> usize {
    std::env::var("SEXTANT_BENCH_CLIENT_PROCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}

/// How many of the proxies `0..n` process `k` of `procs` runs.
pub fn share(n: usize, k: usize, procs: usize) -> usize {
    (0..n).filter(|i| i % procs == k).count()
}

/// One process of emulated proxies, driven by line commands on its stdin.
struct Process {
    stdin: std::process::ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    child: std::process::Child,
}

/// The emulated proxies' processes (`client_procs`).
pub struct Clients {
    procs: Vec<Process>,
}

impl Clients {
    /// Starts `n` processes running `proxies` emulated proxies between them.
    pub fn spawn(addr: &str, proxies: usize, n: usize) -> Clients {
        let procs = (0..n)
            .map(|k| {
                let mut child = Command::new(std::env::current_exe().expect("exe"))
                    .env(CLIENTS_ENV, addr)
                    .env("SEXTANT_BENCH_PROXIES", proxies.to_string())
                    .env(CLIENT_INDEX_ENV, k.to_string())
                    .env("SEXTANT_BENCH_CLIENT_PROCS", n.to_string())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("spawn the clients process");
                let stdout = child.stdout.take().expect("stdout");
                let (tx, lines) = mpsc::unbounded_channel();
                std::thread::spawn(move || {
                    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                });
                Process {
                    stdin: child.stdin.take().expect("stdin"),
                    lines,
                    child,
                }
            })
            .collect();
        Clients { procs }
    }

    /// How many processes there are.
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// Sends the same command to every process and returns each one's reply, as words.
    pub async fn ask(&mut self, command: &str) -> Vec<Vec<String>> {
        self.ask_each(|_| Some(command.to_owned())).await
    }

    /// Sends process `k` the command `command(k)` (none when `None`) and returns the replies
    /// of those asked, in order.
    pub async fn ask_each(
        &mut self,
        command: impl Fn(usize) -> Option<String>,
    ) -> Vec<Vec<String>> {
        let mut asked = Vec::new();
        for (k, p) in self.procs.iter_mut().enumerate() {
            if let Some(c) = command(k) {
                writeln!(p.stdin, "{c}").expect("write to clients");
                p.stdin.flush().expect("flush");
                asked.push(k);
            }
        }
        let mut replies = Vec::new();
        for k in asked {
            replies.push(self.next_reply(k).await);
        }
        replies
    }

    /// The words of process `k`'s next reply.
    async fn next_reply(&mut self, k: usize) -> Vec<String> {
        let line = tokio::time::timeout(Duration::from_secs(600), self.procs[k].lines.recv())
            .await
            .expect("clients did not answer")
            .expect("clients exited");
        line.split_whitespace().map(str::to_owned).collect()
    }

    /// Tells every process to quit and waits for it.
    pub async fn quit(mut self) {
        self.ask("quit").await;
        for mut p in self.procs {
            let _ = p.child.wait();
        }
    }
}

/// The sum of word `i` over the replies.
pub fn sum(replies: &[Vec<String>], i: usize) -> u64 {
    replies.iter().map(|r| num(r, i)).sum()
}

/// The largest word `i` over the replies.
pub fn max(replies: &[Vec<String>], i: usize) -> u64 {
    replies.iter().map(|r| num(r, i)).max().unwrap_or(0)
}

/// The `i`-th word of a reply, a number.
pub fn num(words: &[String], i: usize) -> u64 {
    words[i].parse().expect("number")
}

/// CPU seconds the proxies' processes have used.
pub async fn client_cpu(clients: &mut Clients) -> f64 {
    clients
        .ask("cpu")
        .await
        .iter()
        .map(|r| r[1].parse::<f64>().expect("cpu seconds"))
        .sum()
}

/// Milliseconds to write `bytes` to each of `n` loopback TCP connections that the proxies'
/// process opens and drains: what moving a VirtualService change's bytes costs at the least.
pub async fn transport_floor(clients: &mut Clients, n: usize, bytes: usize) -> f64 {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accept = tokio::spawn(async move {
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            let (s, _) = listener.accept().await.expect("accept");
            s.set_nodelay(true).expect("nodelay");
            streams.push(s);
        }
        streams
    });
    let procs = clients.len();
    let replies = clients
        .ask_each(|k| Some(format!("drain {addr} {} {bytes}", share(n, k, procs))))
        .await;
    assert!(replies.iter().all(|r| r[0] == "connected"));
    let streams = accept.await.expect("accepted");
    let chunk = bytes::Bytes::from(vec![7u8; 64 * 1024]);
    let t0 = now_us();
    for mut s in streams {
        let chunk = chunk.clone();
        tokio::spawn(async move {
            let mut left = bytes;
            while left > 0 {
                let k = left.min(chunk.len());
                s.write_all(&chunk[..k]).await.expect("write");
                left -= k;
            }
        });
    }
    let mut done = 0;
    for k in 0..procs {
        done = done.max(num(&clients.next_reply(k).await, 1));
    }
    (done - t0) as f64 / 1e3
}
