//! `why`'s verdict for every reason a pod is or is not traced, from fixed
//! inputs (pure logic: the cluster and the probes are fixtures here; the
//! end-to-end test asks real ones). Each test names the reason, checks the
//! machine-readable one, the words and the fix.

use ferrotel_api::instrumentation::Instrumentation;
use ferrotel_api::language::Language;
use ferrotel_api::probe_endpoints::{
    DiscoveryOutcome, PodRef, ProcessReport, ProcessesReport, TracingOutcome,
};
use ferrotel_cli::cluster::ProbePod;
use ferrotel_cli::output::{Format, Style};
use ferrotel_cli::why::{Inputs, Reason, WhyReport, judge, render};
use k8s_openapi::api::core::v1::{Namespace, Pod};

fn pod(annotations: &str) -> Pod {
    serde_yaml::from_str(&format!(
        r#"
metadata:
  name: web-7d4b9c-x2x9z
  namespace: shop
  uid: pod-uid-1
  labels: {{app: web, pod-template-hash: 7d4b9c}}
  annotations: {annotations}
  ownerReferences:
    - {{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d4b9c, uid: rs, controller: true}}
spec:
  nodeName: node-1
  containers: [{{name: app, image: web}}]
"#
    ))
    .expect("pod fixture")
}

fn namespace(annotations: &str) -> Namespace {
    serde_yaml::from_str(&format!(
        "metadata: {{name: shop, annotations: {annotations}}}"
    ))
    .expect("namespace fixture")
}

fn instrumentation(languages: &str) -> Instrumentation {
    serde_yaml::from_str(&format!(
        r#"
apiVersion: ferrotel.io/v1alpha1
kind: Instrumentation
metadata: {{name: default, namespace: obs, generation: 1}}
spec: {{languages: {languages}, exporter: {{endpoint: "http://otel:4317"}}}}
status:
  observedGeneration: 1
  languages:
    - {{language: go, daemonSet: default-probe-go, desired: 2, ready: 2, updated: 2}}
    - {{language: python, daemonSet: default-probe-python, desired: 2, ready: 2, updated: 2}}
"#
    ))
    .expect("instrumentation fixture")
}

fn probe(language: Language) -> ProbePod {
    ProbePod {
        namespace: "obs".into(),
        name: format!("default-probe-{language}-abcde"),
        instrumentation: "obs/default".into(),
        language: Some(language),
        node: "node-1".into(),
        ready: true,
        problem: String::new(),
        restarts: 0,
        port: 9464,
    }
}

fn process(
    pid: u32,
    exe: &str,
    detected: Option<Language>,
    discovery: DiscoveryOutcome,
    tracing: Option<TracingOutcome>,
) -> ProcessReport {
    ProcessReport {
        pid,
        exe: exe.into(),
        pod: Some(PodRef {
            namespace: "shop".into(),
            name: "web-7d4b9c-x2x9z".into(),
            uid: "pod-uid-1".into(),
            container: "app".into(),
        }),
        detected,
        discovery: Some(discovery),
        tracing,
    }
}

fn report(language: Language, processes: Vec<ProcessReport>) -> Result<ProcessesReport, String> {
    Ok(ProcessesReport {
        language: Some(language),
        node: "node-1".into(),
        processes,
    })
}

fn claimed() -> DiscoveryOutcome {
    DiscoveryOutcome::Claimed {
        instrumentation: "obs/default".into(),
    }
}

/// A Go pod in an opted-in namespace, with a Go and a Python probe whose
/// reports are given.
fn inputs(
    pod_annotations: &str,
    ns_annotations: &str,
    languages: &str,
    go: Vec<ProcessReport>,
    python: Vec<ProcessReport>,
) -> Inputs {
    Inputs {
        pod: pod(pod_annotations),
        namespace: namespace(ns_annotations),
        instrumentations: vec![instrumentation(languages)],
        probes: vec![probe(Language::Go), probe(Language::Python)],
        reports: vec![report(Language::Go, go), report(Language::Python, python)],
    }
}

