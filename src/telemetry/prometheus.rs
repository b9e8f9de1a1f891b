//! The pieces of Prometheus' text exposition format both processes write: family headers and
//! histograms. A few counters need no metrics library.

use std::fmt::Write;
use std::time::Duration;

/// Upper bounds of the duration histograms, in seconds.
pub const DURATION_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// A duration histogram; bucket counts are per bucket and summed when written.
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    counts: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        self.count += 1;
        self.sum += seconds;
        if let Some(bucket) = DURATION_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.counts[bucket] += 1;
        }
    }

    /// Writes the `_bucket` (cumulative), `_sum` and `_count` series of `name`; `labels` is
    /// the label list without braces (`kind="Experiment"`), or empty.
    pub fn write(&self, out: &mut String, name: &str, labels: &str) {
        let separator = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in DURATION_BUCKETS.iter().zip(self.counts.iter()) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{separator}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{separator}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// Writes the `# HELP` and `# TYPE` lines that open a metric family.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes a metric family of one unlabelled sample.
pub fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// A label value escaped as the text format requires (backslash, quote, newline).
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_the_count() {
        let mut histogram = Histogram::default();
        histogram.observe(Duration::from_millis(20));
        histogram.observe(Duration::from_millis(300));
        histogram.observe(Duration::from_secs(60));
        let mut out = String::new();
        histogram.write(&mut out, "x_seconds", "route=\"/a\"");
        assert!(out.contains("x_seconds_bucket{route=\"/a\",le=\"0.01\"} 0\n"));
        assert!(out.contains("x_seconds_bucket{route=\"/a\",le=\"0.025\"} 1\n"));
        assert!(out.contains("x_seconds_bucket{route=\"/a\",le=\"0.5\"} 2\n"));
        assert!(out.contains("x_seconds_bucket{route=\"/a\",le=\"10\"} 2\n"));
        assert!(out.contains("x_seconds_bucket{route=\"/a\",le=\"+Inf\"} 3\n"));
        assert!(out.contains("x_seconds_count{route=\"/a\"} 3\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
