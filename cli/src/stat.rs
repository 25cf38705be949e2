//! `stat` and `top`: RED rows ([`crate::red`]) over a window, once, every
//! window (`stat --watch`), or as a sorted live view (`top`).

use std::collections::{BTreeMap, BTreeSet};

use ferrotel_api::instrumentation::Instrumentation;
use ferrotel_api::language::Language;
use ferrotel_api::optin::{self, Instrumentations, NamespaceView, PodView};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::ListParams;
use serde::Serialize;

use crate::cluster::{Cluster, ProbePod};
use crate::error::CliError;
use crate::output::{self, Cell, Color, Format, Style, Table};
use crate::red::{GroupBy, RedRow, Scope};
use crate::source::Window;

/// Which pods and probes a command looks at.
#[derive(Clone, Debug, Default)]
pub struct Target {
    pub scope: Scope,
    /// Probes on the nodes of the pods in scope (all probes with -A).
    pub probes: Vec<ProbePod>,
    /// The pods in scope (`-n`/`-A`, `-l`, workload).
    pub pods: Vec<Pod>,
    /// Whether the opt-in rules claim any of the pods, for any language;
    /// `None` when it could not be told (-A, or Instrumentations or the
    /// Namespace could not be read).
    pub any_opted_in: Option<bool>,
}

impl Target {
    /// Why nothing can show up, when no pod in scope is opted in.
    pub fn not_opted_in(&self) -> Option<String> {
        let namespace = self.scope.namespace.as_deref()?;
        match (self.any_opted_in, self.pods.len()) {
            (Some(false), 0) => None,
            (Some(false), n) => Some(format!(
                "none of the {n} pods in scope is opted in (namespace {namespace} carries no ferrotel.io/instrument annotation, and no pod or Instrumentation selector opts them in)"
            )),
            _ => None,
        }
    }
}

/// Whether any of `pods` (all in `namespace`) is claimed for any language
/// by the opt-in rules, the operator's and the probes' own function.
pub fn any_claimed(
    instrumentations: &[Instrumentation],
    namespace: &Namespace,
    pods: &[Pod],
) -> bool {
    let set = Instrumentations::new(instrumentations.iter().map(Instrumentation::candidate));
    let empty = BTreeMap::new();
    let name = namespace.metadata.name.clone().unwrap_or_default();
    let ns_view = NamespaceView {
        name: &name,
        labels: namespace.metadata.labels.as_ref().unwrap_or(&empty),
        annotations: namespace.metadata.annotations.as_ref().unwrap_or(&empty),
    };
    pods.iter().any(|pod| {
        let pod_view = PodView {
            labels: pod.metadata.labels.as_ref().unwrap_or(&empty),
            annotations: pod.metadata.annotations.as_ref().unwrap_or(&empty),
        };
        Language::ALL.iter().any(|l| {
            matches!(
                optin::resolve(&set, &ns_view, &pod_view, *l, None),
                Ok(optin::Decision::Claimed(_))
            )
        })
    })
}

/// Resolves `namespace` (`None`: every namespace), `selector` and
/// `workload` to pods, their workloads, and the probes on their nodes.
pub async fn target(
    cluster: &Cluster,
    namespace: Option<&str>,
    selector: Option<&str>,
    workload: Option<&str>,
) -> Result<Target, CliError> {
    let mut params = ListParams::default();
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    let mut pods: Vec<Pod> = cluster.list(namespace, &params).await?;
    if let Some(workload) = workload {
        pods.retain(|p| crate::workload::matches(workload, &crate::workload::workload_of(p)));
    }
    let workloads = crate::workload::index(&pods);
    let nodes: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    let mut probes = cluster.probe_pods().await?;
    if namespace.is_some() || selector.is_some() || workload.is_some() {
        probes.retain(|p| nodes.contains(&p.node));
    }
    let scope = Scope {
        namespace: namespace.map(str::to_owned),
        // With -l the pods listed are the scope; without, any pod of the
        // namespace counts, including ones that came and went.
        pods: selector.map(|_| {
            pods.iter()
                .filter_map(|p| Some((p.metadata.namespace.clone()?, p.metadata.name.clone()?)))
                .collect()
        }),
        workload: workload.map(str::to_owned),
        workloads,
    };
    let any_opted_in = match namespace {
        Some(ns) => {
            let namespace: Result<Namespace, _> = cluster.get_cluster(ns).await;
            let instrumentations: Result<Vec<Instrumentation>, _> =
                cluster.list(None, &ListParams::default()).await;
            match (namespace, instrumentations) {
                (Ok(namespace), Ok(instrumentations)) => {
                    Some(any_claimed(&instrumentations, &namespace, &pods))
                }
                _ => None,
            }
        }
        None => None,
    };
    Ok(Target {
        scope,
        probes,
        pods,
        any_opted_in,
    })
}

/// One frame of `stat` or `top`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatFrame {
    pub by: GroupBy,
    pub window_seconds: f64,
    /// `probes` or `prometheus`.
    pub source: String,
    pub rows: Vec<RedRow>,
    /// Probes that did not answer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