fn assert_reason(report: &WhyReport, reason: Reason, words: &[&str]) {
    assert_eq!(report.reason, reason, "{report:#?}");
    let text = format!(
        "{} {}",
        report.verdict,
        report.fix.clone().unwrap_or_default()
    );
    for word in words {
        assert!(text.contains(word), "{word:?} missing from: {text}");
    }
}

const OPTED_IN: &str = r#"{"ferrotel.io/instrument": "true"}"#;

#[test]
fn opted_in_and_attached_is_traced_naming_program_set_instrumentation_and_rule() {
    let report = judge(&inputs(
        "{}",
        OPTED_IN,
        "[go, python]",
        vec![process(
            41,
            "/app/web",
            Some(Language::Go),
            claimed(),
            Some(TracingOutcome::Traced {
                program_set: "go".into(),
            }),
        )],
        vec![process(
            41,
            "/app/web",
            None,
            DiscoveryOutcome::OtherLanguage {
                language: Language::Go,
            },
            None,
        )],
    ));
    assert!(report.traced);
    assert_reason(
        &report,
        Reason::Traced,
        &[
            "1 of 1 processes",
            "program set go",
            "obs/default",
            "annotation ferrotel.io/instrument on namespace shop",
        ],
    );
    assert_eq!(report.workload, "deploy/web");
    insta::assert_snapshot!(
        "why_traced",
        render(&report, Format::Table, &Style::plain())
    );
}

#[test]
fn a_pod_annotation_false_opts_out_even_in_an_opted_in_namespace() {
    let report = judge(&inputs(
        r#"{"ferrotel.io/instrument": "false"}"#,
        OPTED_IN,
        "[go, python]",
        vec![process(
            41,
            "/app/web",
            None,
            DiscoveryOutcome::OptedOut,
            None,
        )],
        vec![],
    ));
    assert!(!report.traced);
    assert_reason(
        &report,
        Reason::OptedOut,
        &[
            "opted out by pod annotation ferrotel.io/instrument",
            "remove it",
        ],
    );
}

#[test]
fn a_namespace_without_annotation_is_not_opted_in_and_the_fix_is_the_annotate_command() {
    let report = judge(&inputs(
        "{}",
        "{}",
        "[go, python]",
        vec![process(
            41,
            "/app/web",
            None,
            DiscoveryOutcome::NotOptedIn,
            None,
        )],
        vec![],
    ));
    assert_reason(
        &report,
        Reason::NotOptedIn,
        &[
            "namespace shop is not opted in",
            "kubectl annotate namespace shop ferrotel.io/instrument=true",
        ],
    );
    insta::assert_snapshot!(
        "why_not_opted_in",
        render(&report, Format::Table, &Style::plain())
    );
}

#[test]
fn a_python_pod_under_a_go_only_instrumentation_has_no_probe_for_its_language() {
    // The Go probe claims the pod (the language is unknown to the opt-in
    // rules), opens the executable and finds Python.
    let mut inputs = inputs(
        "{}",
        OPTED_IN,
        "[go]",
        vec![process(
            41,
            "/usr/bin/python3.11",
            Some(Language::Python),
            DiscoveryOutcome::OtherLanguage {
                language: Language::Python,
            },
            None,
        )],
        vec![],
    );
    inputs.probes.truncate(1);
    inputs.reports.truncate(1);
    let report = judge(&inputs);
    assert_reason(
        &report,
        Reason::LanguageNotEnabled,
        &[
            "its processes are python",
            "does not list python in spec.languages",
            "no python probe",
            "add python to spec.languages of Instrumentation obs/default",
        ],
    );
}

#[test]
fn an_enabled_language_whose_probe_does_not_run_on_the_node_says_which_daemonset() {
    let mut inputs = inputs(
        r#"{"ferrotel.io/language": "python"}"#,
        OPTED_IN,
        "[go, python]",
        vec![],
        vec![],
    );
    // Only the Go probe runs on node-1.
    inputs.probes.truncate(1);
    inputs.reports.truncate(1);
    let report = judge(&inputs);
    assert_reason(
        &report,
        Reason::NoProbeOnNode,
        &[
            "no python probe of obs/default runs on node node-1",
            "default-probe-python has 2 pods but none on node node-1",
            "tolerations",
        ],
    );
}

