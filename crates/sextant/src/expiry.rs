//! When the CA's certificates expire, as metrics (`sextant_certificate_expiry_timestamp_seconds`)
//! and as a loud log well before: the root and any intermediate (when a fifth of their life,
//! or at most 30 days, is left), the serving certificates (30 days), and the oldest workload
//! certificate held (a quarter of its TTL: renewal at half life has not happened).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use sextant_ca::{Ca, SERVING_TTL, Secrets};

use crate::metrics::{CertificateLabels, Metrics};

/// The same warning at most this often.
const WARN_EVERY: Duration = Duration::from_secs(3600);

/// The fixed certificates' ends and how early to warn about each.
pub struct Expiries {
    fixed: Vec<(&'static str, SystemTime, Duration)>,
    workload_ttl: Duration,
    metrics: Arc<Metrics>,
    warned: Mutex<HashMap<&'static str, Instant>>,
}

impl Expiries {
    /// For `ca`, whose serving certificates were made at `served_since`; workload
    /// certificates last `workload_ttl`.
    pub fn new(
        ca: &Ca,
        served_since: SystemTime,
        workload_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let month = Duration::from_secs(30 * 86_400);
        let mut fixed: Vec<(&'static str, SystemTime, Duration)> = ca
            .expiries()
            .into_iter()
            .map(|(name, end)| {
                let life = end.duration_since(served_since).unwrap_or_default();
                (name, end, (life / 5).min(month))
            })
            .collect();
        fixed.push(("serving", served_since + SERVING_TTL, month));
        Expiries {
            fixed,
            workload_ttl,
            metrics,
            warned: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the gauges and warns about what expires soon.
    pub fn check(&self, secrets: Option<&Secrets>) {
        let now = SystemTime::now();
        let mut all: Vec<(&'static str, SystemTime, Duration)> = self.fixed.clone();
        if let Some(secrets) = secrets {
            self.metrics.workload_certificates.set(secrets.len() as i64);
            match secrets.oldest_expiry() {
                Some(end) => all.push(("oldest_workload", end, self.workload_ttl / 4)),
                None => {
                    self.metrics.certificate_expiry.remove(&CertificateLabels {
                        certificate: "oldest_workload".to_owned(),
                    });
                }
            }
        }
        for (name, end, early) in all {
            let unix = end
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            self.metrics
                .certificate_expiry
                .get_or_create(&CertificateLabels {
                    certificate: name.to_owned(),
                })
                .set(unix);
            let left = end.duration_since(now).unwrap_or_default();
            if left <= early && self.due(name) {
                tracing::error!(
                    certificate = name,
                    expires_in_seconds = left.as_secs(),
                    "CERTIFICATE EXPIRES SOON: {name} certificate expires in {} h; \
                     rotate it (docs/SECURITY.md) before workloads lose mutual TLS",
                    left.as_secs() / 3600
                );
            }
        }
    }

    /// Whether `name`'s warning is due (not given within the last hour).
    fn due(&self, name: &'static str) -> bool {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match warned.get(name) {
            Some(at) if now.duration_since(*at) < WARN_EVERY => false,
            _ => {
                warned.insert(name, now);
                true
            }
        }
    }
}
