//! RED rows (rate, errors, duration) from the probes' server-side
//! histograms: `http.server.request.duration` (seconds) and
//! `rpc.server.duration` (milliseconds), grouped by namespace, workload,
//! pod or route. Pure: a [`Window`] in, rows out.
//!
//! A request failed when its series carries `error.type`: the probe sets it
//! by the semantic conventions' rule for server spans (5xx, gRPC server
//! errors, transport failures), so the success rate here is the share of
//! spans that are not errors.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::histogram::{Histogram, Labels};
use crate::source::{Wants, Window};

/// The histograms RED reads, with their scale to seconds.
pub const FAMILIES: [(&str, f64); 2] = [
    ("http_server_request_duration_seconds", 1.0),
    ("rpc_server_duration_milliseconds", 0.001),
];

pub fn wants() -> Wants<'static> {
    Wants {
        histograms: &FAMILIES,
        ..Wants::default()
    }
}

/// How rows are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    #[value(alias = "ns", alias = "namespace")]
    Namespaces,
    #[value(alias = "workload", alias = "deploy", alias = "deployments")]
    Workloads,
    #[value(alias = "pod", alias = "po")]
    Pods,
    #[value(alias = "route")]
    Routes,
}

/// Which series count.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Only this namespace (`-n`); `None` with `-A`.
    pub namespace: Option<String>,
    /// Only these pods (`-l` resolved), `namespace/name`.
    pub pods: Option<BTreeSet<(String, String)>>,
    /// Only this workload (`deploy/web` or `web`).
    pub workload: Option<String>,
    /// `namespace/pod` → `kind/name`, from the API.
    pub workloads: BTreeMap<(String, String), String>,
}

/// One row.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedRow {
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(flatten)]
    pub red: Red,
    /// Since the probes started (probes source only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_requests: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_failures: Option<f64>,
}

/// Rate, errors and duration of some requests over a window: one row of
/// `stat`, `top` or `edges`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Red {
    /// Requests in the window.
    pub requests: f64,
    /// Of which failed.
    pub failures: f64,
    /// Requests per second over the window.
    pub rps: f64,
    /// `1 - failures/requests`; `None` without requests.
    pub success: Option<f64>,
    /// Seconds.
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

impl Red {
    /// `requests` of which `failures` failed in `seconds`, with their
    /// durations in `latency`.
    pub fn new(requests: f64, failures: f64, latency: &Histogram, seconds: f64) -> Self {
        Self {
            requests,
            failures,
            rps: if seconds > 0.0 {
                requests / seconds
            } else {
                0.0
            },
            success: (requests > 0.0).then(|| 1.0 - failures / requests),
            p50: latency.quantile(0.5),
            p90: latency.quantile(0.9),
            p99: latency.quantile(0.99),
        }
    }
}

/// A series' identity, read from its labels.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Identity {
    namespace: String,
    pod: String,
    workload: String,
    method: Option<String>,
    route: String,
    failed: bool,
}

fn identity(labels: &Labels, scope: &Scope) -> Identity {
    let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
    let namespace = labels
        .get("k8s_namespace_name")
        .or_else(|| labels.get("service_namespace"))
        .cloned()
        .unwrap_or_default();
    let pod = get("k8s_pod_name");
    let workload = scope
        .workloads
        .get(&(namespace.clone(), pod.clone()))
        .cloned()
        .unwrap_or_else(|| format!("svc/{}", get("service_name")));
    let route = match (labels.get("http_route"), labels.get("rpc_service")) {
        (Some(route), _) => route.clone(),
        (None, Some(service)) => format!("{service}/{}", get("rpc_method")),
        (None, None) => "-".to_owned(),
    };
    Identity {
        namespace,
        pod,
        workload,
        method: labels.get("http_request_method").cloned(),
        route,
        failed: labels.contains_key("error_type"),
    }
}

fn in_scope(id: &Identity, scope: &Scope) -> bool {
    scope
        .namespace
        .as_ref()
        .is_none_or(|ns| &id.namespace == ns)
        && scope
            .pods
            .as_ref()
            .is_none_or(|pods| pods.contains(&(id.namespace.clone(), id.pod.clone())))
        && scope
            .workload
            .as_ref()
            .is_none_or(|w| crate::workload::matches(w, &id.workload))
}

#[derive(Default)]
struct Acc {
    window: Option<Histogram>,
    failures: f64,
    total: Option<Histogram>,
    total_failures: f64,
    has_total: bool,
}

fn add(into: &mut Option<Histogram>, h: &Histogram) {
    match into {
        Some(acc) => acc.add(h),
        None => *into = Some(h.clone()),
    }
}

