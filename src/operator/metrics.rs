//! Prometheus metrics in the text exposition format, served with `/healthz` and `/readyz` on
//! the metrics address.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::telemetry::prometheus::Histogram;

#[derive(Default)]
struct Counters {
    reconciles: BTreeMap<&'static str, u64>,
    failures: BTreeMap<(&'static str, &'static str), u64>,
    durations: BTreeMap<&'static str, Histogram>,
}

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
    leader: AtomicBool,
}

impl Metrics {
    /// Counts one reconcile of `kind` that took `elapsed`, failed with `failure` if any.
    pub fn observe(&self, kind: &'static str, elapsed: Duration, failure: Option<&'static str>) {
        let Ok(mut counters) = self.counters.lock() else {
            return;
        };
        *counters.reconciles.entry(kind).or_default() += 1;
        if let Some(reason) = failure {
            *counters.failures.entry((kind, reason)).or_default() += 1;
        }
        counters.durations.entry(kind).or_default().observe(elapsed);
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP ferroflow_operator_leader 1 while this replica holds the lease."
        );
        let _ = writeln!(out, "# TYPE ferroflow_operator_leader gauge");
        let _ = writeln!(
            out,
            "ferroflow_operator_leader {}",
            u8::from(self.is_leader())
        );
        let Ok(counters) = self.counters.lock() else {
            return out;
        };
        let _ = writeln!(
            out,
            "# HELP ferroflow_operator_reconciles_total Reconciles run, by kind."
        );
        let _ = writeln!(out, "# TYPE ferroflow_operator_reconciles_total counter");
        for (kind, count) in &counters.reconciles {
            let _ = writeln!(
                out,
                "ferroflow_operator_reconciles_total{{kind=\"{kind}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP ferroflow_operator_reconcile_failures_total Reconciles that failed, by kind and reason."
        );
        let _ = writeln!(
            out,
            "# TYPE ferroflow_operator_reconcile_failures_total counter"
        );
        for ((kind, reason), count) in &counters.failures {
            let _ = writeln!(
                out,
                "ferroflow_operator_reconcile_failures_total{{kind=\"{kind}\",reason=\"{reason}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP ferroflow_operator_reconcile_duration_seconds Time per reconcile, by kind."
        );
        let _ = writeln!(
            out,
            "# TYPE ferroflow_operator_reconcile_duration_seconds histogram"
        );
        for (kind, histogram) in &counters.durations {
            histogram.write(
                &mut out,
                "ferroflow_operator_reconcile_duration_seconds",
                &format!("kind=\"{kind}\""),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_failures_and_cumulative_buckets() {
        let metrics = Metrics::default();
        metrics.observe("ModelVersion", Duration::from_millis(20), None);
        metrics.observe(
            "ModelVersion",
            Duration::from_millis(300),
            Some("StoreUnavailable"),
        );
        let text = metrics.render();
        assert!(text.contains("ferroflow_operator_reconciles_total{kind=\"ModelVersion\"} 2"));
        assert!(text.contains(
            "ferroflow_operator_reconcile_failures_total{kind=\"ModelVersion\",reason=\"StoreUnavailable\"} 1"
        ));
        assert!(text.contains("ferroflow_operator_reconcile_duration_seconds_bucket{kind=\"ModelVersion\",le=\"0.05\"} 1"));
        assert!(text.contains("ferroflow_operator_reconcile_duration_seconds_bucket{kind=\"ModelVersion\",le=\"0.5\"} 2"));
        assert!(text.contains("ferroflow_operator_leader 0"));
    }
}
