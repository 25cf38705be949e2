//! Where the numbers come from, and one shape for them: a [`Window`] of
//! histograms, counters and gauges over some seconds.
//!
//! - **The probes** (default): every probe's `/metrics` is read twice
//!   through the API server's pod proxy, `--window` apart; the window is the
//!   difference. Exact (the probes count every request), needs no backend,
//!   costs one wait. The later scrape's cumulative totals come along.
//! - **Prometheus** (`--prometheus URL`): `increase()` over the last
//!   `--window` of the same series (scraped from the probes by the chart's
//!   PodMonitor), no wait; only as fresh as the last scrape.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::cluster::{Cluster, ProbePod};
use crate::error::CliError;
use crate::histogram::{self, Histogram, Labels};
use crate::output::Progress;
use crate::promtext::{self, Sample};

/// The label every probe sample gets (the probe pod's name), so that equal
/// series of two probes never merge in the parser.
pub const PROBE_LABEL: &str = "__probe";

/// What a command needs: histogram families (with a unit scale to
/// seconds), counters and gauges.
#[derive(Clone, Copy, Debug, Default)]
pub struct Wants<'a> {
    pub histograms: &'a [(&'a str, f64)],
    pub counters: &'a [&'a str],
    pub gauges: &'a [&'a str],
}

/// One series over the window.
#[derive(Clone, Debug, PartialEq)]
pub struct Series<T> {
    pub labels: Labels,
    /// What happened in the window.
    pub window: T,
    /// Since the series started (probes only).
    pub total: Option<T>,
}

/// Everything a command reads, over `seconds`.
#[derive(Clone, Debug, Default)]
pub struct Window {
    pub seconds: f64,
    /// `probes` or `prometheus`.
    pub source: &'static str,
    pub histograms: BTreeMap<String, Vec<Series<Histogram>>>,
    pub counters: BTreeMap<String, Vec<Series<f64>>>,
    /// Latest values.
    pub gauges: BTreeMap<String, Vec<(Labels, f64)>>,
    /// Probes that did not answer (name: error), for a warning.
    pub failures: Vec<String>,
}

/// One scrape of every probe.
#[derive(Clone, Debug)]
pub struct Scrape {
    pub at: Instant,
    pub samples: Vec<Sample>,
    /// Probes that did not answer (`namespace/name`, error).
    pub failures: Vec<(String, String)>,
    pub answered: usize,
}

impl Scrape {
    /// The failures as `namespace/name: error` lines.
    pub fn failure_lines(&self) -> Vec<String> {
        self.failures
            .iter()
            .map(|(probe, error)| format!("{probe}: {error}"))
            .collect()
    }
}

/// Reads every probe's `/metrics` at once.
pub async fn scrape(cluster: &Cluster, probes: &[ProbePod]) -> Scrape {
    let at = Instant::now();
    let results = futures::future::join_all(
        probes
            .iter()
            .map(|probe| async move { (probe, cluster.probe_get(probe, "/metrics").await) }),
    )
    .await;
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    let mut answered = 0;
    for (probe, result) in results {
        match result {
            Ok(text) => {
                answered += 1;
                let (parsed, _) = promtext::parse(&text);
                samples.extend(parsed.into_iter().map(|mut s| {
                    s.labels.insert(PROBE_LABEL.to_owned(), probe.name.clone());
                    s
                }));
            }
            Err(error) => failures.push((
                format!("{}/{}", probe.namespace, probe.name),
                error.to_string(),
            )),
        }
    }
    Scrape {
        at,
        samples,
        failures,
        answered,
    }
}

/// The window between two scrapes.
pub fn between(before: &Scrape, after: &Scrape, wants: Wants<'_>) -> Window {
    let seconds = after.at.duration_since(before.at).as_secs_f64();
    let mut window = Window {
        seconds,
        source: "probes",
        failures: after.failure_lines(),
        ..Window::default()
    };
    for (family, scale) in wants.histograms {
        let earlier = histogram::histograms(&before.samples, family, *scale);
        let later = histogram::histograms(&after.samples, family, *scale);
        let series = later
            .into_iter()
            .map(|(labels, total)| {
                let delta = match earlier.get(&labels) {
                    Some(previous) => total.since(previous),
                    // A series born inside the window: all of it is new.
                    None => total.clone(),
                };
                Series {
                    labels,
                    window: delta,
                    total: Some(total),
                }
            })
            .collect();
        window.histograms.insert((*family).to_owned(), series);
    }
    for name in wants.counters {
        let earlier = histogram::values(&before.samples, name);
        let series = histogram::values(&after.samples, name)
            .into_iter()
            .map(|(labels, total)| {
                let delta = match earlier.get(&labels) {
                    Some(previous) if *previous <= total => total - previous,
                    _ => total,
                };
                Series {
                    labels,
                    window: delta,
                    total: Some(total),
                }
            })
            .collect();
        window.counters.insert((*name).to_owned(), series);
    }
    for name in wants.gauges {
        window.gauges.insert(
            (*name).to_owned(),
            histogram::values(&after.samples, name)
                .into_iter()
                .collect(),
        );
    }
    window
}