/// Rows of `window` grouped `by`, sorted by namespace, workload, pod, route.
pub fn rows(window: &Window, by: GroupBy, scope: &Scope) -> Vec<RedRow> {
    type Key = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let mut groups: BTreeMap<Key, Acc> = BTreeMap::new();
    for (family, _) in FAMILIES {
        for series in window.histograms.get(family).into_iter().flatten() {
            let id = identity(&series.labels, scope);
            if !in_scope(&id, scope) {
                continue;
            }
            let key: Key = match by {
                GroupBy::Namespaces => (id.namespace.clone(), None, None, None, None),
                GroupBy::Workloads => (
                    id.namespace.clone(),
                    Some(id.workload.clone()),
                    None,
                    None,
                    None,
                ),
                GroupBy::Pods => (
                    id.namespace.clone(),
                    Some(id.workload.clone()),
                    Some(id.pod.clone()),
                    None,
                    None,
                ),
                GroupBy::Routes => (
                    id.namespace.clone(),
                    Some(id.workload.clone()),
                    None,
                    id.method.clone(),
                    Some(id.route.clone()),
                ),
            };
            let acc = groups.entry(key).or_default();
            add(&mut acc.window, &series.window);
            if id.failed {
                acc.failures += series.window.count();
            }
            if let Some(total) = &series.total {
                acc.has_total = true;
                add(&mut acc.total, total);
                if id.failed {
                    acc.total_failures += total.count();
                }
            }
        }
    }
    groups
        .into_iter()
        .map(|((namespace, workload, pod, method, route), acc)| {
            let window_h = acc.window.unwrap_or_else(|| Histogram::empty(vec![]));
            let requests = window_h.count();
            RedRow {
                namespace,
                workload,
                pod,
                method,
                route,
                red: Red::new(requests, acc.failures, &window_h, window.seconds),
                total_requests: acc
                    .has_total
                    .then(|| acc.total.as_ref().map_or(0.0, Histogram::count)),
                total_failures: acc.has_total.then_some(acc.total_failures),
            }
        })
        .collect()
}

/// How `top` orders its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// Most requests first.
    Rps,
    /// Most failures first.
    Errors,
    /// Slowest p99 first.
    P99,
}

/// Sorts for `top`: the key descending, then by name for stable frames.
pub fn sort(rows: &mut [RedRow], by: SortBy) {
    let key = |r: &RedRow| match by {
        SortBy::Rps => r.red.requests,
        SortBy::Errors => r.red.failures,
        SortBy::P99 => r.red.p99.unwrap_or(0.0),
    };
    rows.sort_by(|a, b| {
        key(b)
            .total_cmp(&key(a))
            .then_with(|| a.namespace.cmp(&b.namespace))
            .then_with(|| a.workload.cmp(&b.workload))
            .then_with(|| a.route.cmp(&b.route))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Series;

    fn series(pod: &str, route: &str, failed: bool, buckets: &[f64]) -> Series<Histogram> {
        let mut labels: Labels = [
            ("k8s_namespace_name", "shop"),
            ("k8s_pod_name", pod),
            ("service_name", "web"),
            ("http_route", route),
            ("http_request_method", "GET"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        if failed {
            labels.insert("error_type".into(), "500".into());
        }
        let h = Histogram {
            bounds: vec![0.1, 0.5],
            buckets: buckets.to_vec(),
            sum: 0.0,
        };
        Series {
            labels,
            window: h.clone(),
            total: Some(h),
        }
    }

    fn window() -> Window {
        let mut w = Window {
            seconds: 10.0,
            ..Window::default()
        };
        w.histograms.insert(
            FAMILIES[0].0.to_owned(),
            vec![
                series("web-1", "/items/{id}", false, &[0.0, 18.0, 0.0]),
                series("web-1", "/items/{id}", true, &[0.0, 2.0, 0.0]),
                series("web-2", "/health", false, &[10.0, 0.0, 0.0]),
            ],
        );
        w
    }

    fn scope() -> Scope {
        Scope {
            namespace: Some("shop".into()),
            workloads: [
                (("shop".into(), "web-1".into()), "deploy/web".into()),
                (("shop".into(), "web-2".into()), "deploy/web".into()),
            ]
            .into(),
            ..Scope::default()
        }
    }

    #[test]
    fn workload_rows_add_every_pod_and_count_error_series_as_failures() {
        let rows = rows(&window(), GroupBy::Workloads, &scope());
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.workload.as_deref(), Some("deploy/web"));
        assert_eq!(row.red.requests, 30.0);
        assert_eq!(row.red.failures, 2.0);
        assert_eq!(row.red.rps, 3.0);
        assert_eq!(row.red.success, Some(28.0 / 30.0));
        assert_eq!(row.total_requests, Some(30.0));
        // 10 in (0, 0.1], 20 in (0.1, 0.5]: the median is the 15th request.
        assert_eq!(row.red.p50, Some(0.1 + 0.4 * 5.0 / 20.0));
    }

    #[test]
    fn route_rows_split_by_method_and_route_and_scope_filters_pods() {
        let mut scope = scope();
        let all = rows(&window(), GroupBy::Routes, &scope);
        assert_eq!(
            all.iter()
                .map(|r| r.route.clone().unwrap_or_default())
                .collect::<Vec<_>>(),
            vec!["/health", "/items/{id}"]
        );
        scope.pods = Some([("shop".to_owned(), "web-2".to_owned())].into());
        let only = rows(&window(), GroupBy::Pods, &scope);
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].pod.as_deref(), Some("web-2"));
        scope.pods = None;
        scope.namespace = Some("other".into());
        assert!(rows(&window(), GroupBy::Namespaces, &scope).is_empty());
    }

    #[test]
    fn top_sorts_by_the_chosen_key_descending() {
        let mut rows = rows(&window(), GroupBy::Routes, &scope());
        sort(&mut rows, SortBy::Rps);
        assert_eq!(rows[0].route.as_deref(), Some("/items/{id}"));
        sort(&mut rows, SortBy::Errors);
        assert_eq!(rows[0].red.failures, 2.0);
    }
}
