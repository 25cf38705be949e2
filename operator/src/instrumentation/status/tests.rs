use super::*;
use ferrotel_api::{labels::INSTRUMENT_ANNOTATION, optin::Candidate, probe_config::OtlpProtocol};
use k8s_openapi::jiff::Timestamp;

const GO: Language = Language::Go;
const PY: Language = Language::Python;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn cand(namespace: &str, name: &str) -> Candidate {
    Candidate {
        namespace: namespace.into(),
        name: name.into(),
        languages: vec![GO, PY],
        namespace_selector: None,
        pod_selector: None,
    }
}

/// The labels of every object in [`World`].
static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// A tiny cluster: namespaces with annotations, pods with annotations.
struct World {
    namespaces: Vec<(String, BTreeMap<String, String>)>,
    pods: Vec<(String, String, BTreeMap<String, String>)>,
}

impl World {
    fn new() -> Self {
        Self {
            namespaces: vec![],
            pods: vec![],
        }
    }
    fn ns(mut self, name: &str, annotations: &[(&str, &str)]) -> Self {
        self.namespaces.push((name.into(), map(annotations)));
        self
    }
    fn pod(mut self, namespace: &str, name: &str, annotations: &[(&str, &str)]) -> Self {
        self.pods
            .push((namespace.into(), name.into(), map(annotations)));
        self
    }
    fn summary(&self, key: &InstrumentationKey, candidates: Vec<Candidate>) -> MatchSummary {
        let instrumentations = Instrumentations::new(candidates);
        let table = match_table(
            &instrumentations,
            self.namespaces.iter().map(|(n, a)| Meta {
                namespace: "",
                name: n,
                labels: &NO_LABELS,
                annotations: a,
            }),
            self.pods.iter().map(|(ns, n, a)| Meta {
                namespace: ns,
                name: n,
                labels: &NO_LABELS,
                annotations: a,
            }),
        );
        summary_of(&table, key, &[GO, PY])
    }
}

#[test]
fn annotated_namespace_and_its_pods_are_matched_and_opted_out_pods_are_not() {
    let key = InstrumentationKey::new("obs", "default");
    let world = World::new()
        .ns("shop", &[(INSTRUMENT_ANNOTATION, "true")])
        .ns("empty-optin", &[(INSTRUMENT_ANNOTATION, "obs/default")])
        .ns("other", &[])
        .pod("shop", "a", &[])
        .pod("shop", "b", &[])
        .pod("shop", "c", &[(INSTRUMENT_ANNOTATION, "false")])
        .pod("other", "d", &[])
        .pod("other", "e", &[(INSTRUMENT_ANNOTATION, "true")])
        .pod("shop", "f", &[("ferrotel.io/language", "python")]);
    let summary = world.summary(&key, vec![cand("obs", "default")]);
    let go = &summary.languages[&GO];
    assert_eq!(
        go.pods, 3,
        "a, b and e (f is pinned to python, c opted out)"
    );
    assert_eq!(
        go.namespaces.iter().map(String::as_str).collect::<Vec<_>>(),
        ["empty-optin", "other", "shop"],
        "opted-in namespaces count even without pods; 'other' has an opted-in pod"
    );
    assert_eq!(summary.languages[&PY].pods, 4, "a, b, e and f");
    assert_eq!(summary.pods, 4, "distinct pods, any language");
    assert!(
        summary.errors.is_empty(),
        "no problems: {:?}",
        summary.errors
    );
}

#[test]
fn true_with_two_instrumentations_is_reported_once_to_both() {
    let world = World::new()
        .ns("shop", &[(INSTRUMENT_ANNOTATION, "true")])
        .pod("shop", "a", &[])
        .pod("shop", "b", &[]);
    for key in [
        InstrumentationKey::new("obs", "default"),
        InstrumentationKey::new("team", "other"),
    ] {
        let summary = world.summary(&key, vec![cand("obs", "default"), cand("team", "other")]);
        assert_eq!(
            summary.pods, 0,
            "{key}: nothing is instrumented while ambiguous"
        );
        assert_eq!(
            summary.errors.len(),
            1,
            "{key}: the same problem on many pods is one error: {:?}",
            summary.errors
        );
        assert_eq!(summary.errors[0].category(), "AmbiguousInstrumentation");
    }
    let bystander = world.summary(
        &InstrumentationKey::new("x", "y"),
        vec![cand("obs", "default"), cand("team", "other")],
    );
    assert!(
        bystander.errors.is_empty(),
        "an uninvolved Instrumentation is not blamed"
    );
}