/// Where windows come from, kept across the frames of `--watch` and `top`:
/// with the probes, each window starts where the previous one ended, so
/// consecutive windows add up to exactly what happened.
#[derive(Debug)]
pub enum MetricSource {
    Probes {
        cluster: Cluster,
        probes: Vec<ProbePod>,
        last: Option<Scrape>,
    },
    Prometheus {
        prometheus: Prometheus,
        started: bool,
    },
}

impl MetricSource {
    pub fn probes(cluster: Cluster, probes: Vec<ProbePod>) -> Self {
        MetricSource::Probes {
            cluster,
            probes,
            last: None,
        }
    }

    pub fn prometheus(prometheus: Prometheus) -> Self {
        MetricSource::Prometheus {
            prometheus,
            started: false,
        }
    }

    /// The next window of `length`: waits until it is over (probes), or
    /// for `length` between frames (Prometheus).
    pub async fn next(
        &mut self,
        length: Duration,
        wants: Wants<'_>,
        progress: &mut Progress,
    ) -> Result<Window, CliError> {
        match self {
            MetricSource::Probes {
                cluster,
                probes,
                last,
            } => {
                let before = match last.take() {
                    Some(previous) => previous,
                    None => {
                        progress.set(&format!("reading {} probes…", probes.len()));
                        let first = scrape(cluster, probes).await;
                        if first.answered == 0 {
                            return Err(CliError::ProbesUnreachable(
                                first.failure_lines().join("; "),
                            ));
                        }
                        first
                    }
                };
                countdown(
                    before.at + length,
                    length,
                    &format!("sampling {} probes", before.answered),
                    progress,
                )
                .await;
                let after = scrape(cluster, probes).await;
                progress.clear();
                if after.answered == 0 {
                    return Err(CliError::ProbesUnreachable(
                        after.failure_lines().join("; "),
                    ));
                }
                let window = between(&before, &after, wants);
                *last = Some(after);
                Ok(window)
            }
            MetricSource::Prometheus {
                prometheus,
                started,
            } => {
                if *started {
                    countdown(Instant::now() + length, length, "next query", progress).await;
                }
                *started = true;
                progress.set(&format!("querying {}…", prometheus.url));
                let window = prometheus.window(length, wants).await;
                progress.clear();
                window
            }
        }
    }
}

/// Waits until `deadline`, showing the seconds left.
async fn countdown(deadline: Instant, length: Duration, what: &str, progress: &mut Progress) {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        progress.set(&format!(
            "{what}: {}s left of a {}s window…",
            left.as_secs_f64().ceil(),
            length.as_secs_f64()
        ));
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
    }
}

/// Labels Prometheus adds for the scrape target (the probe pod), not part
/// of what a series describes.
const TARGET_LABELS: &str =
    "instance, pod, namespace, container, endpoint, service, node, prometheus, prometheus_replica";

/// A Prometheus server's HTTP API.
#[derive(Clone, Debug)]
pub struct Prometheus {
    pub url: String,
    client: reqwest::Client,
}

#[derive(Debug, Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<VectorSample>,
}

#[derive(Debug, Deserialize)]
struct VectorSample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

