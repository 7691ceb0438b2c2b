//! Percentiles and summaries of samples, and small formatting helpers.

use serde_json::{json, Value};

/// The `p`-quantile (`0.0..=1.0`) of `sorted` (ascending), interpolated
/// linearly between the two nearest ranks; `None` for no samples.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let pos = p.clamp(0.0, 1.0) * last as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

/// The median of unsorted samples.
pub fn median(samples: &[f64]) -> Option<f64> {
    Summary::of(samples).map(|s| s.p50)
}

/// Order statistics of one set of samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Smallest.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile (with fewer than 100 samples, close to the maximum).
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Summary {
    /// Summarises `samples` (any order); `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Self> {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        Some(Summary {
            n: s.len(),
            min: *s.first()?,
            mean: s.iter().sum::<f64>() / s.len() as f64,
            p50: percentile(&s, 0.50)?,
            p90: percentile(&s, 0.90)?,
            p99: percentile(&s, 0.99)?,
            max: *s.last()?,
        })
    }

    /// As JSON, values rounded to 3 decimals.
    pub fn to_json(&self) -> Value {
        json!({
            "n": self.n,
            "min": round3(self.min),
            "mean": round3(self.mean),
            "p50": round3(self.p50),
            "p90": round3(self.p90),
            "p99": round3(self.p99),
            "max": round3(self.max),
        })
    }
}

/// Rounds to 3 decimals (JSON figures need no more).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A UTC timestamp `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch.
pub fn utc_iso(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    #[test]
    fn percentile__should_interpolate_between_nearest_ranks() {
        // Given four sorted samples
        let s = [10.0, 20.0, 30.0, 40.0];
        // When / Then: the ends are the extremes, inner quantiles interpolate
        assert_eq!(percentile(&s, 0.0), Some(10.0));
        assert_eq!(percentile(&s, 1.0), Some(40.0));
        assert_eq!(percentile(&s, 0.5), Some(25.0));
        assert!((percentile(&s, 0.9).unwrap() - 37.0).abs() < 1e-9);
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
    }

    #[test]
    fn percentile__should_be_none_without_samples() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn summary__should_sort_unordered_samples() {
        // Given 1..=100 shuffled
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        v.reverse();
        v.swap(3, 77);
        // When
        let s = Summary::of(&v).unwrap();
        // Then
        assert_eq!((s.n, s.min, s.max), (100, 1.0, 100.0));
        assert!((s.p50 - 50.5).abs() < 1e-9);
        assert!((s.p99 - 99.01).abs() < 1e-9);
        assert!((s.mean - 50.5).abs() < 1e-9);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    }

    #[test]
    fn utc_iso__should_match_known_dates() {
        assert_eq!(utc_iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_iso(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_iso(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