#[test]
fn one_table_gives_each_instrumentation_only_its_own_languages_and_pods() {
    let only = |namespace: &str, name: &str, language| Candidate {
        languages: vec![language],
        ..cand(namespace, name)
    };
    let (go_key, py_key, team_key) = (
        InstrumentationKey::new("obs", "go"),
        InstrumentationKey::new("obs", "py"),
        InstrumentationKey::new("team", "both"),
    );
    // A named Instrumentation claims for every language; each counts only
    // what it claims for the languages it serves.
    let world = World::new()
        .ns("shop", &[(INSTRUMENT_ANNOTATION, "obs/go")])
        .ns("pyshop", &[(INSTRUMENT_ANNOTATION, "obs/py")])
        .ns("team-ns", &[(INSTRUMENT_ANNOTATION, "team/both")])
        .pod("shop", "a", &[])
        .pod("shop", "b", &[(INSTRUMENT_ANNOTATION, "obs/py")])
        .pod("shop", "e", &[("ferrotel.io/language", "python")])
        .pod("pyshop", "c", &[])
        .pod("team-ns", "d", &[]);
    let candidates = vec![
        only("obs", "go", GO),
        only("obs", "py", PY),
        cand("team", "both"),
    ];
    let go = world.summary(&go_key, candidates.clone());
    assert_eq!(go.languages.keys().copied().collect::<Vec<_>>(), [GO]);
    assert_eq!(go.languages[&GO].pods, 1, "a (b names obs/py)");
    assert_eq!(
        go.pods, 1,
        "e, claimed by obs/go for python only, is not its pod"
    );
    let py = world.summary(&py_key, candidates.clone());
    assert_eq!(py.languages.keys().copied().collect::<Vec<_>>(), [PY]);
    assert_eq!(py.languages[&PY].pods, 2, "b and c");
    assert_eq!(
        py.languages[&PY].namespaces.iter().collect::<Vec<_>>(),
        ["pyshop", "shop"]
    );
    assert_eq!(py.pods, 2);
    let team = world.summary(&team_key, candidates);
    assert_eq!(team.languages[&GO].pods, 1);
    assert_eq!(team.languages[&PY].pods, 1);
    assert_eq!(team.pods, 1, "d, counted once for two languages");
    for summary in [&go, &py, &team] {
        assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    }
    assert_eq!(
        team.languages[&GO].namespaces.iter().collect::<Vec<_>>(),
        ["team-ns"]
    );
}

fn ds(language: Language, desired: i32, ready: i32, updated: i32) -> ObservedDaemonSet {
    ObservedDaemonSet {
        language,
        name: format!("default-probe-{language}"),
        status: Some(DaemonSetStatus {
            desired_number_scheduled: desired,
            number_ready: ready,
            updated_number_scheduled: Some(updated),
            observed_generation: Some(1),
            ..DaemonSetStatus::default()
        }),
        generation: Some(1),
        config_hash: Some("abc".into()),
    }
}

fn time(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).expect("valid time"))
}

fn input<'a>(
    matches: &'a MatchSummary,
    daemon_sets: Vec<ObservedDaemonSet>,
    previous: Option<&'a InstrumentationStatus>,
    now: i64,
) -> StatusInput<'a> {
    StatusInput {
        generation: Some(2),
        exporter: Some(ResolvedExporter {
            endpoint: "http://otel:4317".into(),
            protocol: OtlpProtocol::Grpc,
        }),
        probe_image: Some("probe:1".into()),
        daemon_sets,
        matches,
        problem: None,
        previous,
        now: time(now),
    }
}

fn cond<'a>(status: &'a InstrumentationStatus, type_: &str) -> &'a Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("condition {type_} missing"))
}

