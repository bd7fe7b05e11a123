//! Reading an AdmissionReview's body within its bounds: its size (`--webhook-max-bytes`), its
//! pace (it must arrive within `--webhook-body-grace-ms` plus its size at
//! `--webhook-min-body-bytes-per-second`), and the bytes all reviews hold at once, from the
//! first byte read until the answer is sent (`--webhook-max-bytes-in-flight`). When that
//! budget is full, a new review takes the place of the oldest review still arriving, which is
//! cut, as a new TLS handshake takes the oldest one's place: a peer stalling bodies can hold
//! no place that a review arriving at the API server's pace needs, since a real review is
//! never the oldest still arriving for long. Only when every byte held belongs to reviews
//! that have arrived is a new one refused.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use tokio::sync::oneshot;
use tokio_stream::StreamExt;

use super::Budget;
use crate::metrics::Metrics;

/// The bytes held by reviews, and the reviews still arriving, oldest first.
pub struct InFlight {
    limit: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    used: usize,
    /// Reviews still arriving, by arrival order: their bytes and how to cut them.
    arriving: BTreeMap<u64, (usize, oneshot::Sender<()>)>,
    next: u64,
}

/// Why a review holds no bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum NoRoom {
    /// Every byte of the budget belongs to reviews that have arrived.
    Full,
    /// The review was cut for a newer one while arriving.
    Cut,
}

impl InFlight {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<InFlight> {
        Arc::new(InFlight {
            limit,
            state: Mutex::default(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes held now.
    #[cfg(test)]
    fn used(&self) -> usize {
        self.state().used
    }

    /// Room for a review of `bytes` still arriving, cutting the oldest still arriving while
    /// there is not (each cut counted in `metrics`).
    pub fn reserve(self: &Arc<Self>, bytes: usize, metrics: &Metrics) -> Result<Held, NoRoom> {
        let mut state = self.state();
        while state.used + bytes > self.limit {
            let Some((_, (oldest, cut))) = state.arriving.pop_first() else {
                return Err(NoRoom::Full);
            };
            state.used -= oldest;
            // The cut review stops at its next poll and answers 503.
            let _ = cut.send(());
            metrics.bounded("webhook_bytes_in_flight");
        }
        let id = state.next;
        state.next += 1;
        let (cut, cut_rx) = oneshot::channel();
        state.arriving.insert(id, (bytes, cut));
        state.used += bytes;
        Ok(Held {
            id,
            bytes,
            arrived: false,
            cut: cut_rx,
            in_flight: self.clone(),
        })
    }
}

/// Bytes a review holds; given back when dropped (once its answer is sent).
pub struct Held {
    id: u64,
    bytes: usize,
    arrived: bool,
    cut: oneshot::Receiver<()>,
    in_flight: Arc<InFlight>,
}

impl Held {
    /// Marks the review arrived: from now on it is not cut for a newer one.
    pub fn arrived(&mut self) -> Result<(), NoRoom> {
        let mut state = self.in_flight.state();
        if state.arriving.remove(&self.id).is_none() {
            return Err(NoRoom::Cut);
        }
        self.arrived = true;
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut state = self.in_flight.state();
        // A review cut while arriving gave its bytes back when it was cut.
        if self.arrived || state.arriving.remove(&self.id).is_some() {
            state.used -= self.bytes;
        }
    }
}

/// A review's body and the bytes it holds until its answer is sent.
pub struct Arrived {
    /// The body.
    pub bytes: Bytes,
    /// Its place in the budget.
    pub held: Held,
}

/// Reads `body` within `budget`, holding its bytes in `in_flight`; a refusal is the answer
/// to send, naming the bound, and is counted in `metrics`.
pub async fn read(
    body: Body,
    budget: &Budget,
    in_flight: &Arc<InFlight>,
    metrics: &Metrics,
) -> Result<Arrived, Response> {
    let started = tokio::time::Instant::now();
    let too_large = || {
        metrics.bounded("webhook_bytes");
        refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the AdmissionReview is larger than the webhook's budget of {} bytes (--webhook-max-bytes)",
                budget.max_bytes
            ),
        )
    };
    let announced = http_body::Body::size_hint(&body).exact();
    let expected = match announced.map(usize::try_from) {
        Some(Ok(n)) if n <= budget.max_bytes => n,
        Some(_) => return Err(too_large()),
        // A body of unannounced length may be as large as any.
        None => budget.max_bytes,
    };
    let mut held = in_flight.reserve(expected, metrics).map_err(|_| {
        metrics.bounded("webhook_bytes_in_flight");
        busy(budget)
    })?;
    let deadline = started + budget.body_time(expected);
    // The bytes announced are held already: one allocation, given back whole when the review
    // is cut or answered. A body of unannounced length grows as it arrives.
    let mut data = Vec::with_capacity(if announced.is_some() {
        expected
    } else {
        expected.min(64 << 10)
    });
    let mut stream = body.into_data_stream();
    loop {
        let chunk = tokio::select! {
            _ = &mut held.cut => return Err(cut(budget)),
            () = tokio::time::sleep_until(deadline) => {
                metrics.bounded("webhook_body_deadline");
                return Err(refusal(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the AdmissionReview did not arrive within {:?} (--webhook-body-grace-ms, and its {expected} bytes at --webhook-min-body-bytes-per-second {})",
                        budget.body_time(expected),
                        budget.min_body_bytes_per_second
                    ),
                ));
            }
            chunk = stream.next() => chunk,
        };
        match chunk {
            None => break,
            Some(Ok(chunk)) => {
                if data.len() + chunk.len() > expected {
                    return Err(too_large());
                }
                data.extend_from_slice(&chunk);
            }
            Some(Err(e)) => {
                return Err(refusal(
                    StatusCode::BAD_REQUEST,
                    format!("reading the request failed: {e}"),
                ));
            }
        }
    }
    held.arrived().map_err(|_| cut(budget))?;
    Ok(Arrived {
        bytes: Bytes::from(data),
        held,
    })
}

impl Budget {
    /// The time a body of `bytes` may take to arrive.
    pub fn body_time(&self, bytes: usize) -> Duration {
        let rate = self.min_body_bytes_per_second.max(1);
        self.body_grace + Duration::from_secs_f64(bytes as f64 / rate as f64)
    }
}

fn refusal(status: StatusCode, message: String) -> Response {
    (status, message).into_response()
}

fn busy(budget: &Budget) -> Response {
    refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the webhook holds its budget of {} bytes of AdmissionReviews (--webhook-max-bytes-in-flight), all of them arrived and waiting for an answer; retry",
            budget.max_bytes_in_flight
        ),
    )
}

