//! Figures: percentiles, and one run's results as the rows of the tables it prints.

/// The `p` quantile (0 to 1) of `values` by nearest rank; NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `p50 / p99 / max` in milliseconds (a decimal below 10 ms).
pub fn spread_ms(values: &[f64]) -> String {
    let ms = |v: f64| {
        if v < 10.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.0}")
        }
    };
    format!(
        "{} / {} / {} ms",
        ms(percentile(values, 0.5)),
        ms(percentile(values, 0.99)),
        ms(percentile(values, 1.0))
    )
}

/// `min / median / max` with a unit and precision.
pub fn range(values: &[f64], digits: usize, unit: &str) -> String {
    format!(
        "{:.digits$} / {:.digits$} / {:.digits$} {unit}",
        percentile(values, 0.0),
        percentile(values, 0.5),
        percentile(values, 1.0)
    )
}

/// What one run (a shape, a source, N Envoys) measured.
#[derive(Default)]
pub struct Outcome {
    /// "W-M" or "W-M-S".
    pub shape: String,
    /// "directory" or "kubectl".
    pub source: String,
    /// Envoys.
    pub envoys: usize,
    /// `sextant serve` from spawn to `/ready` (s), and its CPU meanwhile (s).
    pub serve_ready_s: f64,
    /// Sextant's CPU from spawn to ready (s).
    pub serve_ready_cpu_s: f64,
    /// Sextant's resident memory once ready, and once the Envoys are configured (MiB).
    pub serve_rss_mib: (f64, f64),
    /// Clusters and listeners per Envoy (from the first).
    pub clusters: u64,
    /// Listeners per Envoy.
    pub listeners: u64,
    /// Per Envoy: start to fully configured (ms).
    pub configured_ms: Vec<f64>,
    /// Per Envoy: its own CDS apply (ms).
    pub startup_cds_ms: Vec<f64>,
    /// Per Envoy: its own CDS + LDS + RDS apply (ms).
    pub startup_apply_ms: Vec<f64>,
    /// Sextant's CPU from the first Envoy's start until every one is configured (s).
    pub connect_cpu_s: f64,
    /// Per Envoy: resident memory (MiB).
    pub rss_mib: Vec<f64>,
    /// Per Envoy: `server.memory_allocated` (MiB).
    pub allocated_mib: Vec<f64>,
    /// Per change and Envoy: change to the Envoy's changed route configurations applied (ms).
    pub change_ms: Vec<f64>,
    /// Per change: change until the last Envoy applied it (ms).
    pub change_all_ms: Vec<f64>,
    /// Per change and Envoy: Envoy's own RDS apply of it (`update_duration`, ms).
    pub envoy_apply_ms: Vec<f64>,
    /// Samples where Envoy's histograms showed no new RDS apply (counted as 0 ms).
    pub envoy_apply_unseen: usize,
    /// Per change and Envoy: Sextant's share, (total - Envoy's own) / total.
    pub share: Vec<f64>,
    /// `serve`'s debounce quiet period (ms).
    pub debounce_ms: f64,
    /// Per change and Envoy: the total less Envoy's own apply, the debounce's quiet period
    /// and (Kubernetes path) kubectl's run (ms).
    pub residual_ms: Vec<f64>,
    /// Per change: Sextant's CPU (s).
    pub change_cpu_s: Vec<f64>,
    /// Per change: the test API server's CPU (s), on the Kubernetes path.
    pub testapi_cpu_s: Vec<f64>,
    /// Per change: how long `kubectl apply` ran (ms).
    pub kubectl_ms: Vec<f64>,
    /// Envoys whose route configuration was checked to hold the last weights.
    pub checked: usize,
    /// Per Envoy: how long one filtered `/stats` read took once configured (ms).
    pub stats_read_ms: Vec<f64>,
}