#[test]
fn a_binary_the_program_set_refused_is_named_with_the_reason_and_the_fix() {
    let report = judge(&inputs(
        "{}",
        OPTED_IN,
        "[go, python]",
        vec![process(
            41,
            "/pause",
            Some(Language::Go),
            claimed(),
            Some(TracingOutcome::Refused {
                program_set: "go".into(),
                reason: "no_functions".into(),
                message: "/pause has none of the functions the Go probes attach to".into(),
            }),
        )],
        vec![],
    ));
    assert!(!report.traced);
    assert_reason(
        &report,
        Reason::BinaryRefused,
        &[
            "the go probe refused /pause (pid 41)",
            "no_functions",
            "none of the functions",
            "net/http",
        ],
    );
    insta::assert_snapshot!(
        "why_refused",
        render(&report, Format::Table, &Style::plain())
    );
}

#[test]
fn an_ambiguous_true_is_an_opt_in_error_with_the_candidates() {
    let mut inputs = inputs("{}", OPTED_IN, "[go]", vec![], vec![]);
    let mut other = instrumentation("[go]");
    other.metadata.name = Some("second".into());
    inputs.instrumentations.push(other);
    let report = judge(&inputs);
    assert_reason(
        &report,
        Reason::OptInError,
        &["selects 2 Instrumentations", "obs/default, obs/second"],
    );
}

#[test]
fn a_pod_selector_that_does_not_match_is_named() {
    let mut inputs = inputs("{}", OPTED_IN, "[go]", vec![], vec![]);
    inputs.instrumentations[0].spec.selector =
        Some(serde_yaml::from_str("podSelector: {matchLabels: {tier: api}}").expect("selector"));
    let report = judge(&inputs);
    assert_reason(
        &report,
        Reason::PodSelectorMismatch,
        &[
            "podSelector does not match",
            "ferrotel.io/instrument=obs/default",
        ],
    );
}

#[test]
fn the_opentelemetry_operator_annotation_is_named_as_the_deciding_rule() {
    let report = judge(&inputs(
        r#"{"instrumentation.opentelemetry.io/inject-go": "obs/default"}"#,
        "{}",
        "[go]",
        vec![process(
            41,
            "/app/web",
            Some(Language::Go),
            claimed(),
            Some(TracingOutcome::Traced {
                program_set: "go".into(),
            }),
        )],
        vec![],
    ));
    assert_reason(
        &report,
        Reason::Traced,
        &["pod annotation instrumentation.opentelemetry.io/inject-go (OpenTelemetry Operator's"],
    );
}

#[test]
fn an_unreachable_probe_is_reported_not_guessed() {
    let mut inputs = inputs("{}", OPTED_IN, "[go]", vec![], vec![]);
    inputs.probes.truncate(1);
    inputs.reports = vec![Err("not allowed to get pods/proxy".into())];
    let report = judge(&inputs);
    assert_reason(
        &report,
        Reason::ProbeUnreachable,
        &["could not be asked", "pods/proxy"],
    );
}

#[test]
fn a_pod_without_a_node_is_not_scheduled() {
    let mut inputs = inputs("{}", OPTED_IN, "[go]", vec![], vec![]);
    inputs.pod.spec.as_mut().expect("spec").node_name = None;
    inputs.probes.clear();
    inputs.reports.clear();
    let report = judge(&inputs);
    assert_reason(&report, Reason::NotScheduled, &["not scheduled"]);
}

#[test]
fn the_json_answer_has_a_stable_reason_for_scripts() {
    let report = judge(&inputs("{}", "{}", "[go]", vec![], vec![]));
    let json: serde_json::Value =
        serde_json::from_str(&render(&report, Format::Json, &Style::plain())).expect("json");
    assert_eq!(json["reason"], "notOptedIn");
    assert_eq!(json["traced"], false);
    assert_eq!(json["optIn"][0]["language"], "go");
}