fn cut(budget: &Budget) -> Response {
    refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "cut: newer AdmissionReviews needed the webhook's budget of {} bytes in flight (--webhook-max-bytes-in-flight) and this one was the oldest still arriving",
            budget.max_bytes_in_flight
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Budget {
        Budget {
            max_bytes: 100,
            max_bytes_in_flight: 250,
            body_grace: Duration::from_millis(200),
            min_body_bytes_per_second: 1000,
            ..Budget::default()
        }
    }

    fn counted(metrics: &Metrics, bound: &str) -> u64 {
        metrics
            .bounded
            .get_or_create(&crate::metrics::BoundLabels {
                bound: bound.to_owned(),
            })
            .get()
    }

    #[test]
    fn a_full_budget_cuts_the_oldest_arriving_and_refuses_only_when_all_arrived() {
        let metrics = Metrics::new();
        let in_flight = InFlight::new(250);
        let mut first = in_flight.reserve(100, &metrics).expect("room");
        let mut second = in_flight.reserve(100, &metrics).expect("room");
        // The oldest still arriving makes room for the newest.
        let mut third = in_flight.reserve(100, &metrics).expect("room made");
        assert_eq!(first.arrived(), Err(NoRoom::Cut));
        assert!(first.cut.try_recv().is_ok(), "told it was cut");
        assert_eq!(in_flight.used(), 200);
        drop(first);
        assert_eq!(
            in_flight.used(),
            200,
            "a cut review gave its bytes back once"
        );
        second.arrived().expect("not cut");
        third.arrived().expect("not cut");
        assert_eq!(
            in_flight.reserve(100, &metrics).err(),
            Some(NoRoom::Full),
            "arrived reviews are not cut"
        );
        let small = in_flight.reserve(50, &metrics).expect("room left");
        drop((second, third, small));
        assert_eq!(in_flight.used(), 0);
        assert_eq!(counted(&metrics, "webhook_bytes_in_flight"), 1);
    }

    #[tokio::test]
    async fn bodies_are_read_within_their_size_and_time() {
        let metrics = Metrics::new();
        let budget = budget();
        let in_flight = InFlight::new(budget.max_bytes_in_flight);
        let ok = read(Body::from("{}"), &budget, &in_flight, &metrics).await;
        assert_eq!(ok.ok().map(|a| a.bytes), Some(Bytes::from("{}")));
        assert_eq!(in_flight.used(), 0, "given back with the answer");

        let large = read(Body::from(vec![b' '; 101]), &budget, &in_flight, &metrics).await;
        assert_eq!(
            large.err().map(|r| r.status()),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert_eq!(counted(&metrics, "webhook_bytes"), 1);

        // A body that stops arriving is cut at its deadline: 200 ms, and 0.1 s for the
        // 100 bytes a body of unannounced length may have.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tx.send(Ok(Bytes::from("{"))).await.expect("sent");
        let stalled = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        let started = std::time::Instant::now();
        let late = read(stalled, &budget, &in_flight, &metrics).await;
        let response = late.err().expect("refused");
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        let waited = started.elapsed();
        assert!(
            (Duration::from_millis(290)..Duration::from_secs(2)).contains(&waited),
            "{waited:?}"
        );
        assert_eq!(counted(&metrics, "webhook_body_deadline"), 1);
        assert_eq!(in_flight.used(), 0);
        drop(tx);
    }
}
