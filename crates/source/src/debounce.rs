//! The one debounce: a burst of change signals from a source becomes one publish.

use std::time::Duration;

use tokio::{
    sync::mpsc,
    time::{Instant, timeout_at},
};

/// Groups change signals into bursts. A burst starts with a signal and settles once no signal
/// has come for `quiet`, or `max` after its first signal at the latest, so that a steady
/// stream of changes still publishes.
pub struct Debounce {
    events: mpsc::UnboundedReceiver<()>,
    quiet: Duration,
    max: Duration,
}

impl Debounce {
    /// Debounces the signals `events` receives.
    pub fn new(events: mpsc::UnboundedReceiver<()>, quiet: Duration, max: Duration) -> Self {
        Debounce { events, quiet, max }
    }

    /// Waits for the next burst to settle, and returns when its first signal came. `None` once
    /// every sender is gone; a burst cut short by that is not reported.
    pub async fn settled(&mut self) -> Option<Instant> {
        self.events.recv().await?;
        let first = Instant::now();
        let deadline = first + self.max;
        loop {
            let quiet = Instant::now() + self.quiet;
            match timeout_at(quiet.min(deadline), self.events.recv()).await {
                Ok(Some(())) if Instant::now() < deadline => continue,
                Ok(None) => return None,
                _ => return Some(first),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        pin::{Pin, pin},
        task::Poll,
    };

    use tokio::time::advance;

    use super::*;

    const QUIET: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    /// Polls `f` once: whether it has settled at this instant, without waiting for it.
    async fn poll_once<F: Future>(mut f: Pin<&mut F>) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx))).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_settles_once_quiet_for_the_quiet_window() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut debounce = Debounce::new(rx, QUIET, MAX);
        let first = Instant::now();
        tx.send(()).expect("open");
        let mut settled = pin!(debounce.settled());
        assert!(poll_once(settled.as_mut()).await.is_pending());
        advance(QUIET - MS).await;
        assert!(poll_once(settled.as_mut()).await.is_pending());
        advance(MS).await;
        assert_eq!(poll_once(settled.as_mut()).await, Poll::Ready(Some(first)));
    }

    #[tokio::test(start_paused = true)]
    async fn each_change_restarts_the_quiet_window() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut debounce = Debounce::new(rx, QUIET, MAX);
        let first = Instant::now();
        tx.send(()).expect("open");
        let mut settled = pin!(debounce.settled());
        assert!(poll_once(settled.as_mut()).await.is_pending());
        advance(60 * MS).await;
        tx.send(()).expect("open");
        assert!(poll_once(settled.as_mut()).await.is_pending());
        // 100 ms after the first change, but only 40 ms after the last.
        advance(40 * MS).await;
        assert!(poll_once(settled.as_mut()).await.is_pending());
        advance(QUIET - 40 * MS - MS).await;
        assert!(poll_once(settled.as_mut()).await.is_pending());
        advance(MS).await;
        assert_eq!(poll_once(settled.as_mut()).await, Poll::Ready(Some(first)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_of_changes_settles_at_the_max_window() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut debounce = Debounce::new(rx, QUIET, MAX);
        let first = Instant::now();
        tx.send(()).expect("open");
        {
            let mut settled = pin!(debounce.settled());
            assert!(poll_once(settled.as_mut()).await.is_pending());
            // A change every 50 ms: never quiet for 100 ms.
            while Instant::now() + 50 * MS < first + MAX {
                advance(50 * MS).await;
                tx.send(()).expect("open");
                assert!(
                    poll_once(settled.as_mut()).await.is_pending(),
                    "settled {:?} after the first change",
                    first.elapsed()
                );
            }
            advance(50 * MS).await;
            assert_eq!(first.elapsed(), MAX);
            assert_eq!(poll_once(settled.as_mut()).await, Poll::Ready(Some(first)));
        }
        // The stream goes on: the next burst starts with the next change.
        let next = Instant::now();
        tx.send(()).expect("open");
        let mut settled = pin!(debounce.settled());
        assert!(poll_once(settled.as_mut()).await.is_pending());
        advance(QUIET).await;
        assert_eq!(poll_once(settled.as_mut()).await, Poll::Ready(Some(next)));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_settles_without_changes() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut debounce = Debounce::new(rx, QUIET, MAX);
        let mut settled = pin!(debounce.settled());
        assert!(poll_once(settled.as_mut()).await.is_pending());
        advance(10 * MAX).await;
        assert!(poll_once(settled.as_mut()).await.is_pending());
        // The source is gone: no burst, now or later.
        drop(tx);
        assert_eq!(poll_once(settled.as_mut()).await, Poll::Ready(None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_cut_short_by_the_source_closing_is_not_reported() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut debounce = Debounce::new(rx, QUIET, MAX);
        tx.send(()).expect("open");
        drop(tx);
        assert_eq!(debounce.settled().await, None);
    }
}
