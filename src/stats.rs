//! Numbers about runs, for simulate and bench: latency distributions, the
//! median and the spread of repeated measurements, and this or another
//! process's size as Linux reports it.
//!
//! Latencies go into an `hdrhistogram` (fixed memory, whatever the number
//! of samples, and mergeable across threads), not a growing `Vec`.

use std::time::Duration;

use hdrhistogram::Histogram;

/// A latency distribution in microseconds, from 1 µs to an hour, to three
/// significant digits.
#[derive(Debug, Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Latencies {
        Latencies::new()
    }
}

/// The largest latency recorded as itself; longer ones are clamped to it.
const MAX_MICROS: u64 = 3_600_000_000;

impl Latencies {
    pub fn new() -> Latencies {
        Latencies {
            // Three significant digits over 1 µs..1 h is a fixed ~200 KiB;
            // the bounds are constants, so this cannot fail.
            histogram: Histogram::new_with_bounds(1, MAX_MICROS, 3)
                .unwrap_or_else(|_| unreachable!("constant, valid bounds")),
        }
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let micros = (latency.as_micros().min(u128::from(MAX_MICROS)) as u64).max(1);
        self.histogram.saturating_record(micros);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides: the add cannot go out of range.
        let _ = self.histogram.add(&other.histogram);
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The `q` quantile (0 to 1) in microseconds; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.histogram.is_empty() {
            return 0.0;
        }
        self.histogram.value_at_quantile(q) as f64
    }

    /// The largest latency in microseconds; 0 when empty.
    pub fn max_us(&self) -> f64 {
        self.histogram.max() as f64
    }
}

/// The median of `values` (the upper one of an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// The smallest and the largest of repeated measurements: how far the
/// runs behind a median swung.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Spread {
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; `None` when empty.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let min = values.iter().copied().reduce(f64::min)?;
        let max = values.iter().copied().reduce(f64::max)?;
        Some(Spread { min, max })
    }

    /// `0.52–8.73`, each bound to two decimals, as the tables show ratios.
    pub fn show(self) -> String {
        format!("{:.2}–{:.2}", self.min, self.max)
    }
}

/// The element of `items` whose `key` is the median, so the figures that
/// come with it belong to the same run.
pub fn median_by<T: Clone>(items: &[T], key: impl Fn(&T) -> f64) -> Option<T> {
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted.get(sorted.len() / 2).map(|t| (*t).clone())
}

/// A number field of `/proc/PID/status` (e.g. `VmHWM:`, `Threads:`), for
/// `pid` `self` or a process id; `None` off Linux or for a field not there.
pub fn proc_status(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `1 patient`, `2 patients`: a count with its noun, singular for one.
pub fn plural(count: impl Into<u64>, one: &str, many: &str) -> String {
    let count = count.into();
    format!("{count} {}", if count == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_recorded_latencies() {
        let mut latencies = Latencies::new();
        for ms in [10, 20, 30, 40] {
            latencies.record(Duration::from_millis(ms));
        }
        assert_eq!(latencies.count(), 4);
        let p50 = latencies.quantile_us(0.5);
        assert!((19_000.0..=21_000.0).contains(&p50), "{p50}");
        let max = latencies.max_us();
        assert!((39_000.0..=41_000.0).contains(&max), "{max}");
        let mut other = Latencies::new();
        other.record(Duration::from_secs(1));
        latencies.merge(&other);
        assert_eq!(latencies.count(), 5);
        assert_eq!(Latencies::new().quantile_us(0.99), 0.0);
    }

    #[test]
    fn medians_pick_the_middle() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(
            median_by(&[(1, 5.0), (2, 1.0), (3, 3.0)], |t| t.1),
            Some((3, 3.0))
        );
    }

    #[test]
    fn a_spread_is_the_smallest_and_the_largest() {
        let spread = Spread::of(&[8.73, 0.52, 1.22, 0.68]);
        assert_eq!(
            spread,
            Some(Spread {
                min: 0.52,
                max: 8.73
            })
        );
        assert_eq!(spread.map(Spread::show).as_deref(), Some("0.52–8.73"));
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn proc_status_reads_this_process() {
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(proc_status("self", "Threads:").is_some_and(|n| n >= 1));
            assert_eq!(proc_status("self", "NoSuchField:"), None);
        }
    }

    #[test]
    fn plurals_agree_with_their_count() {
        assert_eq!(plural(1u64, "patient", "patients"), "1 patient");
        assert_eq!(plural(0u64, "patient", "patients"), "0 patients");
        assert_eq!(plural(3u64, "reply", "replies"), "3 replies");
    }
}
