//! The server's side of the two processes: the emulated proxies' process (`proxies.rs`),
//! started from this executable and driven by line commands, and the transport floor's sender.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::Duration,
};

use tokio::sync::mpsc;

use super::{CLIENTS_ENV, now_us};

/// The emulated proxies' process, driven by line commands on its stdin.
pub struct Clients {
    stdin: std::process::ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    pub child: std::process::Child,
}

impl Clients {
    pub fn spawn(addr: &str, proxies: usize) -> Clients {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .env(CLIENTS_ENV, addr)
            .env("SEXTANT_BENCH_PROXIES", proxies.to_string())
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
        Clients {
            stdin: child.stdin.take().expect("stdin"),
            lines,
            child,
        }
    }

    /// Sends a command and returns the words of the reply.
    pub async fn ask(&mut self, command: &str) -> Vec<String> {
        writeln!(self.stdin, "{command}").expect("write to clients");
        self.stdin.flush().expect("flush");
        let line = tokio::time::timeout(Duration::from_secs(300), self.lines.recv())
            .await
            .unwrap_or_else(|_| panic!("clients did not answer {command}"))
            .unwrap_or_else(|| panic!("clients exited during {command}"));
        line.split_whitespace().map(str::to_owned).collect()
    }

    /// The words of a further reply to the last command.
    async fn next_reply(&mut self) -> Vec<String> {
        let line = tokio::time::timeout(Duration::from_secs(300), self.lines.recv())
            .await
            .expect("clients did not answer")
            .expect("clients exited");
        line.split_whitespace().map(str::to_owned).collect()
    }
}

/// The `i`-th word of a reply, a number.
pub fn num(words: &[String], i: usize) -> u64 {
    words[i].parse().expect("number")
}

/// CPU seconds the proxies' process has used.
pub async fn client_cpu(clients: &mut Clients) -> f64 {
    clients.ask("cpu").await[1].parse().expect("cpu seconds")
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
    assert_eq!(
        clients.ask(&format!("drain {addr} {n} {bytes}")).await[0],
        "connected"
    );
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
    let done = clients.next_reply().await;
    (num(&done, 1) - t0) as f64 / 1e3
}
