//! Reading the service graph back: the `traces_service_graph_request_*`
//! metrics of every probe, from what a collector received over OTLP (the
//! latest cumulative point of each series) or from the probes' own
//! Prometheus expositions, summed per edge — what a Prometheus
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

/// A Prometheus label set: `{a="x",b="y\"z"}` (without the braces).
fn prometheus_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text.trim_start_matches(',');
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.trim().to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// The service graph in Prometheus text expositions (the probes' own
/// `/metrics`), summed over them: what Prometheus scraping every probe and
/// summing by edge would give.
pub fn service_graph_from_prometheus<'a>(
    expositions: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<EdgeKey, EdgeStats> {
    // Cumulative buckets by (edge, side) and upper bound, before they
    // become per-bucket counts.
    let mut cumulative: BTreeMap<(EdgeKey, bool), BTreeMap<u64, (f64, u64)>> = BTreeMap::new();
    let mut graph: BTreeMap<EdgeKey, EdgeStats> = BTreeMap::new();
    for text in expositions {
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("traces_service_graph_request") else {
                continue;
            };
            let Some((series, value)) = rest.rsplit_once(' ') else {
                continue;
            };
            let Some((suffix, labels)) = series.split_once('{') else {
                continue;
            };
            let (Some(labels), Ok(value)) = (
                prometheus_labels(labels.trim_end_matches('}')),
                value.trim().parse::<f64>(),
            ) else {
                continue;
            };
            let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
            let key = EdgeKey {
                client: get("client"),
                server: get("server"),
                connection_type: get("connection_type"),
            };
            let stats = graph.entry(key.clone()).or_default();
            match suffix {
                "_total" => stats.total += value as u64,
                "_failed_total" => stats.failed += value as u64,
                "_server_seconds_bucket" | "_client_seconds_bucket" => {
                    let server = suffix.starts_with("_server");
                    let le = match labels.get("le").map(String::as_str) {
                        Some("+Inf") => f64::INFINITY,
                        Some(le) => le.parse().unwrap_or(f64::INFINITY),
                        None => continue,
                    };
                    let slot = cumulative
                        .entry((key, server))
                        .or_default()
                        .entry(le.to_bits())
                        .or_insert((le, 0));
                    slot.1 += value as u64;
                }
                "_server_seconds_sum" => stats.server.sum += value,
                "_client_seconds_sum" => stats.client.sum += value,
                "_server_seconds_count" => stats.server.count += value as u64,
                "_client_seconds_count" => stats.client.count += value as u64,
                _ => {}
            }
        }
    }
    for ((key, server), buckets) in cumulative {
        let mut bounds: Vec<(f64, u64)> = buckets.into_values().collect();
        bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let stats = graph.entry(key).or_default();
        let h = if server {
            &mut stats.server
        } else {
            &mut stats.client
        };
        h.bounds = bounds
            .iter()
            .map(|(le, _)| *le)
            .filter(|le| le.is_finite())
            .collect();
        let mut below = 0;
        h.buckets = bounds
            .iter()
            .map(|(_, n)| {
                let here = n.saturating_sub(below);
                below = *n;
                here
            })
            .collect();
    }
    graph
}

/// The edges as the seed's topology view shows them: one line per edge
/// with its requests, error share and p50/p90/p99 — from the server's
/// histogram where the server is traced, the client's for a virtual node
/// (quantiles interpolated within histogram buckets, as Prometheus'
/// `histogram_quantile` does).
pub fn edge_table(graph: &BTreeMap<EdgeKey, EdgeStats>) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<34} {:>8} {:>7} {:>8} {:>8} {:>8}",
        "edge (client -> server)", "requests", "errors", "p50 ms", "p90 ms", "p99 ms"
    )];
    for (key, stats) in graph.iter().filter(|(_, s)| s.total > 0) {
        let h = if stats.server.count > 0 {
            &stats.server
        } else {
            &stats.client
        };
        let ms = |q: f64| {
            h.quantile(q)
                .map_or_else(|| "-".to_owned(), |s| format!("{:.1}", s * 1e3))
        };
        lines.push(format!(
            "{:<34} {:>8} {:>6.1}% {:>8} {:>8} {:>8}",
            key.to_string(),
            stats.total,
            100.0 * stats.failed as f64 / stats.total as f64,
            ms(0.5),
            ms(0.9),
            ms(0.99)
        ));
    }
    lines
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

    #[test]
    fn prometheus_expositions_of_two_probes_sum_into_one_graph() {
        let go = r#"# TYPE traces_service_graph_request counter
traces_service_graph_request_total{client="front",server="middle",client_service_namespace="shop"} 10
traces_service_graph_request_failed_total{client="front",server="middle",client_service_namespace="shop"} 2
traces_service_graph_request_server_seconds_bucket{client="front",server="middle",le="0.01"} 4
traces_service_graph_request_server_seconds_bucket{client="front",server="middle",le="0.025"} 9
traces_service_graph_request_server_seconds_bucket{client="front",server="middle",le="+Inf"} 10
traces_service_graph_request_server_seconds_sum{client="front",server="middle"} 0.15
traces_service_graph_request_server_seconds_count{client="front",server="middle"} 10
"#;
        let python = r#"traces_service_graph_request_total{client="user",server="front",connection_type="virtual_node"} 10
traces_service_graph_request_client_seconds_bucket{client="front",server="middle",le="0.01"} 1
traces_service_graph_request_client_seconds_bucket{client="front",server="middle",le="0.025"} 9
traces_service_graph_request_client_seconds_bucket{client="front",server="middle",le="+Inf"} 10
traces_service_graph_request_client_seconds_count{client="front",server="middle"} 10
http_server_request_duration_seconds_count{service_name="front"} 10
"#;
        let graph = service_graph_from_prometheus([go, python]);
        assert_eq!(graph.len(), 2, "{graph:?}");
        let edge = &graph[&EdgeKey::new("front", "middle", "")];
        assert_eq!((edge.total, edge.failed), (10, 2));
        assert_eq!(edge.server.bounds, [0.01, 0.025]);
        assert_eq!(edge.server.buckets, [4, 5, 1], "per-bucket counts");
        assert_eq!(edge.client.buckets, [1, 8, 1]);
        assert_eq!(edge.server.count, 10);
        assert_eq!(
            graph[&EdgeKey::new("user", "front", "virtual_node")].total,
            10
        );
        let table = edge_table(&graph);
        assert_eq!(table.len(), 3, "{table:?}");
        assert!(
            table[1].starts_with("front -> middle") && table[1].contains("20.0%"),
            "{table:?}"
        );
        assert!(
            table[2].contains("user -> front (virtual_node)") && table[2].ends_with("-"),
            "no histogram, no quantiles: {table:?}"
        );
    }

    #[test]
    fn label_values_keep_escaped_quotes_and_commas() {
        let labels = prometheus_labels(r#"a="x,y",b="say \"hi\"",c="""#).unwrap();
        assert_eq!(labels["a"], "x,y");
        assert_eq!(labels["b"], "say \"hi\"");
        assert_eq!(labels["c"], "");
    }
}