impl StatFrame {
    pub fn new(window: &Window, by: GroupBy, scope: &Scope) -> Self {
        Self {
            by,
            window_seconds: window.seconds,
            source: window.source.to_owned(),
            rows: crate::red::rows(window, by, scope),
            failures: window.failures.clone(),
        }
    }
}

/// The first columns, naming what a row is.
fn name_columns(by: GroupBy) -> &'static [&'static str] {
    match by {
        GroupBy::Namespaces => &["NAMESPACE"],
        GroupBy::Workloads => &["NAMESPACE", "WORKLOAD"],
        GroupBy::Pods => &["NAMESPACE", "POD", "WORKLOAD"],
        GroupBy::Routes => &["NAMESPACE", "WORKLOAD", "METHOD", "ROUTE"],
    }
}

fn name_cells(by: GroupBy, row: &RedRow) -> Vec<Cell> {
    let text = |v: &Option<String>| Cell::from(v.as_deref().unwrap_or("-"));
    match by {
        GroupBy::Namespaces => vec![row.namespace.as_str().into()],
        GroupBy::Workloads => vec![row.namespace.as_str().into(), text(&row.workload)],
        GroupBy::Pods => vec![
            row.namespace.as_str().into(),
            text(&row.pod),
            text(&row.workload),
        ],
        GroupBy::Routes => vec![
            row.namespace.as_str().into(),
            text(&row.workload),
            text(&row.method),
            text(&row.route),
        ],
    }
}

/// Requests per second, with one decimal below 10 and none above.
pub fn rate(rps: f64) -> String {
    if rps == 0.0 {
        "0".into()
    } else if rps < 10.0 {
        format!("{rps:.1}")
    } else {
        format!("{rps:.0}")
    }
}

/// A frame as a table (`-o table|wide`) or data.
pub fn render(frame: &StatFrame, format: Format, style: &Style) -> String {
    if format.is_structured() {
        return output::structured(format, frame);
    }
    let mut headers: Vec<&str> = name_columns(frame.by).to_vec();
    headers.extend(["RPS", "SUCCESS", "P50", "P90", "P99"]);
    if format == Format::Wide {
        headers.extend(["REQUESTS", "FAILURES", "TOTAL REQUESTS", "TOTAL FAILURES"]);
    }
    let mut table = Table::new(&headers);
    for row in &frame.rows {
        let mut cells = name_cells(frame.by, row);
        let success = output::percent(row.red.success);
        cells.extend([
            Cell::from(rate(row.red.rps)),
            match output::success_color(row.red.success) {
                Some(color) => Cell::colored(success, color),
                None => Cell::from(success),
            },
            output::duration(row.red.p50).into(),
            output::duration(row.red.p90).into(),
            output::duration(row.red.p99).into(),
        ]);
        if format == Format::Wide {
            let count = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v}"));
            cells.extend([
                Cell::from(format!("{}", row.red.requests)),
                Cell::from(format!("{}", row.red.failures)),
                Cell::from(count(row.total_requests)),
                Cell::from(count(row.total_failures)),
            ]);
        }
        table.push(cells);
    }
    if table.is_empty() {
        return format!(
            "No requests seen in the last {}s{}.\n",
            frame.window_seconds.round(),
            if frame.source == "probes" {
                " by the probes"
            } else {
                " in Prometheus"
            }
        );
    }
    table.render(style)
}

/// `top`'s header line.
pub fn top_header(
    frame: &StatFrame,
    scope: &Scope,
    sort: crate::red::SortBy,
    style: &Style,
) -> String {
    let what = match frame.by {
        GroupBy::Namespaces => "namespaces",
        GroupBy::Workloads => "workloads",
        GroupBy::Pods => "pods",
        GroupBy::Routes => "routes",
    };
    let scope = match &scope.namespace {
        Some(ns) => format!("in namespace {ns}"),
        None => "in every namespace".to_owned(),
    };
    let sort = match sort {
        crate::red::SortBy::Rps => "request rate",
        crate::red::SortBy::Errors => "failures",
        crate::red::SortBy::P99 => "p99 latency",
    };
    let total: f64 = frame.rows.iter().map(|r| r.red.requests).sum();
    style.paint(
        &format!(
            "Top {what} {scope} by {sort}: last {:.1}s, {} requests, from the {} (Ctrl-C quits)",
            frame.window_seconds, total, frame.source
        ),
        Color::Bold,
    )
}

/// Frames of `--watch` in JSON or YAML: one document per line (JSON) or
/// `---`-separated (YAML), so a consumer can read them as they come.
pub fn render_stream<T: Serialize>(format: Format, value: &T) -> String {
    match format {
        Format::Yaml => format!("---\n{}", output::structured(Format::Yaml, value)),
        _ => {
            let mut line = serde_json::to_string(value).unwrap_or_else(|e| format!("\"{e}\""));
            line.push('\n');
            line
        }
    }
}

/// Keeps the first `n` rows (0: all).
pub fn truncate(rows: &mut Vec<RedRow>, n: usize) {
    if n > 0 {
        rows.truncate(n);
    }
}
