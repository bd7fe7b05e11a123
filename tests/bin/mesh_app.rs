//! `mesh-app`: the application the sidecar-capture tests run inside a Pod's network namespace.
//! It knows nothing of the mesh: it listens on plain TCP ports and calls other services by
//! their Service addresses, as bookinfo's applications do.
//!
//! - `mesh-app serve --name NAME --listen ADDR:PORT... [--call URL...]`: answers every request
//!   with JSON `{"name", "path", "xfcc", "calls"}`, where `xfcc` is the request's
//!   `x-forwarded-client-cert` and `calls` the answers of a GET to each `--call` URL (made
//!   afresh for each request). `GET /fetch?url=URL` answers with one GET to `URL` instead.
//! - `mesh-app get URL [--header K:V...]`: one GET; prints the status line's code and the body.
//!   Exits 0 with an answer, 1 without one (the error on standard error).
//!
//! std only, one thread per connection, `Connection: close`: a test tool, not a server.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream, ToSocketAddrs},
    process::ExitCode,
    thread,
    time::Duration,
};

use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("get") => get_command(&args[1..]),
        _ => {
            eprintln!(
                "usage: mesh-app serve --name NAME --listen ADDR:PORT... [--call URL...] | mesh-app get URL [--header K:V...]"
            );
            ExitCode::from(2)
        }
    }
}

/// The values of every `--flag VALUE` in `args`.
fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].as_str())
        .collect()
}

fn serve(args: &[String]) -> ExitCode {
    let name = values(args, "--name")
        .first()
        .copied()
        .unwrap_or("app")
        .to_owned();
    let calls: Vec<String> = values(args, "--call")
        .into_iter()
        .map(str::to_owned)
        .collect();
    let listens = values(args, "--listen");
    if listens.is_empty() {
        eprintln!("mesh-app serve: --listen ADDR:PORT is required");
        return ExitCode::from(2);
    }
    let mut threads = Vec::new();
    for addr in listens {
        let listener = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("mesh-app serve: listening on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let (name, calls) = (name.clone(), calls.clone());
        threads.push(thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (name, calls) = (name.clone(), calls.clone());
                thread::spawn(move || {
                    let _ = answer(stream, &name, &calls);
                });
            }
        }));
    }
    eprintln!("mesh-app {name} serving");
    for t in threads {
        let _ = t.join();
    }
    ExitCode::SUCCESS
}

/// Reads one request head and answers it.
fn answer(stream: TcpStream, name: &str, calls: &[String]) -> std::io::Result<()> {
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut xfcc = Value::Null;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':')
            && k.trim().eq_ignore_ascii_case("x-forwarded-client-cert")
        {
            xfcc = Value::String(v.trim().to_owned());
        }
    }
    let body = if let Some(url) = path.strip_prefix("/fetch?url=") {
        fetched(&percent_decode(url))
    } else {
        json!({
            "name": name,
            "path": path,
            "xfcc": xfcc,
            "calls": calls.iter().map(|url| fetched(url)).collect::<Vec<_>>(),
        })
    };
    let body = body.to_string();
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

/// One GET to `url` as JSON: `{"url", "status", "body"}` or `{"url", "error"}`; a JSON body is
/// kept as JSON.
fn fetched(url: &str) -> Value {
    match get(url, &[]) {
        Ok((status, body)) => json!({
            "url": url,
            "status": status,
            "body": serde_json::from_str::<Value>(&body).unwrap_or(Value::String(body)),
        }),
        Err(e) => json!({"url": url, "error": e}),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        match bytes[i] {
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn get_command(args: &[String]) -> ExitCode {
    let Some(url) = args.first() else {
        eprintln!("mesh-app get URL [--header K:V...]");
        return ExitCode::from(2);
    };
    let headers: Vec<(&str, &str)> = values(args, "--header")
        .into_iter()
        .filter_map(|h| h.split_once(':'))
        .collect();
    match get(url, &headers) {
        Ok((status, body)) => {
            println!("{status}\n{body}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// One HTTP/1.1 GET of an `http://HOST:PORT/PATH` URL: the status code and the body.
fn get(url: &str, headers: &[(&str, &str)]) -> Result<(u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("{url}: connect: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{}: {}\r\n", k.trim(), v.trim()));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{url}: write: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("{url}: read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url}: no HTTP answer ({} bytes)", raw.len()))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{url}: bad status line {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .replace(' ', "")
            .starts_with("transfer-encoding:chunked")
    });
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    ))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
