//! Explicit-bucket histograms as the probes expose them (Prometheus
//! `_bucket{le}`/`_sum`/`_count`): taken from samples, differenced between
//! two scrapes (what happened in a window), merged across series, and read
//! as quantiles the way PromQL's `histogram_quantile` does (linear
//! interpolation inside the bucket holding the rank).

use std::collections::BTreeMap;

use crate::promtext::Sample;

/// Label set of a series (without `le`).
pub type Labels = BTreeMap<String, String>;

/// One histogram: per-bucket (not cumulative) counts.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Finite upper bounds, ascending; the last bucket is `+Inf`.
    pub bounds: Vec<f64>,
    /// `bounds.len() + 1` counts.
    pub buckets: Vec<f64>,
    pub sum: f64,
}

impl Histogram {
    pub fn empty(bounds: Vec<f64>) -> Self {
        let buckets = vec![0.0; bounds.len() + 1];
        Self {
            bounds,
            buckets,
            sum: 0.0,
        }
    }

    /// Builds one from `(le, cumulative count)` pairs (any order, `+Inf`
    /// included); `None` without a `+Inf` bucket.
    pub fn from_cumulative(mut points: Vec<(f64, f64)>, sum: f64) -> Option<Self> {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        points.dedup_by(|a, b| a.0 == b.0);
        let (last_le, _) = *points.last()?;
        if last_le != f64::INFINITY {
            return None;
        }
        let mut previous = 0.0;
        let mut buckets = Vec::with_capacity(points.len());
        for (_, cumulative) in &points {
            // A scrape racing an observation can see a bucket ahead of the
            // next one; never let a count go negative.
            buckets.push((cumulative - previous).max(0.0));
            previous = cumulative.max(previous);
        }
        let bounds = points[..points.len() - 1]
            .iter()
            .map(|(le, _)| *le)
            .collect();
        Some(Self {
            bounds,
            buckets,
            sum,
        })
    }

    pub fn count(&self) -> f64 {
        self.buckets.iter().sum()
    }

    /// Multiplies every bound (e.g. 0.001 for milliseconds to seconds).
    pub fn scaled(mut self, factor: f64) -> Self {
        for bound in &mut self.bounds {
            *bound *= factor;
        }
        self.sum *= factor;
        self
    }

    /// What was observed since `earlier` (the same series scraped before).
    /// A series that went down (the probe restarted) counts from zero.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        if earlier.bounds != self.bounds
            || self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .any(|(now, before)| now < before)
        {
            return self.clone();
        }
        Histogram {
            bounds: self.bounds.clone(),
            buckets: self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(now, before)| now - before)
                .collect(),
            sum: (self.sum - earlier.sum).max(0.0),
        }
    }

    /// Adds `other`. Different bounds (an HTTP and an RPC series) merge
    /// onto the union of both bound sets: each bucket keeps its upper bound.
    pub fn add(&mut self, other: &Histogram) {
        if self.bounds == other.bounds {
            for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
                *a += b;
            }
            self.sum += other.sum;
            return;
        }
        let mut union: Vec<f64> = self.bounds.iter().chain(&other.bounds).copied().collect();
        union.sort_by(f64::total_cmp);
        union.dedup();
        let mut merged = Histogram::empty(union);
        merged.sum = self.sum + other.sum;
        for h in [&*self, other] {
            for (i, count) in h.buckets.iter().enumerate() {
                let index = match h.bounds.get(i) {
                    Some(bound) => merged
                        .bounds
                        .iter()
                        .position(|b| b == bound)
                        .unwrap_or(merged.bounds.len()),
                    None => merged.bounds.len(),
                };
                merged.buckets[index] += count;
            }
        }
        *self = merged;
    }

    /// The `q`-quantile (0..=1), PromQL's way; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut cumulative = 0.0;
        for (i, count) in self.buckets.iter().enumerate() {
            let before = cumulative;
            cumulative += count;
            if cumulative >= rank && *count > 0.0 {
                let Some(&upper) = self.bounds.get(i) else {
                    // The +Inf bucket: the highest finite bound is all we know.
                    return self.bounds.last().copied();
                };
                let lower = if i == 0 {
                    upper.min(0.0)
                } else {
                    self.bounds[i - 1]
                };
                return Some(lower + (upper - lower) * (rank - before) / count);
            }
        }
        self.bounds.last().copied()
    }
}