impl Outcome {
    /// The run's table.
    pub fn print(&self) {
        let mib = |v: &[f64]| range(v, 0, "MiB");
        println!();
        println!(
            "### {} through the {} source, {} Envoys",
            self.shape, self.source, self.envoys
        );
        println!();
        println!("| figure | result |");
        println!("|---|---|");
        println!(
            "| `sextant serve` spawn to ready | {:.2} s, Sextant CPU {:.2} s, RSS {:.0} MiB |",
            self.serve_ready_s, self.serve_ready_cpu_s, self.serve_rss_mib.0
        );
        println!(
            "| configuration per Envoy | {} clusters, {} listeners |",
            self.clusters, self.listeners
        );
        println!(
            "| Envoy start to fully configured (CDS, LDS, every RDS `update_time`), min / median / max | {} |",
            range(&ms_to_s(&self.configured_ms), 2, "s")
        );
        println!(
            "| of which Envoy's own apply (CDS + LDS + RDS `update_duration`) | {} (CDS alone {}) |",
            range(&ms_to_s(&self.startup_apply_ms), 2, "s"),
            range(&ms_to_s(&self.startup_cds_ms), 2, "s")
        );
        println!(
            "| Sextant CPU while the Envoys connect | {:.2} s (RSS after: {:.0} MiB) |",
            self.connect_cpu_s, self.serve_rss_mib.1
        );
        println!(
            "| Envoy RSS (/proc), min / median / max | {} |",
            mib(&self.rss_mib)
        );
        println!(
            "| Envoy `server.memory_allocated`, min / median / max | {} |",
            mib(&self.allocated_mib)
        );
        if !self.kubectl_ms.is_empty() {
            println!(
                "| `kubectl apply` ran, p50 / p99 / max | {} |",
                spread_ms(&self.kubectl_ms)
            );
        }
        println!(
            "| VS change until an Envoy's route has it ({} samples), p50 / p99 / max | **{}** |",
            self.change_ms.len(),
            spread_ms(&self.change_ms)
        );
        println!(
            "| VS change until every Envoy's route has it ({} changes), p50 / p99 / max | {} |",
            self.change_all_ms.len(),
            spread_ms(&self.change_all_ms)
        );
        println!(
            "| Envoy's own RDS apply of the change (`update_duration`, both routes), p50 / p99 / max | {}{} |",
            spread_ms(&self.envoy_apply_ms),
            if self.envoy_apply_unseen > 0 {
                format!(
                    " ({} samples without a new `update_duration`)",
                    self.envoy_apply_unseen
                )
            } else {
                String::new()
            }
        );
        println!(
            "| Sextant's share (total - Envoy's own) / total, per sample p50 / max; of the p50s | {:.0}% / {:.0}%; {:.0}% |",
            percentile(&self.share, 0.5) * 100.0,
            percentile(&self.share, 1.0) * 100.0,
            self.share_of_medians() * 100.0
        );
        println!(
            "| total less Envoy's own apply, the {:.0} ms debounce{}, p50 / p99 / max | {} |",
            self.debounce_ms,
            if self.kubectl_ms.is_empty() {
                ""
            } else {
                " and kubectl's run"
            },
            spread_ms(&self.residual_ms)
        );
        println!(
            "| Sextant CPU per change, min / median / max | {} |",
            range(&self.change_cpu_s, 3, "s")
        );
        if !self.testapi_cpu_s.is_empty() {
            println!(
                "| test API server CPU per change, min / median / max | {} |",
                range(&self.testapi_cpu_s, 3, "s")
            );
        }
        println!(
            "| route checked in `config_dump` | {} of {} Envoys hold the last weights |",
            self.checked, self.envoys
        );
        println!(
            "| one filtered `/stats` read of an Envoy (why Envoys are read only after the fact), min / median / max | {} |",
            range(&self.stats_read_ms, 0, "ms")
        );
    }

    /// Sextant's share of the median change: (p50 total - p50 Envoy's own) / p50 total.
    pub fn share_of_medians(&self) -> f64 {
        let total = percentile(&self.change_ms, 0.5);
        (total - percentile(&self.envoy_apply_ms, 0.5)) / total
    }

    /// The run's row of the summary table.
    pub fn summary_row(&self) -> String {
        format!(
            "| {} | {} | {} | {:.2} / {:.2} s | {:.0} MiB | {} | {} | {:.0}% | {:.2} s / {:.3} s |",
            self.shape,
            self.source,
            self.envoys,
            percentile(&self.configured_ms, 0.5) / 1e3,
            percentile(&self.configured_ms, 1.0) / 1e3,
            percentile(&self.rss_mib, 0.5),
            spread_ms(&self.change_ms),
            spread_ms(&self.envoy_apply_ms),
            self.share_of_medians() * 100.0,
            self.connect_cpu_s,
            percentile(&self.change_cpu_s, 0.5),
        )
    }
}

/// The summary table's head.
pub const SUMMARY_HEAD: &str = "| shape | source | Envoys | configured, median / max | Envoy RSS, median | change to route applied, p50 / p99 / max | Envoy's own RDS apply, p50 / p99 / max | Sextant's share (of p50s) | Sextant CPU: connect / per change (median) |\n|---|---|---|---|---|---|---|---|---|";

fn ms_to_s(values: &[f64]) -> Vec<f64> {
    values.iter().map(|v| v / 1e3).collect()
}
