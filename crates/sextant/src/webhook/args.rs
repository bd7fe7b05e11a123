//! `sextant serve`'s bounds on what a peer of the webhook port holds while its requests
//! arrive and its answers leave (flattened into `ServeArgs`; declared here rather than in
//! `cli.rs`, which is at its size limit).

use std::time::Duration;

use super::{
    Budget, DEFAULT_BODY_GRACE_MS, DEFAULT_HEADER_TIMEOUT_MS, DEFAULT_MIN_BODY_BYTES_PER_SECOND,
};

/// Time and bytes on the webhook port (15017). Each cut or refusal is counted in
/// `sextant_xds_bounded_total{bound=...}`.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct WebhookArgs {
    /// Time a request's head may take to arrive (ms), also how long a kept-alive connection
    /// may sit idle and an answer may wait for the peer to read any of it; past it the
    /// connection is closed, counted as `bound="webhook_header_deadline"` (a head that
    /// stopped arriving) or `bound="webhook_write_deadline"` (an answer not read).
    #[arg(long, env = "SEXTANT_WEBHOOK_HEADER_TIMEOUT_MS", default_value_t = DEFAULT_HEADER_TIMEOUT_MS)]
    pub webhook_header_timeout_ms: u64,
    /// Time an AdmissionReview's body may take to arrive beyond its size at
    /// `--webhook-min-body-bytes-per-second` (ms); a slower one gets 408, counted as
    /// `bound="webhook_body_deadline"`.
    #[arg(long, env = "SEXTANT_WEBHOOK_BODY_GRACE_MS", default_value_t = DEFAULT_BODY_GRACE_MS)]
    pub webhook_body_grace_ms: u64,
    /// Slowest pace an AdmissionReview's body may arrive at (bytes/s).
    #[arg(long, env = "SEXTANT_WEBHOOK_MIN_BODY_BYTES_PER_SECOND", default_value_t = DEFAULT_MIN_BODY_BYTES_PER_SECOND)]
    pub webhook_min_body_bytes_per_second: u64,
    /// Bytes of AdmissionReviews held at once, from their first byte until their answer is
    /// sent; a review that finds it full takes the place of the oldest one still arriving,
    /// which gets 503, and is itself refused with 503 only when all have arrived; each
    /// counted as `bound="webhook_bytes_in_flight"`. Default: four times
    /// `--webhook-max-bytes`.
    #[arg(long, env = "SEXTANT_WEBHOOK_MAX_BYTES_IN_FLIGHT")]
    pub webhook_max_bytes_in_flight: Option<usize>,
}

impl WebhookArgs {
    /// The webhook's budget with these bounds and the review's own: `max_bytes` per
    /// review, `timeout_ms` to answer one, `concurrency` answered at once.
    pub fn budget(&self, max_bytes: usize, timeout_ms: u64, concurrency: usize) -> Budget {
        let WebhookArgs {
            webhook_header_timeout_ms,
            webhook_body_grace_ms,
            webhook_min_body_bytes_per_second,
            webhook_max_bytes_in_flight,
        } = *self;
        Budget {
            max_bytes,
            time: Duration::from_millis(timeout_ms),
            concurrency,
            // One review of the largest size always fits.
            max_bytes_in_flight: webhook_max_bytes_in_flight
                .unwrap_or(max_bytes.saturating_mul(4))
                .max(max_bytes),
            header_timeout: Duration::from_millis(webhook_header_timeout_ms.max(1)),
            body_grace: Duration::from_millis(webhook_body_grace_ms),
            min_body_bytes_per_second: webhook_min_body_bytes_per_second.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        webhook: WebhookArgs,
    }

    #[test]
    fn the_bytes_in_flight_default_to_four_reviews_and_hold_at_least_one() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
                .expect("valid")
                .webhook
                .budget(1000, 2000, 2)
        };
        let defaults = parse(&[]);
        assert_eq!(defaults.max_bytes_in_flight, 4000);
        assert_eq!(defaults.header_timeout, Duration::from_secs(5));
        assert_eq!(
            parse(&["--webhook-max-bytes-in-flight", "10"]).max_bytes_in_flight,
            1000
        );
        let body = parse(&[
            "--webhook-body-grace-ms",
            "1000",
            "--webhook-min-body-bytes-per-second",
            "500",
        ]);
        assert_eq!(body.body_time(1000), Duration::from_secs(3));
    }
}
