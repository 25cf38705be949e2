//! `status`: the install at a glance. The operator's Deployment, every
//! TelemetryCollector and Instrumentation with their conditions, every probe
//! pod with what its `/metrics` says (processes attached and refused, events
//! and spans dropped), and a list of what is wrong, in words, each with what
//! to do.
//!
//! Gathering talks to the API server and the probes ([`gather`]); judging
//! and rendering are pure ([`problems`], [`render`]) and golden-tested.

use std::collections::BTreeMap;

use ferrotel_api::collector::TelemetryCollector;
use ferrotel_api::conditions;
use ferrotel_api::instrumentation::Instrumentation;
use ferrotel_api::probe_endpoints::labels as l;
use ferrotel_api::probe_endpoints::metrics as m;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ListParams;
use serde::Serialize;

use crate::cluster::{Cluster, ProbePod};
use crate::error::CliError;
use crate::output::{Cell, Color, Format, Style, Table};
use crate::source::{self, PROBE_LABEL};

/// Labels of the operator's Deployment (chart and kustomize alike).
pub const OPERATOR_SELECTOR: &str =
    "app.kubernetes.io/component=operator,app.kubernetes.io/name=ferrotel";

/// Everything `status` shows.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// The operator Deployments found; `None` when they could not be listed.
    pub operators: Option<Vec<OperatorReport>>,
    /// Why the operator could not be looked for (a missing permission).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_error: Option<String>,
    pub collectors: Vec<CollectorReport>,
    pub instrumentations: Vec<InstrumentationReport>,
    pub probes: Vec<ProbeReport>,
    /// What is wrong, one sentence each, with what to do.
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorReport {
    pub namespace: String,
    pub name: String,
    pub ready: i32,
    pub desired: i32,
    /// `app.kubernetes.io/version`, else the image tag.
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionReport {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

impl From<&Condition> for ConditionReport {
    fn from(c: &Condition) -> Self {
        Self {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        }
    }
}

impl ConditionReport {
    /// Whether this condition says something is wrong: a positive condition
    /// that is not `True`, or `Degraded=True`.
    pub fn is_bad(&self) -> bool {
        match self.type_.as_str() {
            conditions::DEGRADED => self.status == "True",
            conditions::PROGRESSING => false,
            _ => self.status != "True",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectorReport {
    pub namespace: String,
    pub name: String,
    pub mode: String,
    /// `ready/desired`.
    pub ready: String,
    pub conditions: Vec<ConditionReport>,
    pub endpoints: Vec<String>,
    /// The status describes an older generation than the spec.
    pub stale: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstrumentationReport {
    pub namespace: String,
    pub name: String,
    pub exporter: String,
    pub languages: Vec<LanguageReport>,
    pub conditions: Vec<ConditionReport>,
    pub stale: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LanguageReport {
    pub language: String,
    pub daemon_set: String,
    pub desired: i32,
    pub ready: i32,
    pub matched_namespaces: u32,
    pub matched_pods: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeReport {
    pub namespace: String,
    pub name: String,
    pub instrumentation: String,
    pub language: String,
    pub node: String,
    pub ready: bool,
    /// Why not ready.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub problem: String,
    pub restarts: i32,
    /// What its `/metrics` said; `None` when it could not be read.
    pub metrics: Option<ProbeMetrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_error: Option<String>,
}

/// A probe's counters, totals since it started.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeMetrics {
    pub attached: f64,
    /// Processes refused, by reason.
    pub refused: BTreeMap<String, f64>,
    /// Trace-context propagation refused (for the probe or a process), by
    /// reason.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub propagation_refused: BTreeMap<String, f64>,
    pub kernel_dropped: f64,
    pub records_dropped: f64,
    pub export_dropped: f64,
    /// Export requests that failed, any signal (each is retried until the
    /// data is accepted or dropped).
    pub export_failures: f64,
    /// Export requests the collector accepted, any signal.
    pub export_successes: f64,
}

impl ProbeMetrics {
    pub fn refused_total(&self) -> f64 {
        // Not `sum()`: an empty f64 sum is -0, which would print as "-0".
        self.refused.values().fold(0.0, |a, b| a + b)
    }

    pub fn dropped_total(&self) -> f64 {
        self.kernel_dropped + self.records_dropped + self.export_dropped
    }

    /// Reads one probe's counters from its samples.
    pub fn from_samples(samples: &[crate::promtext::Sample]) -> Self {
        // Not `sum()`: an empty f64 sum is -0, shown as "-0" and `-0.0`.
        let sum = |name: &str| -> f64 {
            samples
                .iter()
                .filter(|s| s.name == name)
                .fold(0.0, |a, s| a + s.value)
        };
        let by_reason = |name: &str| {
            let mut totals = BTreeMap::new();
            for s in samples.iter().filter(|s| s.name == name) {
                if s.value > 0.0 {
                    *totals
                        .entry(s.labels.get(l::REASON).cloned().unwrap_or_default())
                        .or_insert(0.0) += s.value;
                }
            }
            totals
        };
        let export_requests = |result_matches: fn(&str) -> bool| {
            samples
                .iter()
                .filter(|s| {
                    s.name == m::EXPORT_REQUESTS
                        && s.labels.get("result").is_some_and(|r| result_matches(r))
                })
                // Not `sum()`: an empty f64 sum is -0.
                .fold(0.0, |total, s| total + s.value)
        };
        Self {
            attached: sum(m::ATTACHED_PROCESSES),
            refused: by_reason(m::ATTACH_REFUSED),
            propagation_refused: by_reason(m::PROPAGATION_REFUSED),
            kernel_dropped: sum(m::KERNEL_EVENTS_DROPPED),
            records_dropped: sum(m::RECORDS_DROPPED),
            export_dropped: sum(m::EXPORT_DROPPED),
            export_failures: export_requests(|result| result != m::EXPORT_RESULT_OK),
            export_successes: export_requests(|result| result == m::EXPORT_RESULT_OK),
        }
    }
}

fn stale(generation: Option<i64>, observed: Option<i64>) -> bool {
    match (generation, observed) {
        (Some(g), Some(o)) => o < g,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Reads everything `status` shows. `namespace`: only the custom resources
/// of that namespace (and their probes); `None`: the whole cluster.
pub async fn gather(cluster: &Cluster, namespace: Option<&str>) -> Result<StatusReport, CliError> {
    let (operators, operator_error) = match cluster
        .list::<Deployment>(None, &ListParams::default().labels(OPERATOR_SELECTOR))
        .await
    {
        Ok(deployments) => (
            Some(deployments.iter().map(operator_report).collect()),
            None,
        ),
        // The operator's whereabouts are a nicety: a user allowed to read
        // our resources but not Deployments still gets the rest.
        Err(error @ CliError::Forbidden { .. }) => (None, Some(error.to_string())),
        Err(other) => return Err(other),
    };
    let collectors: Vec<TelemetryCollector> =
        cluster.list(namespace, &ListParams::default()).await?;
    let instrumentations: Vec<Instrumentation> =
        cluster.list(namespace, &ListParams::default()).await?;
    let mut probe_pods = cluster.probe_pods().await?;
    if let Some(ns) = namespace {
        probe_pods.retain(|p| p.namespace == ns);
    }
    let scrape = source::scrape(cluster, &probe_pods).await;
    let failures: BTreeMap<&str, &str> = scrape
        .failures
        .iter()
        .map(|(probe, error)| (probe.as_str(), error.as_str()))
        .collect();
    let probes = probe_pods
        .iter()
        .map(|probe| {
            let key = format!("{}/{}", probe.namespace, probe.name);
            let samples: Vec<crate::promtext::Sample> =
                samples_of(&scrape.samples, &probe.name).cloned().collect();
            let error = failures.get(key.as_str()).map(|e| (*e).to_owned());
            probe_report(
                probe,
                (error.is_none()).then(|| ProbeMetrics::from_samples(&samples)),
                error,
            )
        })
        .collect();
    let mut report = StatusReport {
        operators,
        operator_error,
        collectors: collectors.iter().map(collector_report).collect(),
        instrumentations: instrumentations
            .iter()
            .map(instrumentation_report)
            .collect(),
        probes,
        problems: Vec::new(),
    };
    report.problems = problems(&report);
    Ok(report)
}

fn operator_report(d: &Deployment) -> OperatorReport {
    let labels = d.metadata.labels.clone().unwrap_or_default();
    let image = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let version = labels
        .get("app.kubernetes.io/version")
        .cloned()
        .or_else(|| image.rsplit_once(':').map(|(_, tag)| tag.to_owned()))
        .unwrap_or_default();
    let status = d.status.clone().unwrap_or_default();
    OperatorReport {
        namespace: d.metadata.namespace.clone().unwrap_or_default(),
        name: d.metadata.name.clone().unwrap_or_default(),
        ready: status.ready_replicas.unwrap_or(0),
        desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        version,
    }
}

fn collector_report(c: &TelemetryCollector) -> CollectorReport {
    let status = c.status.clone().unwrap_or_default();
    CollectorReport {
        namespace: c.metadata.namespace.clone().unwrap_or_default(),
        name: c.metadata.name.clone().unwrap_or_default(),
        mode: status
            .mode
            .or(c.spec.mode)
            .map(|m| {
                serde_json::to_value(m)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .unwrap_or_else(|| "deployment".into()),
        ready: status.ready.clone().unwrap_or_else(|| {
            format!(
                "{}/{}",
                status.ready_replicas.unwrap_or(0),
                status.replicas.unwrap_or(0)
            )
        }),
        conditions: status
            .conditions
            .iter()
            .map(ConditionReport::from)
            .collect(),
        endpoints: status.endpoints.iter().map(|e| e.url.clone()).collect(),
        stale: stale(c.metadata.generation, status.observed_generation),
    }
}

fn instrumentation_report(i: &Instrumentation) -> InstrumentationReport {
    let status = i.status.clone().unwrap_or_default();
    let mut languages: Vec<LanguageReport> = status
        .languages
        .iter()
        .map(|l| LanguageReport {
            language: l.language.to_string(),
            daemon_set: l.daemon_set.clone(),
            desired: l.desired,
            ready: l.ready,
            matched_namespaces: l.matched_namespace_count,
            matched_pods: l.matched_pods,
        })
        .collect();
    // Languages the spec lists but the status does not report yet.
    for language in &i.spec.languages {
        if !languages.iter().any(|l| l.language == language.to_string()) {
            languages.push(LanguageReport {
                language: language.to_string(),
                daemon_set: String::new(),
                desired: 0,
                ready: 0,
                matched_namespaces: 0,
                matched_pods: 0,
            });
        }
    }
    InstrumentationReport {
        namespace: i.metadata.namespace.clone().unwrap_or_default(),
        name: i.metadata.name.clone().unwrap_or_default(),
        exporter: status.exporter.map(|e| e.endpoint).unwrap_or_default(),
        languages,
        conditions: status
            .conditions
            .iter()
            .map(ConditionReport::from)
            .collect(),
        stale: stale(i.metadata.generation, status.observed_generation),
    }
}

fn probe_report(
    probe: &ProbePod,
    metrics: Option<ProbeMetrics>,
    error: Option<String>,
) -> ProbeReport {
    ProbeReport {
        namespace: probe.namespace.clone(),
        name: probe.name.clone(),
        instrumentation: probe.instrumentation.clone(),
        language: probe
            .language
            .map(|l| l.to_string())
            .unwrap_or_else(|| "?".into()),
        node: probe.node.clone(),
        ready: probe.ready,
        problem: probe.problem.clone(),
        restarts: probe.restarts,
        metrics,
        metrics_error: error,
    }
}

/// What is wrong, in the order a person would fix it.
pub fn problems(report: &StatusReport) -> Vec<String> {
    let mut out = Vec::new();
    match &report.operators {
        Some(ops) if ops.is_empty() => {
            let reconciled = report.collectors.iter().all(|c| !c.stale)
                && report.instrumentations.iter().all(|i| !i.stale);
            if !reconciled || (report.collectors.is_empty() && report.instrumentations.is_empty()) {
                out.push(format!(
                    "no operator Deployment found (labels {OPERATOR_SELECTOR}); install Ferrotel (docs/install.md)"
                ));
            }
        }
        Some(ops) => {
            for op in ops.iter().filter(|o| o.ready < o.desired) {
                out.push(format!(
                    "operator {}/{} has {}/{} replicas ready; see kubectl -n {} describe deployment {}",
                    op.namespace, op.name, op.ready, op.desired, op.namespace, op.name
                ));
            }
        }
        None => {}
    }
    if report.instrumentations.is_empty() {
        out.push(
            "no Instrumentation: nothing is traced; create one (docs/instrumentation.md, config/samples)"
                .to_owned(),
        );
    }
    for c in &report.collectors {
        let what = format!("TelemetryCollector {}/{}", c.namespace, c.name);
        if c.stale {
            out.push(format!(
                "{what}: the operator has not processed its latest change; is the operator running?"
            ));
        }
        for cond in c.conditions.iter().filter(|c| c.is_bad()) {
            out.push(condition_sentence(&what, cond));
        }
    }
    for i in &report.instrumentations {
        let what = format!("Instrumentation {}/{}", i.namespace, i.name);
        if i.stale {
            out.push(format!(
                "{what}: the operator has not processed its latest change; is the operator running?"
            ));
        }
        for cond in i.conditions.iter().filter(|c| c.is_bad()) {
            out.push(condition_sentence(&what, cond));
        }
        for lang in &i.languages {
            if lang.desired == 0 && !lang.daemon_set.is_empty() {
                out.push(format!(
                    "{what}: the {} probe DaemonSet {} runs on no node; check spec.probe.nodeSelector and tolerations",
                    lang.language, lang.daemon_set
                ));
            }
            if lang.matched_pods == 0 && !i.stale {
                out.push(format!(
                    "{what}: no pod matched for {}; opt a namespace in: kubectl annotate namespace <ns> ferrotel.io/instrument={}/{}",
                    lang.language, i.namespace, i.name
                ));
            }
        }
    }
    for p in &report.probes {
        let what = format!(
            "probe {}/{} ({} on node {})",
            p.namespace, p.name, p.language, p.node
        );
        if !p.ready {
            out.push(format!(
                "{what} is not ready: {}; see kubectl -n {} logs {}",
                p.problem, p.namespace, p.name
            ));
        }
        if let Some(error) = &p.metrics_error {
            out.push(format!("{what}: its /metrics could not be read: {error}"));
        }
        let Some(metrics) = &p.metrics else { continue };
        // "2 no_functions, 1 disabled"
        let counts = |by_reason: &BTreeMap<String, f64>| {
            let counts: Vec<String> = by_reason
                .iter()
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect();
            counts.join(", ")
        };
        if metrics.refused_total() > 0.0 {
            out.push(format!(
                "{what} refused to trace processes ({}); kubectl ferrotel why <pod> says which and why",
                counts(&metrics.refused)
            ));
        }
        if !metrics.propagation_refused.is_empty() {
            out.push(format!(
                "{what} could not carry trace context across services ({}); its log says why (kubectl -n {} logs {}), docs/propagation.md what each reason needs",
                counts(&metrics.propagation_refused),
                p.namespace,
                p.name
            ));
        }
        if metrics.kernel_dropped > 0.0 {
            out.push(format!(
                "{what} lost {} events in the kernel (ring buffer full); raise spec.{}.ringBufferBytes",
                metrics.kernel_dropped, p.language
            ));
        }
        if metrics.records_dropped > 0.0 {
            out.push(format!(
                "{what} dropped {} requests before processing them (pipeline full); give the probe more CPU (spec.probe.resources)",
                metrics.records_dropped
            ));
        }
        // A failed request is retried: failures are a problem when data was
        // lost, or when nothing ever got through. Failures retried into
        // success (a collector that started after the probe) lose nothing.
        if metrics.export_dropped > 0.0 {
            out.push(format!(
                "{what}: {} spans or data points dropped by the exporter ({} export requests failed); check the exporter endpoint and the collector",
                metrics.export_dropped, metrics.export_failures
            ));
        } else if metrics.export_failures > 0.0 && metrics.export_successes == 0.0 {
            out.push(format!(
                "{what}: none of its {} export requests succeeded yet; check the exporter endpoint and the collector",
                metrics.export_failures
            ));
        }
    }
    out
}

fn condition_sentence(what: &str, cond: &ConditionReport) -> String {
    let message = if cond.message.is_empty() {
        String::new()
    } else {
        format!(": {}", cond.message)
    };
    format!(
        "{what}: {}={} ({}){message}",
        cond.type_, cond.status, cond.reason
    )
}

fn conditions_cell(conditions: &[ConditionReport]) -> Cell {
    if conditions.is_empty() {
        return Cell::colored("-", Color::Dim);
    }
    let bad: Vec<&ConditionReport> = conditions.iter().filter(|c| c.is_bad()).collect();
    if bad.is_empty() {
        return Cell::colored("ok", Color::Green);
    }
    Cell::colored(
        bad.iter()
            .map(|c| format!("{}={}", c.type_, c.status))
            .collect::<Vec<_>>()
            .join(","),
        Color::Red,
    )
}

fn ready_cell(ready: i64, desired: i64) -> Cell {
    let text = format!("{ready}/{desired}");
    if desired > 0 && ready >= desired {
        Cell::colored(text, Color::Green)
    } else {
        Cell::colored(text, Color::Red)
    }
}

fn count_cell(value: f64, bad_if_positive: bool) -> Cell {
    let text = format!("{value}");
    if bad_if_positive && value > 0.0 {
        Cell::colored(text, Color::Red)
    } else {
        Cell::from(text)
    }
}

/// The report as text (`-o table|wide`) or data (`-o json|yaml`).
pub fn render(report: &StatusReport, format: Format, style: &Style) -> String {
    if format.is_structured() {
        return crate::output::structured(format, report);
    }
    let wide = format == Format::Wide;
    let mut out = String::new();
    let section = |title: &str, out: &mut String| {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&style.paint(title, Color::Bold));
        out.push('\n');
    };

    section("OPERATOR", &mut out);
    match &report.operators {
        Some(ops) if !ops.is_empty() => {
            let mut t = Table::new(&["NAMESPACE", "NAME", "READY", "VERSION"]);
            for op in ops {
                t.push(vec![
                    op.namespace.as_str().into(),
                    op.name.as_str().into(),
                    ready_cell(op.ready.into(), op.desired.into()),
                    op.version.as_str().into(),
                ]);
            }
            out.push_str(&t.render(style));
        }
        Some(_) => out.push_str("no operator Deployment in the cluster\n"),
        None => out.push_str(&format!(
            "unknown: {}\n",
            report.operator_error.as_deref().unwrap_or("not looked for")
        )),
    }

    section("COLLECTORS", &mut out);
    if report.collectors.is_empty() {
        out.push_str("none\n");
    } else {
        let mut headers = vec!["NAMESPACE", "NAME", "MODE", "READY", "CONDITIONS"];
        if wide {
            headers.push("ENDPOINTS");
        }
        let mut t = Table::new(&headers);
        for c in &report.collectors {
            let (ready, desired) = c.ready.split_once('/').unwrap_or(("0", "0"));
            let mut row = vec![
                c.namespace.as_str().into(),
                c.name.as_str().into(),
                c.mode.as_str().into(),
                ready_cell(ready.parse().unwrap_or(0), desired.parse().unwrap_or(0)),
                conditions_cell(&c.conditions),
            ];
            if wide {
                row.push(c.endpoints.join(",").into());
            }
            t.push(row);
        }
        out.push_str(&t.render(style));
    }

    section("INSTRUMENTATIONS", &mut out);
    if report.instrumentations.is_empty() {
        out.push_str("none\n");
    } else {
        let mut headers = vec![
            "NAMESPACE",
            "NAME",
            "LANGUAGE",
            "PROBES",
            "NAMESPACES",
            "PODS",
            "CONDITIONS",
        ];
        if wide {
            headers.push("EXPORTER");
        }
        let mut t = Table::new(&headers);
        for i in &report.instrumentations {
            for (n, lang) in i.languages.iter().enumerate() {
                let first = n == 0;
                let mut row = vec![
                    if first { i.namespace.as_str() } else { "" }.into(),
                    if first { i.name.as_str() } else { "" }.into(),
                    lang.language.as_str().into(),
                    ready_cell(lang.ready.into(), lang.desired.into()),
                    lang.matched_namespaces.to_string().into(),
                    lang.matched_pods.to_string().into(),
                    if first {
                        conditions_cell(&i.conditions)
                    } else {
                        Cell::from("")
                    },
                ];
                if wide {
                    row.push(if first { i.exporter.as_str() } else { "" }.into());
                }
                t.push(row);
            }
        }
        out.push_str(&t.render(style));
    }

    section("PROBES", &mut out);
    if report.probes.is_empty() {
        out.push_str("none\n");
    } else {
        let mut headers = vec![
            "NODE", "LANGUAGE", "POD", "READY", "ATTACHED", "REFUSED", "DROPPED",
        ];
        if wide {
            headers.extend(["RESTARTS", "INSTRUMENTATION", "EXPORT FAILURES"]);
        }
        let mut t = Table::new(&headers);
        let mut probes: Vec<&ProbeReport> = report.probes.iter().collect();
        probes
            .sort_by(|a, b| (&a.node, &a.language, &a.name).cmp(&(&b.node, &b.language, &b.name)));
        for p in probes {
            let unknown = || Cell::colored("?", Color::Yellow);
            let mut row = vec![
                p.node.as_str().into(),
                p.language.as_str().into(),
                format!("{}/{}", p.namespace, p.name).into(),
                if p.ready {
                    Cell::colored("yes", Color::Green)
                } else {
                    Cell::colored("no", Color::Red)
                },
            ];
            match &p.metrics {
                Some(metrics) => row.extend([
                    count_cell(metrics.attached, false),
                    count_cell(metrics.refused_total(), true),
                    count_cell(metrics.dropped_total(), true),
                ]),
                None => row.extend([unknown(), unknown(), unknown()]),
            }
            if wide {
                row.push(p.restarts.to_string().into());
                row.push(p.instrumentation.as_str().into());
                row.push(
                    p.metrics
                        .as_ref()
                        .map_or_else(unknown, |m| count_cell(m.export_failures, true)),
                );
            }
            t.push(row);
        }
        out.push_str(&t.render(style));
    }

    section("PROBLEMS", &mut out);
    if report.problems.is_empty() {
        out.push_str(&style.paint("none found", Color::Green));
        out.push('\n');
    } else {
        for problem in &report.problems {
            out.push_str(&style.paint("- ", Color::Red));
            out.push_str(problem);
            out.push('\n');
        }
    }
    out
}

/// Samples of one probe, by the label [`source::scrape`] adds.
pub fn samples_of<'a>(
    samples: &'a [crate::promtext::Sample],
    probe: &'a str,
) -> impl Iterator<Item = &'a crate::promtext::Sample> {
    samples
        .iter()
        .filter(move |s| s.labels.get(PROBE_LABEL).map(String::as_str) == Some(probe))
}
