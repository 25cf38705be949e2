//! Reading the service graph back from what a collector received: the
//! `traces_service_graph_request_*` metrics of every probe, as the latest
//! cumulative point of each series, summed per edge — what a Prometheus
//! `sum by (client, server)` over the same data would give. Shared by the
//! end-to-end tests and the demo's summary.

use std::collections::{BTreeMap, HashMap};

use crate::collector::{AttrValue, MetricPoint};

/// An edge as its labels name it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EdgeKey {
    pub client: String,
    pub server: String,
    /// `virtual_node` when one end is not traced, else empty.
    pub connection_type: String,
}

impl EdgeKey {
    pub fn new(client: &str, server: &str, connection_type: &str) -> Self {
        Self {
            client: client.to_owned(),
            server: server.to_owned(),
            connection_type: connection_type.to_owned(),
        }
    }
}

impl std::fmt::Display for EdgeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {}", self.client, self.server)?;
        if !self.connection_type.is_empty() {
            write!(f, " ({})", self.connection_type)?;
        }
        Ok(())
    }
}

/// An explicit-bucket histogram, summed over series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub count: u64,
    pub sum: f64,
    pub bounds: Vec<f64>,
    pub buckets: Vec<u64>,
}

impl Histogram {
    fn add(&mut self, point: &MetricPoint) {
        if self.bounds.is_empty() {
            self.bounds = point.explicit_bounds.clone();
            self.buckets = vec![0; point.bucket_counts.len()];
        }
        self.count += point.count.unwrap_or(0);
        self.sum += point.sum.unwrap_or(0.0);
        for (a, b) in self.buckets.iter_mut().zip(&point.bucket_counts) {
            *a += b;
        }
    }

    /// The bucket holding the `q`-quantile: `(lower, upper)` bounds (the
    /// last bucket's upper bound is infinite). The true quantile of the
    /// observed values lies within.
    pub fn quantile_bucket(&self, q: f64) -> Option<(f64, f64)> {
        if self.count == 0 {
            return None;
        }
        let rank = q * self.count as f64;
        let mut seen = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen as f64 >= rank && *n > 0 {
                let lower = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                let upper = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
                return Some((lower, upper));
            }
        }
        None
    }

    /// Prometheus' `histogram_quantile`: linear interpolation within the
    /// bucket holding the quantile (the highest finite bound if it is the
    /// last one).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q * self.count as f64;
        let mut below = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            if (below + n) as f64 >= rank && *n > 0 {
                let lower = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                let Some(upper) = self.bounds.get(i).copied() else {
                    return self.bounds.last().copied();
                };
                return Some(lower + (upper - lower) * (rank - below as f64) / *n as f64);
            }
            below += n;
        }
        None
    }
}

/// What the collector knows about one edge.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EdgeStats {
    pub total: u64,
    pub failed: u64,
    /// Durations as the server saw them.
    pub server: Histogram,
    /// Durations as the client saw them.
    pub client: Histogram,
}

fn text(value: Option<&AttrValue>) -> String {
    value.and_then(AttrValue::as_str).unwrap_or("").to_owned()
}

fn series_key(p: &MetricPoint) -> String {
    format!("{}|{:?}|{:?}", p.name, p.resource, p.attributes)
}

/// The latest point of every series among `points` (cumulative series:
/// the latest carries everything).
pub fn latest(points: &[MetricPoint]) -> Vec<&MetricPoint> {
    let mut by_series: HashMap<String, &MetricPoint> = HashMap::new();
    for p in points {
        let key = series_key(p);
        match by_series.get(&key) {
            Some(known) if known.time_ns >= p.time_ns => {}
            _ => {
                by_series.insert(key, p);
            }
        }
    }
    by_series.into_values().collect()
}

/// The service graph in `points` (every metric a collector received).
pub fn service_graph(points: &[MetricPoint]) -> BTreeMap<EdgeKey, EdgeStats> {
    let mut graph: BTreeMap<EdgeKey, EdgeStats> = BTreeMap::new();
    for p in latest(points) {
        if !p.name.starts_with("traces_service_graph_request") {
            continue;
        }
        let key = EdgeKey {
            client: text(p.attributes.get("client")),
            server: text(p.attributes.get("server")),
            connection_type: text(p.attributes.get("connection_type")),
        };
        let stats = graph.entry(key).or_default();
        let value = p.value.unwrap_or(0.0) as u64;
        match p.name.as_str() {
            "traces_service_graph_request_total" => stats.total += value,
            "traces_service_graph_request_failed_total" => stats.failed += value,
            "traces_service_graph_request_server" => stats.server.add(p),
            "traces_service_graph_request_client" => stats.client.add(p),
            _ => {}
        }
    }
    graph
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(buckets: &[u64]) -> Histogram {
        Histogram {
            count: buckets.iter().sum(),
            sum: 0.0,
            bounds: vec![0.01, 0.025, 0.05, 0.1],
            buckets: buckets.to_vec(),
        }
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket_like_prometheus() {
        let h = histogram(&[0, 10, 10, 0, 0]);
        assert_eq!(h.quantile_bucket(0.5), Some((0.01, 0.025)));
        assert_eq!(h.quantile_bucket(0.9), Some((0.025, 0.05)));
        assert!((h.quantile(0.5).unwrap() - 0.025).abs() < 1e-12);
        assert!((h.quantile(0.75).unwrap() - 0.0375).abs() < 1e-12);
        let overflow = histogram(&[0, 0, 0, 0, 4]);
        assert_eq!(
            overflow.quantile(0.99),
            Some(0.1),
            "the highest finite bound"
        );
        assert_eq!(overflow.quantile_bucket(0.99), Some((0.1, f64::INFINITY)));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }
}
