//! `why <pod>`: is this pod traced, and if not, exactly why. `why
//! deploy/NAME` (or `sts/`, `ds/`, `job/`, `rs/`): the same for each pod of
//! the workload, found by its owner chain the way every command names a
//! pod's workload ([`crate::workload::workload_of`]).
//!
//! Three sources, in the order a request would meet them:
//! 1. **the opt-in rules** ([`ferrotel_api::optin::resolve`], the very
//!    function the operator and the probes run) on the pod, its namespace
//!    and the cluster's Instrumentations: which Instrumentation claims the
//!    pod for which language, and which annotation or selector decided;
//! 2. **the probes on the pod's node** (by language): whether there is one
//!    for each claimed language, and whether it is ready;
//! 3. **what each of those probes decided per process**
//!    (`/debug/processes`, through the API server's pod proxy): the
//!    language it detected, its own opt-in decision and what its program
//!    set did (traced, or refused and why).
//!
//! [`judge`] turns these into one verdict with the fix; it is pure and
//! tested for every reason a pod can be dark.

use std::collections::{BTreeMap, BTreeSet};

use ferrotel_api::instrumentation::Instrumentation;
use ferrotel_api::labels::INSTRUMENT_ANNOTATION;
use ferrotel_api::language::Language;
use ferrotel_api::optin::{self, Decision, Instrumentations, NamespaceView, Origin, PodView, Skip};
use ferrotel_api::probe_endpoints::{
    DiscoveryOutcome, PROCESSES_PATH, ProcessReport, ProcessesReport, TracingOutcome,
};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::ListParams;
use serde::Serialize;

use crate::cluster::{Cluster, ProbePod};
use crate::error::CliError;
use crate::output::{Cell, Color, Format, Style, Table};

/// What `why` needs, read from the cluster.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub pod: Pod,
    pub namespace: Namespace,
    pub instrumentations: Vec<Instrumentation>,
    /// Probe pods on the pod's node (any language, any Instrumentation).
    pub probes: Vec<ProbePod>,
    /// Each of those probes' `/debug/processes`, or why it could not be read.
    pub reports: Vec<Result<ProcessesReport, String>>,
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WhyReport {
    pub namespace: String,
    pub pod: String,
    pub node: String,
    pub workload: String,
    pub traced: bool,
    /// One sentence: traced by what, or why not.
    pub verdict: String,
    /// What to do, when something is to be done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// A machine-readable reason (stable, for scripts and tests).
    pub reason: Reason,
    pub opt_in: Vec<OptInRow>,
    pub probes: Vec<ProbeRow>,
    pub processes: Vec<ProcessRow>,
}

