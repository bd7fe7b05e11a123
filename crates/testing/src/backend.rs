//! Small HTTP backends standing in for an application: each answers every request with its
//! name, or `503` while told to fail. The `x-forwarded-client-cert` a request carried (the
//! peer identity a sidecar forwards) comes back in the response header `x-saw-xfcc`.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
};

use axum::{
    Router,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
};
use tokio::sync::oneshot;

/// An HTTP backend served by axum on a thread of its own; stopped when dropped.
pub struct Backend {
    /// Answer 503 instead.
    pub fail: Arc<AtomicBool>,
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Backend {
    /// Listens on `addr` (e.g. `127.0.1.3:9080`).
    pub fn start(addr: &str, name: &'static str) -> std::io::Result<Backend> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let fail = Arc::new(AtomicBool::new(false));
        let failing = fail.clone();
        let app = Router::new().fallback(move |headers: HeaderMap| {
            let failing = failing.load(Ordering::Relaxed);
            async move {
                let status = if failing {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                };
                let mut response = (status, name).into_response();
                if let Some(xfcc) = headers.get("x-forwarded-client-cert") {
                    response.headers_mut().insert("x-saw-xfcc", xfcc.clone());
                }
                response
            }
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Ok(Backend {
            fail,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Graceful shutdown waits for open connections; Envoy may keep one, so the thread
        // is not joined (it ends with the process or when Envoy lets go).
        drop(self.thread.take());
    }
}