#[test]
fn rolled_out_probes_are_ready_and_not_progressing() {
    let matches = MatchSummary::default();
    let status = compute(input(
        &matches,
        vec![ds(GO, 3, 3, 3), ds(PY, 3, 3, 3)],
        None,
        100,
    ));
    assert_eq!(cond(&status, "Ready").status, "True");
    assert_eq!(cond(&status, "Progressing").status, "False");
    assert_eq!(cond(&status, "Degraded").status, "False");
    assert_eq!(status.languages[1].desired, 3);
    assert_eq!(status.observed_generation, Some(2));
}

#[test]
fn rollout_in_progress_says_how_far_it_is() {
    let matches = MatchSummary::default();
    let status = compute(input(&matches, vec![ds(GO, 3, 1, 2)], None, 100));
    let progressing = cond(&status, "Progressing");
    assert_eq!(progressing.status, "True");
    assert_eq!(progressing.message, "go: 1/3 ready, 2/3 updated");
    assert_eq!(cond(&status, "Ready").status, "False");
}

#[test]
fn unchanged_world_gives_identical_status_so_nothing_is_written() {
    let matches = MatchSummary::default();
    let first = compute(input(&matches, vec![ds(GO, 3, 3, 3)], None, 100));
    let second = compute(input(&matches, vec![ds(GO, 3, 3, 3)], Some(&first), 200));
    assert_eq!(
        first, second,
        "timestamps of unchanged conditions are carried over"
    );
    let third = compute(input(&matches, vec![ds(GO, 3, 2, 3)], Some(&second), 300));
    assert_eq!(
        cond(&third, "Ready").last_transition_time,
        time(300),
        "a flipped condition gets a new timestamp"
    );
    assert_eq!(
        cond(&third, "Degraded").last_transition_time,
        time(100),
        "an unchanged one keeps its timestamp"
    );
}

#[test]
fn a_problem_makes_it_degraded_and_not_ready() {
    let matches = MatchSummary::default();
    let mut i = input(&matches, vec![], None, 100);
    i.problem = Some(Problem {
        reason: reasons::COLLECTOR_NOT_FOUND,
        message: "collector missing".into(),
    });
    let status = compute(i);
    let degraded = cond(&status, "Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "CollectorNotFound")
    );
    assert_eq!(cond(&status, "Ready").status, "False");
    assert_eq!(
        cond(&status, "Progressing").status,
        "False",
        "nothing rolls out while the problem lasts"
    );
}

#[test]
fn degraded_turning_on_or_changing_reason_is_one_warning_event_and_staying_is_none() {
    let matches = MatchSummary::default();
    let problem = |reason: &'static str| Problem {
        reason,
        message: format!("{reason} details"),
    };
    let mut first = input(&matches, vec![], None, 100);
    first.problem = Some(problem(reasons::COLLECTOR_NOT_FOUND));
    let first = report(first, &[]);
    let warnings: Vec<(&str, &str)> = first
        .events
        .iter()
        .map(|e| (e.reason.as_str(), e.note.as_str()))
        .collect();
    assert_eq!(
        warnings,
        [("CollectorNotFound", "CollectorNotFound details")],
        "the first problem is announced"
    );

    let mut same = input(&matches, vec![], Some(&first.status), 200);
    same.problem = Some(problem(reasons::COLLECTOR_NOT_FOUND));
    assert!(
        report(same, &[]).events.is_empty(),
        "a problem that stays is not announced on every reconcile"
    );

    let mut other = input(&matches, vec![], Some(&first.status), 300);
    other.problem = Some(problem(reasons::COLLECTOR_HAS_NO_ENDPOINT));
    let other = report(other, &[]);
    assert_eq!(
        other
            .events
            .iter()
            .map(|e| e.reason.as_str())
            .collect::<Vec<_>>(),
        ["CollectorHasNoEndpoint"],
        "a new reason is announced"
    );

    let healed = report(
        input(&matches, vec![ds(GO, 1, 1, 1)], Some(&other.status), 400),
        &["DaemonSet default-probe-python".to_owned()],
    );
    let events: Vec<(&str, &str)> = healed
        .events
        .iter()
        .map(|e| (e.reason.as_str(), e.note.as_str()))
        .collect();
    assert_eq!(
        events,
        [(
            "Pruned",
            "removed objects no longer wanted: DaemonSet default-probe-python"
        )],
        "healing is not a warning; pruning is said once"
    );
}