/// Every series of histogram `family` (`<family>_bucket`, `_sum`) in
/// `samples`, by labels (without `le`), bounds scaled by `scale`.
pub fn histograms(samples: &[Sample], family: &str, scale: f64) -> BTreeMap<Labels, Histogram> {
    let bucket_name = format!("{family}_bucket");
    let sum_name = format!("{family}_sum");
    let mut points: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
    let mut sums: BTreeMap<Labels, f64> = BTreeMap::new();
    for sample in samples {
        if sample.name == bucket_name {
            let mut labels = sample.labels.clone();
            let Some(le) = labels.remove("le").and_then(|le| parse_le(&le)) else {
                continue;
            };
            points.entry(labels).or_default().push((le, sample.value));
        } else if sample.name == sum_name {
            sums.insert(sample.labels.clone(), sample.value);
        }
    }
    points
        .into_iter()
        .filter_map(|(labels, points)| {
            let sum = sums.get(&labels).copied().unwrap_or(0.0);
            Histogram::from_cumulative(points, sum).map(|h| (labels, h.scaled(scale)))
        })
        .collect()
}

fn parse_le(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        other => other.parse().ok(),
    }
}

/// Every sample named `name`, by labels.
pub fn values(samples: &[Sample], name: &str) -> BTreeMap<Labels, f64> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| (s.labels.clone(), s.value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(bounds: &[f64], buckets: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            buckets: buckets.to_vec(),
            sum: 0.0,
        }
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_holding_the_rank_like_promql() {
        // 10 requests in (0.25, 0.5], none elsewhere.
        let slow = h(&[0.1, 0.25, 0.5, 1.0], &[0.0, 0.0, 10.0, 0.0, 0.0]);
        assert_eq!(slow.quantile(0.5), Some(0.375));
        let p99 = slow.quantile(0.99).expect("some");
        assert!((p99 - 0.4975).abs() < 1e-12, "{p99}");
        // The first bucket interpolates from zero.
        let fast = h(&[0.005, 0.01], &[4.0, 0.0, 0.0]);
        assert_eq!(fast.quantile(0.5), Some(0.0025));
        // Past the last finite bound only that bound is known.
        let tail = h(&[0.005, 0.01], &[1.0, 0.0, 9.0]);
        assert_eq!(tail.quantile(0.9), Some(0.01));
        assert_eq!(h(&[1.0], &[0.0, 0.0]).quantile(0.5), None);
    }

    #[test]
    fn a_window_is_the_difference_of_two_scrapes_and_a_restart_counts_from_zero() {
        let before = h(&[0.1], &[3.0, 1.0]);
        let after = h(&[0.1], &[5.0, 4.0]);
        assert_eq!(after.since(&before).buckets, vec![2.0, 3.0]);
        let restarted = h(&[0.1], &[1.0, 0.0]);
        assert_eq!(restarted.since(&before).buckets, vec![1.0, 0.0]);
    }

    #[test]
    fn series_with_different_bounds_merge_onto_the_union_of_bounds() {
        let mut http = h(&[0.005, 0.5], &[1.0, 2.0, 0.0]);
        let rpc = h(&[0.0, 0.005, 0.01], &[0.0, 3.0, 1.0, 1.0]);
        http.add(&rpc);
        assert_eq!(http.bounds, vec![0.0, 0.005, 0.01, 0.5]);
        assert_eq!(http.buckets, vec![0.0, 4.0, 1.0, 2.0, 1.0]);
        assert_eq!(http.count(), 8.0);
    }

    #[test]
    fn histograms_are_read_from_bucket_and_sum_samples_with_millisecond_scaling() {
        let text = "rpc_server_duration_milliseconds_bucket{m=\"a\",le=\"5\"} 2\n\
                    rpc_server_duration_milliseconds_bucket{m=\"a\",le=\"10\"} 3\n\
                    rpc_server_duration_milliseconds_bucket{m=\"a\",le=\"+Inf\"} 3\n\
                    rpc_server_duration_milliseconds_sum{m=\"a\"} 17\n\
                    rpc_server_duration_milliseconds_count{m=\"a\"} 3\n";
        let (samples, _) = crate::promtext::parse(text);
        let all = histograms(&samples, "rpc_server_duration_milliseconds", 0.001);
        let (labels, hist) = all.iter().next().expect("one series");
        assert_eq!(labels.get("m").map(String::as_str), Some("a"));
        assert_eq!(hist.bounds, vec![0.005, 0.01]);
        assert_eq!(hist.buckets, vec![2.0, 1.0, 0.0]);
        assert!((hist.sum - 0.017).abs() < 1e-12);
    }
}