/// Why a pod is or is not traced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Reason {
    Traced,
    NotScheduled,
    NotOptedIn,
    OptedOut,
    OptInError,
    PodSelectorMismatch,
    LanguageNotEnabled,
    NoProbeOnNode,
    ProbeNotReady,
    ProbeUnreachable,
    BinaryRefused,
    UnknownLanguage,
    ProcessesNotFound,
    Attaching,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OptInRow {
    pub language: Language,
    /// `claimed`, `skipped` or `error`.
    pub decision: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instrumentation: Option<String>,
    /// The rule that decided, in words.
    pub rule: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeRow {
    pub language: String,
    pub probe: String,
    pub instrumentation: String,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessRow {
    /// The language of the probe that reported it.
    pub probe_language: String,
    pub pid: u32,
    pub container: String,
    pub exe: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detected: Option<Language>,
    pub decision: String,
    pub tracing: String,
}

/// What `why` is asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One pod: `NAME`, `pod/NAME`.
    Pod(String),
    /// Every pod of a workload, as [`crate::workload::workload_of`] names
    /// it: `deploy/web` (from `deploy/`, `deployment/`, `deployments/`),
    /// `sts/`, `ds/`, `job/`, `rs/`.
    Workload(String),
}

impl Target {
    /// Reads `why`'s argument, kubectl's way.
    pub fn parse(arg: &str) -> Result<Self, CliError> {
        let usage = |what: String| {
            CliError::Usage(format!(
                "{what}; why explains a pod (NAME or pod/NAME) or the pods of a workload (deploy/NAME, sts/NAME, ds/NAME, job/NAME, rs/NAME)"
            ))
        };
        let Some((kind, name)) = arg.split_once('/') else {
            if arg.is_empty() {
                return Err(usage("no pod given".into()));
            }
            return Ok(Target::Pod(arg.to_owned()));
        };
        if name.is_empty() || name.contains('/') {
            return Err(usage(format!("{arg:?} is not KIND/NAME")));
        }
        match crate::workload::short_kind(kind) {
            "pod" => Ok(Target::Pod(name.to_owned())),
            kind @ ("deploy" | "sts" | "ds" | "job" | "rs") => {
                Ok(Target::Workload(format!("{kind}/{name}")))
            }
            _ => Err(usage(format!("{kind:?} in {arg:?} is not a kind it knows"))),
        }
    }
}

/// Reads what [`judge`] needs about each pod `target` names in
/// `namespace` (the Instrumentations and each probe's report read once for
/// all), in pod name order.
pub async fn gather(
    cluster: &Cluster,
    namespace: &str,
    target: &Target,
) -> Result<Vec<Inputs>, CliError> {
    let mut pods: Vec<Pod> = match target {
        Target::Pod(name) => vec![cluster.get(namespace, name).await?],
        Target::Workload(workload) => {
            let mut pods: Vec<Pod> = cluster
                .list(Some(namespace), &ListParams::default())
                .await?;
            pods.retain(|pod| crate::workload::workload_of(pod) == *workload);
            if pods.is_empty() {
                return Err(CliError::NoData {
                    what: "why",
                    detail: format!(
                        "no pod in namespace {namespace} belongs to {workload}; check the name and -n (kubectl get {workload} -n {namespace}), and that it has pods"
                    ),
                });
            }
            pods
        }
    };
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let ns: Namespace = cluster.get_cluster(namespace).await?;
    let instrumentations: Vec<Instrumentation> = cluster.list(None, &ListParams::default()).await?;
    let nodes: BTreeSet<String> = pods.iter().filter_map(node_of).collect();
    let mut probes = Vec::new();
    let mut reports = Vec::new();
    if !nodes.is_empty() {
        probes = cluster.probe_pods().await?;
        probes.retain(|p| nodes.contains(&p.node));
        probes.sort_by(|a, b| (a.language, &a.name).cmp(&(b.language, &b.name)));
        reports = futures::future::join_all(probes.iter().map(|probe| async move {
            if !probe.ready {
                return Err(format!("not ready ({})", probe.problem));
            }
            let text = cluster
                .probe_get(probe, PROCESSES_PATH)
                .await
                .map_err(|e| e.to_string())?;
            serde_json::from_str::<ProcessesReport>(&text).map_err(|e| {
                format!(
                    "its {PROCESSES_PATH} answer is not a process report ({e}); is it an older probe version?"
                )
            })
        }))
        .await;
    }
    Ok(pods
        .into_iter()
        .map(|pod| {
            // The probes of the pod's own node.
            let node = node_of(&pod);
            let (probes, reports) = probes
                .iter()
                .zip(&reports)
                .filter(|(probe, _)| node.as_ref() == Some(&probe.node))
                .map(|(probe, report)| (probe.clone(), report.clone()))
                .unzip();
            Inputs {
                pod,
                namespace: ns.clone(),
                instrumentations: instrumentations.clone(),
                probes,
                reports,
            }
        })
        .collect())
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

/// `why` of a workload: each of its pods' answers.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadReport {
    pub namespace: String,
    pub workload: String,
    /// How many of its pods are traced.
    pub traced: usize,
    pub pods: Vec<WhyReport>,
}

impl WorkloadReport {
    pub fn new(namespace: &str, workload: &str, pods: Vec<WhyReport>) -> Self {
        Self {
            namespace: namespace.to_owned(),
            workload: workload.to_owned(),
            traced: pods.iter().filter(|p| p.traced).count(),
            pods,
        }
    }
}

/// A workload's answers as text (each pod as [`render`] shows one) or data.
pub fn render_workload(report: &WorkloadReport, format: Format, style: &Style) -> String {
    if format.is_structured() {
        return crate::output::structured(format, report);
    }
    let mut out = format!(
        "{}\n",
        style.paint(
            &format!(
                "{}/{}: {} of {} pods traced",
                report.namespace,
                report.workload,
                report.traced,
                report.pods.len()
            ),
            Color::Bold
        )
    );
    for pod in &report.pods {
        out.push('\n');
        out.push_str(&render(pod, format, style));
    }
    out
}

fn rule(origin: &Origin) -> String {
    match origin {
        Origin::PodAnnotation { key } if key == INSTRUMENT_ANNOTATION => {
            format!("pod annotation {key}")
        }
        Origin::PodAnnotation { key } => {
            format!("pod annotation {key} (OpenTelemetry Operator's, honoured for migration)")
        }
        Origin::NamespaceAnnotation { namespace, key } if key == INSTRUMENT_ANNOTATION => {
            format!("annotation {key} on namespace {namespace}")
        }
        Origin::NamespaceAnnotation { namespace, key } => format!(
            "annotation {key} on namespace {namespace} (OpenTelemetry Operator's, honoured for migration)"
        ),
        Origin::NamespaceSelector { namespace } => {
            format!("an Instrumentation's namespaceSelector matches namespace {namespace}")
        }
    }
}

fn skip_rule(skip: &Skip, language: Language) -> String {
    match skip {
        Skip::NotOptedIn => {
            "no annotation on the pod or its namespace, no namespaceSelector matches".into()
        }
        Skip::OptedOut { origin } => format!("opted out by {}", rule(origin)),
        Skip::OtherLanguage { language, .. } => {
            format!("pinned to {language} by the ferrotel.io/language annotation")
        }
        Skip::LanguageNotEnabled { instrumentation } => {
            format!("{instrumentation} does not list {language} in spec.languages")
        }
        Skip::PodSelectorMismatch { instrumentation } => {
            format!("the podSelector of {instrumentation} does not match the pod's labels")
        }
    }
}

fn outcome_text(outcome: &Option<DiscoveryOutcome>) -> String {
    match outcome {
        None => "selected standalone".into(),
        Some(DiscoveryOutcome::Claimed { instrumentation }) => {
            format!("claimed by {instrumentation}")
        }
        Some(DiscoveryOutcome::NotOptedIn) => "not opted in".into(),
        Some(DiscoveryOutcome::OptedOut) => "opted out".into(),
        Some(DiscoveryOutcome::OtherLanguage { language }) => format!("is {language}"),
        Some(DiscoveryOutcome::UnknownLanguage) => "language unknown".into(),
        Some(DiscoveryOutcome::LanguageNotEnabled { instrumentation }) => {
            format!("language not enabled in {instrumentation}")
        }
        Some(DiscoveryOutcome::PodSelectorMismatch { instrumentation }) => {
            format!("podSelector of {instrumentation} does not match")
        }
        Some(DiscoveryOutcome::OptInError { category, .. }) => format!("opt-in error ({category})"),
    }
}

fn tracing_text(tracing: &Option<TracingOutcome>) -> String {
    match tracing {
        None => "-".into(),
        Some(TracingOutcome::Traced { program_set }) => format!("traced ({program_set})"),
        Some(TracingOutcome::Refused {
            program_set,
            reason,
            ..
        }) => format!("refused by {program_set}: {reason}"),
    }
}

/// Decides the verdict from what was read. Pure.
pub fn judge(inputs: &Inputs) -> WhyReport {
    let pod = &inputs.pod;
    let empty = BTreeMap::new();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    let instrumentations = Instrumentations::new(
        inputs
            .instrumentations
            .iter()
            .map(Instrumentation::candidate),
    );
    let ns_view = NamespaceView {
        name: &namespace,
        labels: inputs.namespace.metadata.labels.as_ref().unwrap_or(&empty),
        annotations: inputs
            .namespace
            .metadata
            .annotations
            .as_ref()
            .unwrap_or(&empty),
    };
    let pod_view = PodView {
        labels: pod.metadata.labels.as_ref().unwrap_or(&empty),
        annotations: pod.metadata.annotations.as_ref().unwrap_or(&empty),
    };
    let decisions: Vec<(Language, Result<Decision, optin::OptInError>)> = Language::ALL
        .iter()
        .map(|l| {
            (
                *l,
                optin::resolve(&instrumentations, &ns_view, &pod_view, *l, None),
            )
        })
        .collect();

    let opt_in: Vec<OptInRow> = decisions
        .iter()
        .map(|(language, decision)| match decision {
            Ok(Decision::Claimed(claim)) => OptInRow {
                language: *language,
                decision: "claimed".into(),
                instrumentation: Some(claim.instrumentation.to_string()),
                rule: rule(&claim.origin),
            },
            Ok(Decision::Skipped(skip)) => OptInRow {
                language: *language,
                decision: "skipped".into(),
                instrumentation: match skip {
                    Skip::LanguageNotEnabled { instrumentation }
                    | Skip::PodSelectorMismatch { instrumentation } => {
                        Some(instrumentation.to_string())
                    }
                    _ => None,
                },
                rule: skip_rule(skip, *language),
            },
            Err(error) => OptInRow {
                language: *language,
                decision: "error".into(),
                instrumentation: None,
                rule: error.to_string(),
            },
        })
        .collect();

    let probes: Vec<ProbeRow> = inputs
        .probes
        .iter()
        .zip(&inputs.reports)
        .map(|(p, report)| ProbeRow {
            language: p
                .language
                .map(|l| l.to_string())
                .unwrap_or_else(|| "?".into()),
            probe: format!("{}/{}", p.namespace, p.name),
            instrumentation: p.instrumentation.clone(),
            ready: p.ready,
            error: report.as_ref().err().cloned(),
        })
        .collect();

    // This pod's processes, as each probe on the node saw them.
    let mut seen: Vec<(Option<Language>, &ProcessReport)> = Vec::new();
    for (probe, report) in inputs.probes.iter().zip(&inputs.reports) {
        let Ok(report) = report else { continue };
        for process in &report.processes {
            if process.pod.as_ref().is_some_and(|p| p.uid == uid) {
                seen.push((report.language.or(probe.language), process));
            }
        }
    }
    let processes: Vec<ProcessRow> = seen
        .iter()
        .map(|(language, p)| ProcessRow {
            probe_language: language
                .map(|l| l.to_string())
                .unwrap_or_else(|| "?".into()),
            pid: p.pid,
            container: p
                .pod
                .as_ref()
                .map(|p| p.container.clone())
                .unwrap_or_default(),
            exe: p.exe.clone(),
            detected: p.detected,
            decision: outcome_text(&p.discovery),
            tracing: tracing_text(&p.tracing),
        })
        .collect();

    let (reason, verdict, fix) = verdict(inputs, &namespace, &node, &decisions, &seen);
    let workload = crate::workload::workload_of(pod);
    WhyReport {
        namespace,
        pod: name,
        node,
        workload,
        traced: reason == Reason::Traced,
        verdict,
        fix,
        reason,
        opt_in,
        probes,
        processes,
    }
}

type Verdict = (Reason, String, Option<String>);

fn verdict(
    inputs: &Inputs,
    namespace: &str,
    node: &str,
    decisions: &[(Language, Result<Decision, optin::OptInError>)],
    seen: &[(Option<Language>, &ProcessReport)],
) -> Verdict {
    // What the probes did wins over everything: it is what happened.
    let traced: Vec<&(Option<Language>, &ProcessReport)> = seen
        .iter()
        .filter(|(_, p)| matches!(p.tracing, Some(TracingOutcome::Traced { .. })))
        .collect();
    if !traced.is_empty() {
        let mut sets = BTreeSet::new();
        let mut by = BTreeSet::new();
        for (_, p) in &traced {
            if let Some(TracingOutcome::Traced { program_set }) = &p.tracing {
                sets.insert(program_set.clone());
            }
            if let Some(DiscoveryOutcome::Claimed { instrumentation }) = &p.discovery {
                by.insert(instrumentation.clone());
            }
        }
        let processes: BTreeSet<u32> = seen.iter().map(|(_, p)| p.pid).collect();
        let traced_pids: BTreeSet<u32> = traced.iter().map(|(_, p)| p.pid).collect();
        let rule = decisions
            .iter()
            .find_map(|(_, d)| d.as_ref().ok()?.claim().map(|c| rule(&c.origin)))
            .map(|r| format!(", opted in by {r}"))
            .unwrap_or_default();
        return (
            Reason::Traced,
            format!(
                "traced: {} of {} processes, by program set {} of {}{rule}",
                traced_pids.len(),
                processes.len(),
                join(&sets),
                join(&by)
            ),
            None,
        );
    }
    if let Some((language, p)) = seen
        .iter()
        .find(|(_, p)| matches!(p.tracing, Some(TracingOutcome::Refused { .. })))
    {
        let Some(TracingOutcome::Refused {
            program_set,
            reason,
            message,
        }) = &p.tracing
        else {
            unreachable!("matched above")
        };
        let language = language.map(|l| l.to_string()).unwrap_or_default();
        return (
            Reason::BinaryRefused,
            format!(
                "not traced: the {language} probe refused {} (pid {}) — {reason}: {message}",
                p.exe, p.pid
            ),
            Some(refusal_fix(reason, &program_set.to_string())),
        );
    }
    if node.is_empty() {
        return (
            Reason::NotScheduled,
            "not traced: the pod is not scheduled on a node yet".into(),
            None,
        );
    }

    let claims: Vec<(Language, &optin::Claim)> = decisions
        .iter()
        .filter_map(|(l, d)| Some((*l, d.as_ref().ok()?.claim()?)))
        .collect();
    if claims.is_empty() {
        return not_claimed(namespace, decisions);
    }

    let detected: BTreeSet<Language> = seen
        .iter()
        .filter_map(|(_, p)| match &p.discovery {
            Some(DiscoveryOutcome::OtherLanguage { language }) => Some(*language),
            _ => p.detected,
        })
        .collect();
    let claimed_languages: BTreeSet<Language> = claims.iter().map(|(l, _)| *l).collect();
    if let Some(language) = detected.iter().find(|l| !claimed_languages.contains(l)) {
        // The processes are of a language nobody claimed the pod for: what
        // the probes of the claimed languages do is beside the point.
        let (_, decision) = decisions
            .iter()
            .find(|(l, _)| l == language)
            .expect("every language has a decision");
        let why = match decision {
            Ok(Decision::Skipped(Skip::LanguageNotEnabled { instrumentation })) => format!(
                "{instrumentation} does not list {language} in spec.languages, so there is no {language} probe"
            ),
            Ok(Decision::Skipped(skip)) => skip_rule(skip, *language),
            Err(error) => error.to_string(),
            Ok(Decision::Claimed(_)) => unreachable!("not claimed"),
        };
        let fix = match decision {
            Ok(Decision::Skipped(Skip::LanguageNotEnabled { instrumentation })) => Some(format!(
                "add {language} to spec.languages of Instrumentation {instrumentation}"
            )),
            _ => None,
        };
        return (
            Reason::LanguageNotEnabled,
            format!("not traced: its processes are {language} (detected by the probe), and {why}"),
            fix,
        );
    }
    // Claimed for some languages: every probe that should act, per language.
    for (language, claim) in &claims {
        let key = claim.instrumentation.to_string();
        let mine: Vec<(&ProbePod, &Result<ProcessesReport, String>)> = inputs
            .probes
            .iter()
            .zip(&inputs.reports)
            .filter(|(p, _)| p.language == Some(*language) && p.instrumentation == key)
            .collect();
        if mine.is_empty() && claims.len() == 1 {
            return no_probe(inputs, *language, &key, node);
        }
        for (probe, report) in &mine {
            if !probe.ready && claims.len() == 1 {
                return (
                    Reason::ProbeNotReady,
                    format!(
                        "not traced: the {language} probe {}/{} on node {node} is not ready: {}",
                        probe.namespace, probe.name, probe.problem
                    ),
                    Some(format!(
                        "look at its logs: kubectl -n {} logs {}",
                        probe.namespace, probe.name
                    )),
                );
            }
            if let Err(error) = report
                && claims.len() == 1
            {
                return (
                    Reason::ProbeUnreachable,
                    format!(
                        "unknown: the {language} probe {}/{} on node {node} could not be asked: {error}",
                        probe.namespace, probe.name
                    ),
                    None,
                );
            }
        }
    }

    // The probes answered. What did they see of this pod?
    if seen.is_empty() {
        return (
            Reason::ProcessesNotFound,
            format!(
                "not traced yet: opted in for {}, but no probe on node {node} has found a process of this pod",
                claims.iter().map(|(l, _)| l.to_string()).collect::<Vec<_>>().join(" and ")
            ),
            Some(
                "wait for the container to start; if it runs, the probe could not map its cgroup to the pod: see the probe's logs"
                    .into(),
            ),
        );
    }
    for (language, claim) in &claims {
        let key = claim.instrumentation.to_string();
        let has_probe = inputs
            .probes
            .iter()
            .any(|p| p.language == Some(*language) && p.instrumentation == key);
        if !has_probe && detected.contains(language) {
            return no_probe(inputs, *language, &key, node);
        }
    }
    if seen
        .iter()
        .all(|(_, p)| matches!(p.discovery, Some(DiscoveryOutcome::UnknownLanguage)))
    {
        let exes: BTreeSet<&str> = seen.iter().map(|(_, p)| p.exe.as_str()).collect();
        return (
            Reason::UnknownLanguage,
            format!(
                "not traced: no process of the pod is Go or Python as far as detection can tell ({})",
                exes.into_iter().collect::<Vec<_>>().join(", ")
            ),
            Some(
                "if it is, pin it: kubectl annotate pod <pod> ferrotel.io/language=go (or python)"
                    .into(),
            ),
        );
    }
    (
        Reason::Attaching,
        "not traced yet: claimed, and the probe has not attached its program set yet".into(),
        Some("run again in a few seconds".into()),
    )
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

fn refusal_fix(reason: &str, program_set: &str) -> String {
    match reason {
        "no_functions" | "nothing_to_probe" => "the binary does not use a library the probe instruments (net/http, google.golang.org/grpc); nothing to trace in it".into(),
        "not_go" | "not_elf_amd64" => "the executable is not a Go binary for amd64; pin the right language with ferrotel.io/language".into(),
        "go_version" => "rebuild with a supported Go version (docs/probe-go.md)".into(),
        "dwarf" | "unknown_offsets" => "build the binary without -ldflags=\"-s -w\" (keep DWARF), or use a Go version the probe has offsets for (docs/probe-go.md)".into(),
        "attach_failed" => format!("the kernel refused the {program_set} probes; see the probe's logs and docs/security.md for the capabilities it needs"),
        _ => "see the probe's logs for the full error".into(),
    }
}

fn no_probe(inputs: &Inputs, language: Language, key: &str, node: &str) -> Verdict {
    let status = inputs
        .instrumentations
        .iter()
        .find(|i| {
            format!(
                "{}/{}",
                i.metadata.namespace.as_deref().unwrap_or_default(),
                i.metadata.name.as_deref().unwrap_or_default()
            ) == key
        })
        .and_then(|i| i.status.as_ref())
        .and_then(|s| s.languages.iter().find(|l| l.language == language));
    let detail = match status {
        Some(s) if s.desired == 0 => format!(
            "DaemonSet {} runs on no node; check spec.probe.nodeSelector and tolerations",
            s.daemon_set
        ),
        Some(s) => format!(
            "DaemonSet {} has {} pods but none on node {node}; check spec.probe.nodeSelector, tolerations and the node's taints",
            s.daemon_set, s.desired
        ),
        None => "the operator has not rendered it yet; check kubectl ferrotel status".into(),
    };
    (
        Reason::NoProbeOnNode,
        format!("not traced: no {language} probe of {key} runs on node {node}"),
        Some(detail),
    )
}

fn not_claimed(
    namespace: &str,
    decisions: &[(Language, Result<Decision, optin::OptInError>)],
) -> Verdict {
    if let Some((_, Err(error))) = decisions.iter().find(|(_, d)| d.is_err()) {
        return (
            Reason::OptInError,
            format!("not traced: the opt-in annotations are wrong: {error}"),
            None,
        );
    }
    let skips: Vec<&Skip> = decisions
        .iter()
        .filter_map(|(_, d)| match d {
            Ok(Decision::Skipped(s)) => Some(s),
            _ => None,
        })
        .collect();
    if let Some(Skip::OptedOut { origin }) =
        skips.iter().find(|s| matches!(s, Skip::OptedOut { .. }))
    {
        let fix = match origin {
            Origin::PodAnnotation { key } => format!(
                "remove it from the pod template (or set it to \"true\"); the pod annotation wins over its namespace's ({key})"
            ),
            Origin::NamespaceAnnotation { namespace, key } => format!(
                "kubectl annotate namespace {namespace} {key}=true --overwrite, or opt this pod in with its own annotation"
            ),
            Origin::NamespaceSelector { .. } => String::new(),
        };
        return (
            Reason::OptedOut,
            format!("not traced: opted out by {}=\"false\"", rule(origin)),
            Some(fix),
        );
    }
    if let Some(Skip::PodSelectorMismatch { instrumentation }) = skips
        .iter()
        .find(|s| matches!(s, Skip::PodSelectorMismatch { .. }))
    {
        return (
            Reason::PodSelectorMismatch,
            format!(
                "not traced: namespace {namespace} is opted in to {instrumentation}, but its spec.selector.podSelector does not match the pod's labels"
            ),
            Some(format!(
                "change the podSelector of {instrumentation}, or annotate the pod: {INSTRUMENT_ANNOTATION}={instrumentation}"
            )),
        );
    }
    if let Some(Skip::LanguageNotEnabled { instrumentation }) = skips
        .iter()
        .find(|s| matches!(s, Skip::LanguageNotEnabled { .. }))
    {
        let pinned = skips.iter().find_map(|s| match s {
            Skip::OtherLanguage { language, .. } => Some(*language),
            _ => None,
        });
        let language = pinned
            .map(|l| l.to_string())
            .unwrap_or_else(|| "its language".into());
        return (
            Reason::LanguageNotEnabled,
            format!(
                "not traced: the pod is {language}, and {instrumentation} does not list {language} in spec.languages, so there is no {language} probe"
            ),
            Some(format!(
                "add {language} to spec.languages of Instrumentation {instrumentation}"
            )),
        );
    }
    (
        Reason::NotOptedIn,
        format!(
            "not traced: namespace {namespace} is not opted in (no {INSTRUMENT_ANNOTATION} annotation on the pod or the namespace, and no Instrumentation's namespaceSelector matches it)"
        ),
        Some(format!(
            "kubectl annotate namespace {namespace} {INSTRUMENT_ANNOTATION}=true (or =<namespace>/<instrumentation> when there are several)"
        )),
    )
}

/// The report as text or data.
pub fn render(report: &WhyReport, format: Format, style: &Style) -> String {
    if format.is_structured() {
        return crate::output::structured(format, report);
    }
    let mut out = String::new();
    let field = |key: &str, value: &str, out: &mut String| {
        out.push_str(&format!("{:<10}{value}\n", format!("{key}:")));
    };
    field(
        "Pod",
        &format!("{}/{}", report.namespace, report.pod),
        &mut out,
    );
    field("Workload", &report.workload, &mut out);
    field(
        "Node",
        if report.node.is_empty() {
            "-"
        } else {
            &report.node
        },
        &mut out,
    );
    let verdict = style.paint(
        &report.verdict,
        if report.traced {
            Color::Green
        } else {
            Color::Red
        },
    );
    field("Verdict", &verdict, &mut out);
    if let Some(fix) = &report.fix {
        field("Fix", fix, &mut out);
    }

    out.push_str(&format!(
        "\n{}\n",
        style.paint(
            "Opt-in (the rules the operator and the probes apply):",
            Color::Bold
        )
    ));
    let mut t = Table::new(&["LANGUAGE", "DECISION", "INSTRUMENTATION", "RULE"]);
    for row in &report.opt_in {
        let decision = match row.decision.as_str() {
            "claimed" => Cell::colored("claimed", Color::Green),
            "error" => Cell::colored("error", Color::Red),
            other => Cell::from(other),
        };
        t.push(vec![
            row.language.as_str().into(),
            decision,
            row.instrumentation.as_deref().unwrap_or("-").into(),
            row.rule.as_str().into(),
        ]);
    }
    out.push_str(&indent(&t.render(style)));

    out.push_str(&format!(
        "\n{}\n",
        style.paint(
            &format!(
                "Probes on node {}:",
                if report.node.is_empty() {
                    "-"
                } else {
                    &report.node
                }
            ),
            Color::Bold
        )
    ));
    if report.probes.is_empty() {
        out.push_str("  none\n");
    } else {
        let mut t = Table::new(&["LANGUAGE", "PROBE", "INSTRUMENTATION", "READY", "ANSWER"]);
        for p in &report.probes {
            t.push(vec![
                p.language.as_str().into(),
                p.probe.as_str().into(),
                p.instrumentation.as_str().into(),
                if p.ready {
                    Cell::colored("yes", Color::Green)
                } else {
                    Cell::colored("no", Color::Red)
                },
                match &p.error {
                    None => Cell::from("ok"),
                    Some(e) => Cell::colored(e.as_str(), Color::Red),
                },
            ]);
        }
        out.push_str(&indent(&t.render(style)));
    }

    out.push_str(&format!(
        "\n{}\n",
        style.paint("Processes of the pod, as each probe saw them:", Color::Bold)
    ));
    if report.processes.is_empty() {
        out.push_str("  none reported\n");
    } else {
        let mut t = Table::new(&[
            "PROBE",
            "PID",
            "CONTAINER",
            "EXECUTABLE",
            "DETECTED",
            "DECISION",
            "TRACING",
        ]);
        for p in &report.processes {
            let tracing = if p.tracing.starts_with("traced") {
                Cell::colored(p.tracing.as_str(), Color::Green)
            } else if p.tracing.starts_with("refused") {
                Cell::colored(p.tracing.as_str(), Color::Red)
            } else {
                Cell::from(p.tracing.as_str())
            };
            t.push(vec![
                p.probe_language.as_str().into(),
                p.pid.to_string().into(),
                p.container.as_str().into(),
                p.exe.as_str().into(),
                p.detected.map_or("-", Language::as_str).into(),
                p.decision.as_str().into(),
                tracing,
            ]);
        }
        out.push_str(&indent(&t.render(style)));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn why_takes_a_pod_or_a_workload_the_way_kubectl_names_them() {
        let pod = |name: &str| Ok(Target::Pod(name.to_owned()));
        let workload = |name: &str| Ok(Target::Workload(name.to_owned()));
        for (arg, want) in [
            ("web-7d4b9c-x2x9z", pod("web-7d4b9c-x2x9z")),
            ("pod/web-1", pod("web-1")),
            ("pods/web-1", pod("web-1")),
            ("po/web-1", pod("web-1")),
            ("deploy/web", workload("deploy/web")),
            ("deployment/web", workload("deploy/web")),
            ("Deployments/web", workload("deploy/web")),
            ("sts/db", workload("sts/db")),
            ("statefulset/db", workload("sts/db")),
            ("ds/agent", workload("ds/agent")),
            ("daemonset/agent", workload("ds/agent")),
            ("job/migrate", workload("job/migrate")),
            ("rs/legacy", workload("rs/legacy")),
        ] {
            let got = Target::parse(arg).map_err(|e| e.to_string());
            assert_eq!(got, want, "{arg}");
        }
    }

    #[test]
    fn why_refuses_what_is_neither_a_pod_nor_a_workload_saying_what_it_takes() {
        for arg in ["", "svc/web", "deploy/", "deploy/web/x", "cronjob/nightly"] {
            let error = Target::parse(arg).expect_err(arg).to_string();
            assert!(
                error.contains("deploy/NAME") && error.contains("pod/NAME"),
                "{arg}: {error}"
            );
        }
    }

    #[test]
    fn a_workload_counts_its_traced_pods() {
        let report = |pod: &str, traced: bool| WhyReport {
            namespace: "shop".into(),
            pod: pod.into(),
            node: "node-1".into(),
            workload: "deploy/web".into(),
            traced,
            verdict: if traced { "traced" } else { "not traced" }.into(),
            fix: None,
            reason: if traced {
                Reason::Traced
            } else {
                Reason::Attaching
            },
            opt_in: vec![],
            probes: vec![],
            processes: vec![],
        };
        let workload = WorkloadReport::new(
            "shop",
            "deploy/web",
            vec![report("web-1", true), report("web-2", false)],
        );
        assert_eq!(workload.traced, 1);
        let text = render_workload(&workload, Format::Table, &Style::plain());
        assert!(
            text.starts_with("shop/deploy/web: 1 of 2 pods traced\n"),
            "{text}"
        );
        assert!(
            text.contains("shop/web-1") && text.contains("shop/web-2"),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render_workload(&workload, Format::Json, &Style::plain()))
                .expect("JSON");
        assert_eq!(json["pods"][1]["traced"], false, "{json:#}");
    }
}