impl Prometheus {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, CliError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| CliError::Prometheus {
                url: url.to_owned(),
                detail: crate::error::error_chain(&e),
            })?;
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            client,
        })
    }

    /// An instant vector query.
    pub async fn query(&self, query: &str) -> Result<Vec<Sample>, CliError> {
        let fail = |detail: String| CliError::Prometheus {
            url: self.url.clone(),
            detail,
        };
        let response = self
            .client
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
            .map_err(|e| fail(crate::error::error_chain(&e)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| fail(crate::error::error_chain(&e)))?;
        let parsed: ApiResponse = serde_json::from_str(&text).map_err(|e| {
            fail(format!(
                "HTTP {status}, not a Prometheus API answer ({e}): {}",
                text.chars().take(200).collect::<String>()
            ))
        })?;
        if parsed.status != "success" {
            return Err(fail(format!(
                "query {query:?} failed: {} ({})",
                parsed.error.unwrap_or_default(),
                parsed.error_type.unwrap_or_default()
            )));
        }
        let data = parsed
            .data
            .ok_or_else(|| fail(format!("query {query:?}: no data")))?;
        if data.result_type != "vector" {
            return Err(fail(format!(
                "query {query:?} returned a {}, expected a vector",
                data.result_type
            )));
        }
        data.result
            .into_iter()
            .map(|s| {
                let value = match s.value.1.as_str() {
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    other => other
                        .parse()
                        .map_err(|_| fail(format!("value {other:?} is not a number")))?,
                };
                let mut labels = s.metric;
                let name = labels.remove("__name__").unwrap_or_default();
                Ok(Sample {
                    name,
                    labels,
                    value,
                })
            })
            .collect()
    }

    /// The last `seconds` of what `wants` names.
    pub async fn window(&self, seconds: Duration, wants: Wants<'_>) -> Result<Window, CliError> {
        let range = format!("{}s", seconds.as_secs().max(1));
        let mut window = Window {
            seconds: seconds.as_secs_f64(),
            source: "prometheus",
            ..Window::default()
        };
        for (family, scale) in wants.histograms {
            let buckets = self
                .query(&format!(
                    "sum without ({TARGET_LABELS}) (increase({family}_bucket[{range}]))"
                ))
                .await?;
            let sums = self
                .query(&format!(
                    "sum without ({TARGET_LABELS}) (increase({family}_sum[{range}]))"
                ))
                .await?;
            let samples: Vec<Sample> = buckets
                .into_iter()
                .map(|mut s| {
                    s.name = format!("{family}_bucket");
                    s
                })
                .chain(sums.into_iter().map(|mut s| {
                    s.name = format!("{family}_sum");
                    s
                }))
                .collect();
            let series = histogram::histograms(&samples, family, *scale)
                .into_iter()
                .map(|(labels, h)| Series {
                    labels,
                    window: h,
                    total: None,
                })
                .collect();
            window.histograms.insert((*family).to_owned(), series);
        }
        for name in wants.counters {
            let series = self
                .query(&format!(
                    "sum without ({TARGET_LABELS}) (increase({name}[{range}]))"
                ))
                .await?
                .into_iter()
                .map(|s| Series {
                    labels: s.labels,
                    window: s.value,
                    total: None,
                })
                .collect();
            window.counters.insert((*name).to_owned(), series);
        }
        for name in wants.gauges {
            let values = self
                .query(&format!("max without ({TARGET_LABELS}) ({name})"))
                .await?
                .into_iter()
                .map(|s| (s.labels, s.value))
                .collect();
            window.gauges.insert((*name).to_owned(), values);
        }
        Ok(window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape_of(text: &str, at: Instant) -> Scrape {
        let (samples, _) = promtext::parse(text);
        Scrape {
            at,
            samples,
            failures: vec![],
            answered: 1,
        }
    }

    #[test]
    fn the_window_is_the_difference_and_new_series_count_whole() {
        let t0 = Instant::now();
        let before = scrape_of(
            "h_bucket{r=\"a\",le=\"0.1\"} 2\nh_bucket{r=\"a\",le=\"+Inf\"} 3\nc_total{x=\"1\"} 10\n",
            t0,
        );
        let after = scrape_of(
            "h_bucket{r=\"a\",le=\"0.1\"} 5\nh_bucket{r=\"a\",le=\"+Inf\"} 9\n\
             h_bucket{r=\"b\",le=\"0.1\"} 1\nh_bucket{r=\"b\",le=\"+Inf\"} 1\n\
             c_total{x=\"1\"} 14\ng 7\n",
            t0 + Duration::from_secs(10),
        );
        let window = between(
            &before,
            &after,
            Wants {
                histograms: &[("h", 1.0)],
                counters: &["c_total"],
                gauges: &["g"],
            },
        );
        assert_eq!(window.seconds, 10.0);
        let h = &window.histograms["h"];
        assert_eq!(h[0].window.buckets, vec![3.0, 3.0]);
        assert_eq!(h[0].total.as_ref().map(Histogram::count), Some(9.0));
        assert_eq!(h[1].window.count(), 1.0, "born in the window");
        assert_eq!(window.counters["c_total"][0].window, 4.0);
        assert_eq!(window.gauges["g"][0].1, 7.0);
    }
}
