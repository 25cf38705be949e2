//! The opt-in rules: which Instrumentation (if any) claims a pod, for which
//! language. One pure function shared by the operator (matched counts in
//! `Instrumentation.status`) and the probe (whether to attach to a process).
//!
//! # The rules (user docs: `docs/opt-in.md`)
//!
//! 1. **Pod beats namespace.** The pod's `ferrotel.io/instrument` annotation
//!    decides if present; otherwise the namespace's; otherwise the
//!    Instrumentations' `selector.namespaceSelector`s.
//! 2. At each level `ferrotel.io/instrument` beats the OpenTelemetry Operator's
//!    `instrumentation.opentelemetry.io/inject-<language>`, which is read only
//!    for the language being resolved (a migration aid).
//! 3. Values: `"false"` opts out; `"<namespace>/<name>"` names an
//!    Instrumentation; `"true"` means *the one Instrumentation in the
//!    cluster* and is an [`OptInError::Ambiguous`] error if there are several.
//!    For the OpenTelemetry keys a bare `"<name>"` also works and means an
//!    Instrumentation in the annotated object's namespace, as it does there.
//! 4. An Instrumentation's `podSelector` filters pods opted in at namespace
//!    level; a pod's own annotation is more specific and wins over it.
//! 5. Language: `ferrotel.io/language` on the pod beats detection; a pod or
//!    process known to be another language is skipped; so is a claim by an
//!    Instrumentation that does not list the language.
//!
//! The function does no I/O and allocates little: a probe calls it for every
//! pod (and process) on its node, the operator for every pod in the cluster.
//! It reads labels and annotations through [`KeyValues`], so each caller
//! keeps them in whatever form suits it (the operator keeps sorted pairs for
//! 10,000 pods and would otherwise build two maps per pod per pass).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Expression, Selector};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::labels::{INSTRUMENT_ANNOTATION, LANGUAGE_ANNOTATION, OTEL_INJECT_ANNOTATION_PREFIX};
use crate::language::Language;

/// `namespace/name` of an Instrumentation.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct InstrumentationKey {
    pub namespace: String,
    pub name: String,
}

impl InstrumentationKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for InstrumentationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the opt-in rules need to know about one Instrumentation in the
/// cluster. The operator writes the full list into every probe's config
/// (`ProbeConfig::cluster_instrumentations`) because the probe may not read
/// Instrumentations itself (its RBAC is pods and namespaces only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub namespace: String,
    pub name: String,
    pub languages: Vec<Language>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
}

impl Candidate {
    pub fn key(&self) -> InstrumentationKey {
        InstrumentationKey::new(&self.namespace, &self.name)
    }
}

/// The Instrumentations in the cluster, with their selectors parsed once.
#[derive(Clone, Debug, Default)]
pub struct Instrumentations {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
struct Entry {
    key: InstrumentationKey,
    languages: Vec<Language>,
    namespace_selector: Option<Result<Requirements, String>>,
    pod_selector: Option<Result<Requirements, String>>,
}

/// A parsed label selector: every expression must match. Kept as kube's
/// expressions rather than its `Selector`, whose matching reads only a
/// `BTreeMap`.
#[derive(Clone, Debug)]
struct Requirements(Vec<Expression>);

impl Requirements {
    /// What kube's `SelectorExt::matches` decides, read through [`KeyValues`].
    fn matches(&self, labels: &dyn KeyValues) -> bool {
        self.0.iter().all(|expression| match expression {
            Expression::In(key, values) => labels.value(key).is_some_and(|v| values.contains(v)),
            Expression::NotIn(key, values) => labels.value(key).is_none_or(|v| !values.contains(v)),
            Expression::Exists(key) => labels.value(key).is_some(),
            Expression::DoesNotExist(key) => labels.value(key).is_none(),
            Expression::Equal(key, value) => labels.value(key) == Some(value.as_str()),
            Expression::NotEqual(key, value) => labels.value(key) != Some(value.as_str()),
        })
    }
}

/// Labels or annotations as the rules read them: a value by key. Callers
/// that keep objects in another form implement it to be read as they are.
pub trait KeyValues: fmt::Debug {
    /// The value of `key`, if present.
    fn value(&self, key: &str) -> Option<&str>;
}

impl KeyValues for BTreeMap<String, String> {
    fn value(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Instrumentations {
    /// Builds the set; invalid selectors are kept and reported as
    /// [`OptInError::InvalidSelector`] when they are needed.
    pub fn new(candidates: impl IntoIterator<Item = Candidate>) -> Self {
        fn parse(selector: Option<LabelSelector>) -> Option<Result<Requirements, String>> {
            selector.map(|s| {
                Selector::try_from(s)
                    .map(|s| Requirements(s.into_iter().collect()))
                    .map_err(|e| e.to_string())
            })
        }
        let mut entries: Vec<Entry> = candidates
            .into_iter()
            .map(|c| Entry {
                key: InstrumentationKey::new(c.namespace, c.name),
                languages: c.languages,
                namespace_selector: parse(c.namespace_selector),
                pod_selector: parse(c.pod_selector),
            })
            .collect();
        // Sorted so that error messages (candidate lists) are deterministic.
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        entries.dedup_by(|a, b| a.key == b.key);
        Self { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether any Instrumentation filters pods by label: only then do pod
    /// labels matter to [`resolve`] (callers that keep many pods can drop
    /// them otherwise).
    pub fn select_pods_by_label(&self) -> bool {
        self.entries.iter().any(|e| e.pod_selector.is_some())
    }

    /// Every Instrumentation in the set with the languages it serves.
    pub fn keys(&self) -> impl Iterator<Item = (&InstrumentationKey, &[Language])> {
        self.entries
            .iter()
            .map(|e| (&e.key, e.languages.as_slice()))
    }

    fn get(&self, key: &InstrumentationKey) -> Option<&Entry> {
        self.entries.iter().find(|e| &e.key == key)
    }
}

/// Labels and annotations of a Namespace.
#[derive(Clone, Copy, Debug)]
pub struct NamespaceView<'a> {
    pub name: &'a str,
    pub labels: &'a dyn KeyValues,
    pub annotations: &'a dyn KeyValues,
}

/// Labels and annotations of a Pod (or a pod template).
#[derive(Clone, Copy, Debug)]
pub struct PodView<'a> {
    pub labels: &'a dyn KeyValues,
    pub annotations: &'a dyn KeyValues,
}

/// Where an opt-in decision came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// An annotation on the pod (`key` is the annotation that decided).
    PodAnnotation { key: String },
    /// An annotation on the namespace.
    NamespaceAnnotation { namespace: String, key: String },
    /// No annotation; an Instrumentation's `selector.namespaceSelector` matched.
    NamespaceSelector { namespace: String },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::PodAnnotation { key } => write!(f, "pod annotation {key}"),
            Origin::NamespaceAnnotation { namespace, key } => {
                write!(f, "annotation {key} on namespace {namespace:?}")
            }
            Origin::NamespaceSelector { namespace } => {
                write!(
                    f,
                    "the namespaceSelector of several Instrumentations matching namespace {namespace:?}"
                )
            }
        }
    }
}

/// How the language of a claim is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LanguageSource {
    /// `ferrotel.io/language` on the pod.
    Annotation,
    /// The caller detected it (probe: ELF / interpreter inspection).
    Detected,
    /// Nobody knows yet: the claim holds for processes of this language, which
    /// the probe still has to detect (the operator counts such pods).
    Undetermined,
}

/// A pod is instrumented by `instrumentation` for `language`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub instrumentation: InstrumentationKey,
    pub language: Language,
    pub origin: Origin,
    pub language_source: LanguageSource,
}

/// Why a pod is not instrumented (not an error: nobody has to act).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// No annotation on pod or namespace and no namespaceSelector matches.
    NotOptedIn,
    /// `"false"` on the pod or its namespace.
    OptedOut { origin: Origin },
    /// The pod is pinned to, or was detected as, another language.
    OtherLanguage {
        language: Language,
        source: LanguageSource,
    },
    /// The claiming Instrumentation does not list this language.
    LanguageNotEnabled { instrumentation: InstrumentationKey },
    /// Opted in at namespace level, but the Instrumentation's podSelector does
    /// not match the pod's labels.
    PodSelectorMismatch { instrumentation: InstrumentationKey },
}

/// The outcome for one pod and language.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Claimed(Claim),
    Skipped(Skip),
}

impl Decision {
    /// The claim, if the pod is instrumented.
    pub fn claim(&self) -> Option<&Claim> {
        match self {
            Decision::Claimed(claim) => Some(claim),
            Decision::Skipped(_) => None,
        }
    }

    /// Whether `instrumentation` claims the pod.
    pub fn is_claimed_by(&self, instrumentation: &InstrumentationKey) -> bool {
        self.claim()
            .is_some_and(|c| &c.instrumentation == instrumentation)
    }
}

/// A misconfiguration a user has to fix; the pod is not instrumented.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OptInError {
    #[error(
        "{origin} selects {} Instrumentations ({}); name one as \"<namespace>/<name>\" or delete the extra ones",
        candidates.len(),
        join(candidates)
    )]
    Ambiguous {
        origin: Origin,
        candidates: Vec<InstrumentationKey>,
    },
    #[error(
        "{origin} says \"true\" but the cluster has no Instrumentation; create one or remove the annotation"
    )]
    NoInstrumentation { origin: Origin },
    #[error(
        "{origin} names Instrumentation {instrumentation} which does not exist; create it or fix the annotation"
    )]
    NotFound {
        origin: Origin,
        instrumentation: InstrumentationKey,
    },
    #[error(
        "{origin} has invalid value {value:?}; use \"true\", \"false\" or \"<namespace>/<instrumentation>\""
    )]
    InvalidValue { origin: Origin, value: String },
    #[error(
        "pod annotation {LANGUAGE_ANNOTATION} has invalid value {value:?}; use \"go\" or \"python\""
    )]
    InvalidLanguage { value: String },
    #[error(
        "Instrumentation {instrumentation} has an invalid {field}: {message}; fix spec.selector.{field}"
    )]
    InvalidSelector {
        instrumentation: InstrumentationKey,
        field: &'static str,
        message: String,
    },
}

impl OptInError {
    /// Static category for metric labels and condition reasons.
    pub fn category(&self) -> &'static str {
        match self {
            OptInError::Ambiguous { .. } => "AmbiguousInstrumentation",
            OptInError::NoInstrumentation { .. } => "NoInstrumentation",
            OptInError::NotFound { .. } => "InstrumentationNotFound",
            OptInError::InvalidValue { .. } | OptInError::InvalidLanguage { .. } => {
                "InvalidAnnotation"
            }
            OptInError::InvalidSelector { .. } => "InvalidSelector",
        }
    }

    /// The Instrumentations this error concerns (whose status should show it).
    pub fn involves(&self, key: &InstrumentationKey) -> bool {
        match self {
            OptInError::Ambiguous { candidates, .. } => candidates.contains(key),
            OptInError::InvalidSelector {
                instrumentation, ..
            } => instrumentation == key,
            OptInError::NoInstrumentation { .. }
            | OptInError::NotFound { .. }
            | OptInError::InvalidValue { .. }
            | OptInError::InvalidLanguage { .. } => false,
        }
    }
}

fn join(keys: &[InstrumentationKey]) -> String {
    keys.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A parsed opt-in annotation value.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    True,
    False,
    Named(InstrumentationKey),
}

/// Which annotation family a value came from; they differ only in whether a
/// bare name is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Ferrotel,
    OpenTelemetry,
}

fn parse_value(raw: &str, family: Family, object_namespace: &str) -> Option<Value> {
    let value = raw.trim();
    if value.eq_ignore_ascii_case("true") {
        return Some(Value::True);
    }
    if value.eq_ignore_ascii_case("false") {
        return Some(Value::False);
    }
    match value.split_once('/') {
        Some((namespace, name)) => (is_dns_label(namespace) && is_dns_name(name))
            .then(|| Value::Named(InstrumentationKey::new(namespace, name))),
        None if family == Family::OpenTelemetry && is_dns_name(value) => Some(Value::Named(
            InstrumentationKey::new(object_namespace, value),
        )),
        None => None,
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// The annotation that decides at one level (pod or namespace), if any.
fn level_annotation<'a>(
    annotations: &'a dyn KeyValues,
    otel_key: &str,
) -> Option<(Family, &'a str, String)> {
    if let Some(v) = annotations.value(INSTRUMENT_ANNOTATION) {
        return Some((Family::Ferrotel, v, INSTRUMENT_ANNOTATION.to_owned()));
    }
    annotations
        .value(otel_key)
        .map(|v| (Family::OpenTelemetry, v, otel_key.to_owned()))
}

/// The OpenTelemetry Operator annotation for `language`.
/// Whether the opt-in rules read the annotation `key` (callers that keep
/// many objects can drop the others).
pub fn reads_annotation(key: &str) -> bool {
    key == INSTRUMENT_ANNOTATION
        || key == LANGUAGE_ANNOTATION
        || key.starts_with(OTEL_INJECT_ANNOTATION_PREFIX)
}

pub fn otel_inject_annotation(language: Language) -> String {
    format!("{OTEL_INJECT_ANNOTATION_PREFIX}{language}")
}

/// The namespace-level decision (annotations, then namespaceSelectors),
/// ignoring pods: which Instrumentation claims the namespace as a whole.
///
/// `Ok(None)` means the namespace is not opted in (or opted out). Used by the
/// operator to list matched namespaces even before they have pods.
pub fn resolve_namespace(
    instrumentations: &Instrumentations,
    namespace: &NamespaceView<'_>,
    language: Language,
) -> Result<Option<(InstrumentationKey, Origin)>, OptInError> {
    match namespace_level(instrumentations, namespace, language)? {
        Level::Claimed(entry, origin) => Ok(Some((entry.key.clone(), origin))),
        Level::OptedOut(_) | Level::NotOptedIn => Ok(None),
    }
}

enum Level<'i> {
    Claimed(&'i Entry, Origin),
    OptedOut(Origin),
    NotOptedIn,
}

fn namespace_level<'i>(
    instrumentations: &'i Instrumentations,
    namespace: &NamespaceView<'_>,
    language: Language,
) -> Result<Level<'i>, OptInError> {
    let otel_key = otel_inject_annotation(language);
    if let Some((family, raw, key)) = level_annotation(namespace.annotations, &otel_key) {
        let origin = Origin::NamespaceAnnotation {
            namespace: namespace.name.to_owned(),
            key,
        };
        return by_value(instrumentations, raw, family, namespace.name, origin);
    }
    // No annotation: the namespaceSelectors decide.
    let mut matching = Vec::new();
    for entry in &instrumentations.entries {
        match &entry.namespace_selector {
            None => {}
            Some(Ok(selector)) if selector.matches(namespace.labels) => matching.push(entry),
            Some(Ok(_)) => {}
            Some(Err(message)) => {
                return Err(OptInError::InvalidSelector {
                    instrumentation: entry.key.clone(),
                    field: "namespaceSelector",
                    message: message.clone(),
                });
            }
        }
    }
    let origin = Origin::NamespaceSelector {
        namespace: namespace.name.to_owned(),
    };
    match matching.as_slice() {
        [] => Ok(Level::NotOptedIn),
        [one] => Ok(Level::Claimed(one, origin)),
        several => Err(OptInError::Ambiguous {
            origin,
            candidates: several.iter().map(|e| e.key.clone()).collect(),
        }),
    }
}

fn by_value<'i>(
    instrumentations: &'i Instrumentations,
    raw: &str,
    family: Family,
    object_namespace: &str,
    origin: Origin,
) -> Result<Level<'i>, OptInError> {
    let Some(value) = parse_value(raw, family, object_namespace) else {
        return Err(OptInError::InvalidValue {
            origin,
            value: raw.to_owned(),
        });
    };
    match value {
        Value::False => Ok(Level::OptedOut(origin)),
        Value::True => match instrumentations.entries.as_slice() {
            [] => Err(OptInError::NoInstrumentation { origin }),
            [one] => Ok(Level::Claimed(one, origin)),
            several => Err(OptInError::Ambiguous {
                origin,
                candidates: several.iter().map(|e| e.key.clone()).collect(),
            }),
        },
        Value::Named(key) => match instrumentations.get(&key) {
            Some(entry) => Ok(Level::Claimed(entry, origin)),
            None => Err(OptInError::NotFound {
                origin,
                instrumentation: key,
            }),
        },
    }
}

/// Decides whether, and by which Instrumentation, a pod is instrumented for
/// `language` (the probe's `--language`).
///
/// `detected` is the language of the process as the probe detected it;
/// `None` when unknown (the operator never knows it). The pod's
/// `ferrotel.io/language` annotation overrides it.
pub fn resolve(
    instrumentations: &Instrumentations,
    namespace: &NamespaceView<'_>,
    pod: &PodView<'_>,
    language: Language,
    detected: Option<Language>,
) -> Result<Decision, OptInError> {
    let otel_key = otel_inject_annotation(language);
    let (entry, origin, from_pod) = match level_annotation(pod.annotations, &otel_key) {
        Some((family, raw, key)) => {
            let origin = Origin::PodAnnotation { key };
            match by_value(instrumentations, raw, family, namespace.name, origin)? {
                Level::Claimed(entry, origin) => (entry, origin, true),
                Level::OptedOut(origin) => return Ok(Decision::Skipped(Skip::OptedOut { origin })),
                Level::NotOptedIn => return Ok(Decision::Skipped(Skip::NotOptedIn)),
            }
        }
        None => match namespace_level(instrumentations, namespace, language)? {
            Level::Claimed(entry, origin) => (entry, origin, false),
            Level::OptedOut(origin) => return Ok(Decision::Skipped(Skip::OptedOut { origin })),
            Level::NotOptedIn => return Ok(Decision::Skipped(Skip::NotOptedIn)),
        },
    };

    // Language only once the pod is claimed: a bad or foreign language
    // annotation on a pod nobody instruments is none of our business.
    let (pod_language, language_source) = match pod.annotations.value(LANGUAGE_ANNOTATION) {
        Some(raw) => {
            let parsed = raw
                .parse::<Language>()
                .map_err(|_| OptInError::InvalidLanguage {
                    value: raw.to_owned(),
                })?;
            (Some(parsed), LanguageSource::Annotation)
        }
        None => match detected {
            Some(d) => (Some(d), LanguageSource::Detected),
            None => (None, LanguageSource::Undetermined),
        },
    };
    if let Some(pinned) = pod_language
        && pinned != language
    {
        return Ok(Decision::Skipped(Skip::OtherLanguage {
            language: pinned,
            source: language_source,
        }));
    }
    if !entry.languages.contains(&language) {
        return Ok(Decision::Skipped(Skip::LanguageNotEnabled {
            instrumentation: entry.key.clone(),
        }));
    }
    if !from_pod {
        match &entry.pod_selector {
            None => {}
            Some(Ok(selector)) if selector.matches(pod.labels) => {}
            Some(Ok(_)) => {
                return Ok(Decision::Skipped(Skip::PodSelectorMismatch {
                    instrumentation: entry.key.clone(),
                }));
            }
            Some(Err(message)) => {
                return Err(OptInError::InvalidSelector {
                    instrumentation: entry.key.clone(),
                    field: "podSelector",
                    message: message.clone(),
                });
            }
        }
    }
    Ok(Decision::Claimed(Claim {
        instrumentation: entry.key.clone(),
        language,
        origin,
        language_source,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    const GO: Language = Language::Go;
    const PY: Language = Language::Python;
    const INJECT_GO: &str = "instrumentation.opentelemetry.io/inject-go";
    const INJECT_PY: &str = "instrumentation.opentelemetry.io/inject-python";
    const I: &str = INSTRUMENT_ANNOTATION;
    const L: &str = LANGUAGE_ANNOTATION;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn selector(pairs: &[(&str, &str)]) -> LabelSelector {
        LabelSelector {
            match_labels: Some(map(pairs)),
            match_expressions: None,
        }
    }

    fn cand(key: &str, languages: &[Language]) -> Candidate {
        let (namespace, name) = key.split_once('/').expect("test keys are namespace/name");
        Candidate {
            namespace: namespace.into(),
            name: name.into(),
            languages: languages.to_vec(),
            namespace_selector: None,
            pod_selector: None,
        }
    }

    /// The sets of Instrumentations the table uses.
    fn set(name: &str) -> Vec<Candidate> {
        match name {
            "none" => vec![],
            "one" => vec![cand("obs/default", &[GO, PY])],
            "two" => vec![
                cand("obs/default", &[GO, PY]),
                cand("team/other", &[GO, PY]),
            ],
            "go-only" => vec![cand("obs/go", &[GO])],
            "shop-local" => vec![cand("obs/default", &[GO, PY]), cand("shop/otel", &[GO, PY])],
            "sel" => vec![Candidate {
                namespace_selector: Some(selector(&[("env", "prod")])),
                pod_selector: Some(selector(&[("app", "web")])),
                ..cand("obs/sel", &[GO, PY])
            }],
            "two-sel" => vec![
                Candidate {
                    namespace_selector: Some(selector(&[("env", "prod")])),
                    ..cand("obs/a", &[GO])
                },
                Candidate {
                    namespace_selector: Some(LabelSelector::default()),
                    ..cand("obs/b", &[GO])
                },
            ],
            "sel-plus-plain" => vec![
                Candidate {
                    namespace_selector: Some(selector(&[("env", "prod")])),
                    ..cand("obs/sel", &[GO])
                },
                cand("obs/plain", &[GO]),
            ],
            "bad-sel" => vec![Candidate {
                namespace_selector: Some(LabelSelector {
                    match_labels: None,
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "env".into(),
                        operator: "Bogus".into(),
                        values: None,
                    }]),
                }),
                ..cand("obs/bad", &[GO])
            }],
            other => panic!("unknown instrumentation set {other}"),
        }
    }

    #[derive(Debug, PartialEq)]
    enum Want {
        /// Claimed by the Instrumentation, decided at "pod" / "ns" / "selector" level.
        Claimed(&'static str, &'static str),
        OptedOut(&'static str),
        NotOptedIn,
        OtherLanguage,
        LanguageNotEnabled,
        PodSelectorMismatch,
        /// An error of this category.
        Error(&'static str),
    }

    struct Case {
        name: &'static str,
        set: &'static str,
        ns: &'static [(&'static str, &'static str)],
        ns_labels: &'static [(&'static str, &'static str)],
        pod: &'static [(&'static str, &'static str)],
        pod_labels: &'static [(&'static str, &'static str)],
        language: Language,
        detected: Option<Language>,
        want: Want,
    }

    const BASE: Case = Case {
        name: "",
        set: "one",
        ns: &[],
        ns_labels: &[],
        pod: &[],
        pod_labels: &[],
        language: GO,
        detected: None,
        want: Want::NotOptedIn,
    };

    fn level(origin: &Origin) -> &'static str {
        match origin {
            Origin::PodAnnotation { .. } => "pod",
            Origin::NamespaceAnnotation { .. } => "ns",
            Origin::NamespaceSelector { .. } => "selector",
        }
    }

    fn run(case: &Case) -> Want {
        let instrumentations = Instrumentations::new(set(case.set));
        let (ns_annotations, ns_labels) = (map(case.ns), map(case.ns_labels));
        let (pod_annotations, pod_labels) = (map(case.pod), map(case.pod_labels));
        let namespace = NamespaceView {
            name: "shop",
            labels: &ns_labels,
            annotations: &ns_annotations,
        };
        let pod = PodView {
            labels: &pod_labels,
            annotations: &pod_annotations,
        };
        match resolve(
            &instrumentations,
            &namespace,
            &pod,
            case.language,
            case.detected,
        ) {
            Ok(Decision::Claimed(claim)) => {
                assert_eq!(
                    claim.language, case.language,
                    "{}: a claim is always for the probe's language",
                    case.name
                );
                let key: &'static str =
                    Box::leak(claim.instrumentation.to_string().into_boxed_str());
                Want::Claimed(key, level(&claim.origin))
            }
            Ok(Decision::Skipped(Skip::NotOptedIn)) => Want::NotOptedIn,
            Ok(Decision::Skipped(Skip::OptedOut { origin })) => Want::OptedOut(level(&origin)),
            Ok(Decision::Skipped(Skip::OtherLanguage { .. })) => Want::OtherLanguage,
            Ok(Decision::Skipped(Skip::LanguageNotEnabled { .. })) => Want::LanguageNotEnabled,
            Ok(Decision::Skipped(Skip::PodSelectorMismatch { .. })) => Want::PodSelectorMismatch,
            Err(error) => Want::Error(error.category()),
        }
    }

    #[test]
    fn the_annotations_the_rules_read_are_exactly_those_kept() {
        for kept in [I, L, "instrumentation.opentelemetry.io/inject-go"] {
            assert!(reads_annotation(kept), "{kept}");
        }
        for dropped in [
            "kubectl.kubernetes.io/last-applied-configuration",
            crate::labels::SERVICE_NAME_ANNOTATION,
            "instrumentation.opentelemetry.io/container-names",
        ] {
            assert!(!reads_annotation(dropped), "{dropped}");
        }
        // Whatever a pod keeps after the trim decides as the whole did.
        let annotations = map(&[
            (I, "obs/default"),
            (L, "python"),
            ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
        ]);
        let trimmed: BTreeMap<String, String> = annotations
            .iter()
            .filter(|(k, _)| reads_annotation(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let set = Instrumentations::new([cand("obs/default", &[Language::Python])]);
        let ns = NamespaceView {
            name: "shop",
            labels: &BTreeMap::new(),
            annotations: &BTreeMap::new(),
        };
        for annotations in [&annotations, &trimmed] {
            let pod = PodView {
                labels: &BTreeMap::new(),
                annotations,
            };
            let decision = resolve(&set, &ns, &pod, Language::Python, None).unwrap();
            assert!(decision.is_claimed_by(&InstrumentationKey::new("obs", "default")));
        }
        assert_eq!(trimmed.len(), 2);
    }

    #[test]
    fn selectors_match_as_kube_matches_them() {
        use kube::core::SelectorExt;
        let set = |values: &[&str]| values.iter().map(|v| (*v).to_owned()).collect();
        let expressions = [
            Expression::In("env".into(), set(&["prod", "dev"])),
            Expression::NotIn("env".into(), set(&["prod"])),
            Expression::Exists("env".into()),
            Expression::DoesNotExist("env".into()),
            Expression::Equal("env".into(), "prod".into()),
            Expression::NotEqual("env".into(), "prod".into()),
        ];
        let label_sets = [
            map(&[]),
            map(&[("env", "prod")]),
            map(&[("env", "dev")]),
            map(&[("env", "test")]),
            map(&[("other", "prod")]),
            map(&[("app", "web"), ("env", "prod")]),
        ];
        let mut decided = [0, 0];
        for labels in &label_sets {
            for expression in &expressions {
                let ours = Requirements(vec![expression.clone()]).matches(labels);
                assert_eq!(
                    ours,
                    expression.matches(labels),
                    "{expression} on {labels:?}"
                );
                decided[usize::from(ours)] += 1;
            }
            // All of them at once: every expression must hold.
            let all = Requirements(expressions.to_vec());
            let kube = Selector::from_iter(expressions.iter().cloned());
            assert_eq!(all.matches(labels), kube.matches(labels), "{labels:?}");
            assert!(
                Requirements(vec![]).matches(labels),
                "an empty selector selects all"
            );
        }
        assert!(
            decided.iter().all(|&n| n > 0),
            "the cases both match and do not match: {decided:?}"
        );
    }

    #[test]
    fn opt_in_table() {
        use Want::*;
        let cases = [
            // No opinion anywhere.
            Case {
                name: "no annotations means not instrumented",
                ..BASE
            },
            Case {
                name: "no instrumentation and no annotations is fine",
                set: "none",
                ..BASE
            },
            // Namespace level, ferrotel key.
            Case {
                name: "namespace true claims for the only instrumentation",
                ns: &[(I, "true")],
                want: Claimed("obs/default", "ns"),
                ..BASE
            },
            Case {
                name: "namespace false opts out",
                ns: &[(I, "false")],
                want: OptedOut("ns"),
                ..BASE
            },
            Case {
                name: "namespace names an instrumentation",
                ns: &[(I, "obs/default")],
                want: Claimed("obs/default", "ns"),
                ..BASE
            },
            Case {
                name: "namespace names a missing instrumentation",
                ns: &[(I, "obs/missing")],
                want: Error("InstrumentationNotFound"),
                ..BASE
            },
            Case {
                name: "namespace true with two instrumentations is ambiguous",
                set: "two",
                ns: &[(I, "true")],
                want: Error("AmbiguousInstrumentation"),
                ..BASE
            },
            Case {
                name: "namespace naming one of two is not ambiguous",
                set: "two",
                ns: &[(I, "team/other")],
                want: Claimed("team/other", "ns"),
                ..BASE
            },
            Case {
                name: "namespace true without any instrumentation",
                set: "none",
                ns: &[(I, "true")],
                want: Error("NoInstrumentation"),
                ..BASE
            },
            Case {
                name: "values are case-insensitive",
                ns: &[(I, "TRUE")],
                want: Claimed("obs/default", "ns"),
                ..BASE
            },
            Case {
                name: "values are trimmed",
                ns: &[(I, " false ")],
                want: OptedOut("ns"),
                ..BASE
            },
            Case {
                name: "yes is not a value",
                ns: &[(I, "yes")],
                want: Error("InvalidAnnotation"),
                ..BASE
            },
            Case {
                name: "empty is not a value",
                ns: &[(I, "")],
                want: Error("InvalidAnnotation"),
                ..BASE
            },
            Case {
                name: "a bare name is not accepted on the ferrotel key",
                ns: &[(I, "default")],
                want: Error("InvalidAnnotation"),
                ..BASE
            },
            Case {
                name: "three path segments are invalid",
                ns: &[(I, "a/b/c")],
                want: Error("InvalidAnnotation"),
                ..BASE
            },
            Case {
                name: "an empty namespace part is invalid",
                ns: &[(I, "/default")],
                want: Error("InvalidAnnotation"),
                ..BASE
            },
            Case {
                name: "upper-case names are invalid",
                ns: &[(I, "Obs/Default")],
                want: Error("InvalidAnnotation"),
                ..BASE
            },
            // Pod beats namespace.
            Case {
                name: "pod false beats namespace true",
                ns: &[(I, "true")],
                pod: &[(I, "false")],
                want: OptedOut("pod"),
                ..BASE
            },
            Case {
                name: "pod true beats namespace false",
                ns: &[(I, "false")],
                pod: &[(I, "true")],
                want: Claimed("obs/default", "pod"),
                ..BASE
            },
            Case {
                name: "pod true in an unannotated namespace",
                pod: &[(I, "true")],
                want: Claimed("obs/default", "pod"),
                ..BASE
            },
            Case {
                name: "pod name beats namespace name",
                set: "two",
                ns: &[(I, "obs/default")],
                pod: &[(I, "team/other")],
                want: Claimed("team/other", "pod"),
                ..BASE
            },
            Case {
                name: "pod naming one avoids the namespace's ambiguity",
                set: "two",
                ns: &[(I, "true")],
                pod: &[(I, "obs/default")],
                want: Claimed("obs/default", "pod"),
                ..BASE
            },
            Case {
                name: "pod true with two instrumentations is ambiguous",
                set: "two",
                pod: &[(I, "true")],
                want: Error("AmbiguousInstrumentation"),
                ..BASE
            },
            Case {
                name: "invalid pod value is an error even if the namespace opts in",
                ns: &[(I, "true")],
                pod: &[(I, "maybe")],
                want: Error("InvalidAnnotation"),
                ..BASE
            },
            Case {
                name: "pod opt-out hides an invalid namespace value",
                ns: &[(I, "maybe")],
                pod: &[(I, "false")],
                want: OptedOut("pod"),
                ..BASE
            },
            // OpenTelemetry Operator compatibility.
            Case {
                name: "otel inject-go true on the namespace claims for go",
                ns: &[(INJECT_GO, "true")],
                want: Claimed("obs/default", "ns"),
                ..BASE
            },
            Case {
                name: "otel inject-go is ignored by the python probe",
                ns: &[(INJECT_GO, "true")],
                language: PY,
                want: NotOptedIn,
                ..BASE
            },
            Case {
                name: "otel inject-python false opts out for python",
                ns: &[(INJECT_PY, "false")],
                language: PY,
                want: OptedOut("ns"),
                ..BASE
            },
            Case {
                name: "otel bare name means the annotated namespace",
                set: "shop-local",
                ns: &[(INJECT_GO, "otel")],
                want: Claimed("shop/otel", "ns"),
                ..BASE
            },
            Case {
                name: "otel bare name that does not exist there",
                ns: &[(INJECT_GO, "otel")],
                want: Error("InstrumentationNotFound"),
                ..BASE
            },
            Case {
                name: "otel namespace/name form",
                set: "two",
                ns: &[(INJECT_GO, "team/other")],
                want: Claimed("team/other", "ns"),
                ..BASE
            },
            Case {
                name: "otel pod bare name means the pod's namespace",
                set: "shop-local",
                pod: &[(INJECT_PY, "otel")],
                language: PY,
                want: Claimed("shop/otel", "pod"),
                ..BASE
            },
            Case {
                name: "ferrotel key beats otel key on the same object",
                ns: &[(I, "false"), (INJECT_GO, "true")],
                want: OptedOut("ns"),
                ..BASE
            },
            Case {
                name: "otel pod opt-out beats ferrotel namespace opt-in",
                ns: &[(I, "true")],
                pod: &[(INJECT_GO, "false")],
                want: OptedOut("pod"),
                ..BASE
            },
            Case {
                name: "otel go opt-out on a pod does not stop the python probe",
                ns: &[(I, "true")],
                pod: &[(INJECT_GO, "false")],
                language: PY,
                want: Claimed("obs/default", "ns"),
                ..BASE
            },
            Case {
                name: "otel invalid value",
                ns: &[(INJECT_GO, "a/b/c")],
                want: Error("InvalidAnnotation"),
                ..BASE
            },
            // Language.
            Case {
                name: "language annotation for another language skips",
                ns: &[(I, "true")],
                pod: &[(L, "python")],
                want: OtherLanguage,
                ..BASE
            },
            Case {
                name: "language annotation overrides detection",
                ns: &[(I, "true")],
                pod: &[(L, "go")],
                detected: Some(PY),
                want: Claimed("obs/default", "ns"),
                ..BASE
            },
            Case {
                name: "detected other language skips",
                ns: &[(I, "true")],
                detected: Some(PY),
                want: OtherLanguage,
                ..BASE
            },
            Case {
                name: "detected own language claims",
                ns: &[(I, "true")],
                detected: Some(GO),
                want: Claimed("obs/default", "ns"),
                ..BASE
            },
            Case {
                name: "invalid language annotation on a claimed pod is an error",
                ns: &[(I, "true")],
                pod: &[(L, "rust")],
                want: Error("InvalidAnnotation"),
                ..BASE
            },
            Case {
                name: "invalid language annotation on an unclaimed pod is ignored",
                pod: &[(L, "rust")],
                want: NotOptedIn,
                ..BASE
            },
            Case {
                name: "language spelled golang is accepted",
                ns: &[(I, "true")],
                pod: &[(L, "golang")],
                want: Claimed("obs/default", "ns"),
                ..BASE
            },
            Case {
                name: "instrumentation without the language skips",
                set: "go-only",
                ns: &[(I, "true")],
                language: PY,
                want: LanguageNotEnabled,
                ..BASE
            },
            Case {
                name: "instrumentation with the language claims",
                set: "go-only",
                ns: &[(I, "true")],
                want: Claimed("obs/go", "ns"),
                ..BASE
            },
            // Selectors.
            Case {
                name: "namespace selector opts in without annotation",
                set: "sel",
                ns_labels: &[("env", "prod")],
                pod_labels: &[("app", "web")],
                want: Claimed("obs/sel", "selector"),
                ..BASE
            },
            Case {
                name: "namespace selector not matching",
                set: "sel",
                ns_labels: &[("env", "dev")],
                pod_labels: &[("app", "web")],
                want: NotOptedIn,
                ..BASE
            },
            Case {
                name: "pod selector filters namespace opt-in by selector",
                set: "sel",
                ns_labels: &[("env", "prod")],
                pod_labels: &[("app", "api")],
                want: PodSelectorMismatch,
                ..BASE
            },
            Case {
                name: "pod selector filters namespace opt-in by annotation",
                set: "sel",
                ns: &[(I, "true")],
                pod_labels: &[("app", "api")],
                want: PodSelectorMismatch,
                ..BASE
            },
            Case {
                name: "pod annotation beats the pod selector",
                set: "sel",
                pod: &[(I, "obs/sel")],
                pod_labels: &[("app", "api")],
                want: Claimed("obs/sel", "pod"),
                ..BASE
            },
            Case {
                name: "namespace annotation false beats a matching selector",
                set: "sel",
                ns: &[(I, "false")],
                ns_labels: &[("env", "prod")],
                pod_labels: &[("app", "web")],
                want: OptedOut("ns"),
                ..BASE
            },
            Case {
                name: "two matching namespace selectors are ambiguous",
                set: "two-sel",
                ns_labels: &[("env", "prod")],
                want: Error("AmbiguousInstrumentation"),
                ..BASE
            },
            Case {
                name: "one of two namespace selectors matching",
                set: "two-sel",
                ns_labels: &[("env", "dev")],
                want: Claimed("obs/b", "selector"),
                ..BASE
            },
            Case {
                name: "a selector does not make true unambiguous",
                set: "sel-plus-plain",
                ns: &[(I, "true")],
                ns_labels: &[("env", "prod")],
                want: Error("AmbiguousInstrumentation"),
                ..BASE
            },
            Case {
                name: "selector instrumentation next to a plain one",
                set: "sel-plus-plain",
                ns_labels: &[("env", "prod")],
                want: Claimed("obs/sel", "selector"),
                ..BASE
            },
            Case {
                name: "invalid selector is reported when consulted",
                set: "bad-sel",
                ns_labels: &[("env", "prod")],
                want: Error("InvalidSelector"),
                ..BASE
            },
            Case {
                name: "invalid selector is not consulted when an annotation decides",
                set: "bad-sel",
                ns: &[(I, "obs/bad")],
                want: Claimed("obs/bad", "ns"),
                ..BASE
            },
        ];
        let mut failures = Vec::new();
        for case in &cases {
            let got = run(case);
            if got != case.want {
                failures.push(format!(
                    "{}: want {:?}, got {:?}",
                    case.name, case.want, got
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    /// Every combination of ferrotel-key values on pod and namespace: the
    /// pod's value decides whenever it is present.
    #[test]
    fn pod_value_decides_for_every_namespace_value() {
        let values: [Option<&'static str>; 4] =
            [None, Some("true"), Some("false"), Some("obs/default")];
        for pod_value in values {
            for ns_value in values {
                let pod: &'static [(&str, &str)] = match pod_value {
                    Some(v) => Box::leak(Box::new([(I, v)])),
                    None => &[],
                };
                let ns: &'static [(&str, &str)] = match ns_value {
                    Some(v) => Box::leak(Box::new([(I, v)])),
                    None => &[],
                };
                let effective = pod_value
                    .map(|v| (v, "pod"))
                    .or(ns_value.map(|v| (v, "ns")));
                let want = match effective {
                    None => Want::NotOptedIn,
                    Some(("false", lvl)) => Want::OptedOut(lvl),
                    Some((_, lvl)) => Want::Claimed("obs/default", lvl),
                };
                let case = Case {
                    name: "combination",
                    pod,
                    ns,
                    want,
                    ..BASE
                };
                assert_eq!(
                    run(&case),
                    case.want,
                    "pod {pod_value:?}, namespace {ns_value:?}"
                );
            }
        }
    }

    #[test]
    fn claim_reports_how_the_language_is_known() {
        let instrumentations = Instrumentations::new(set("one"));
        let ns_annotations = map(&[(I, "true")]);
        let empty = BTreeMap::new();
        let namespace = NamespaceView {
            name: "shop",
            labels: &empty,
            annotations: &ns_annotations,
        };
        let cases = [
            (map(&[]), None, LanguageSource::Undetermined),
            (map(&[]), Some(GO), LanguageSource::Detected),
            (map(&[(L, "go")]), Some(PY), LanguageSource::Annotation),
        ];
        for (annotations, detected, want) in cases {
            let pod = PodView {
                labels: &empty,
                annotations: &annotations,
            };
            let decision =
                resolve(&instrumentations, &namespace, &pod, GO, detected).expect("claims");
            let claim = decision.claim().expect("claimed");
            assert_eq!(
                claim.language_source, want,
                "annotations {annotations:?}, detected {detected:?}"
            );
            assert!(decision.is_claimed_by(&InstrumentationKey::new("obs", "default")));
            assert!(!decision.is_claimed_by(&InstrumentationKey::new("obs", "other")));
        }
    }

    #[test]
    fn ambiguity_error_names_every_candidate_and_the_fix() {
        let instrumentations = Instrumentations::new(set("two"));
        let ns_annotations = map(&[(I, "true")]);
        let empty = BTreeMap::new();
        let namespace = NamespaceView {
            name: "shop",
            labels: &empty,
            annotations: &ns_annotations,
        };
        let pod = PodView {
            labels: &empty,
            annotations: &empty,
        };
        let error = resolve(&instrumentations, &namespace, &pod, GO, None).expect_err("ambiguous");
        let message = error.to_string();
        assert_eq!(
            message,
            "annotation ferrotel.io/instrument on namespace \"shop\" selects 2 Instrumentations (obs/default, team/other); name one as \"<namespace>/<name>\" or delete the extra ones"
        );
        assert!(
            error.involves(&InstrumentationKey::new("team", "other")),
            "both candidates are involved"
        );
        assert!(
            !error.involves(&InstrumentationKey::new("team", "third")),
            "others are not"
        );
    }

    #[test]
    fn namespace_resolution_ignores_pods() {
        let instrumentations = Instrumentations::new(set("sel"));
        let empty = BTreeMap::new();
        let prod = map(&[("env", "prod")]);
        let opted_out = map(&[(I, "false")]);
        let by_selector = NamespaceView {
            name: "shop",
            labels: &prod,
            annotations: &empty,
        };
        let (key, origin) = resolve_namespace(&instrumentations, &by_selector, GO)
            .expect("valid")
            .expect(
                "the selector claims the namespace even though the podSelector matches no pod yet",
            );
        assert_eq!(key, InstrumentationKey::new("obs", "sel"));
        assert_eq!(
            origin,
            Origin::NamespaceSelector {
                namespace: "shop".into()
            }
        );
        let out = NamespaceView {
            name: "shop",
            labels: &prod,
            annotations: &opted_out,
        };
        assert_eq!(
            resolve_namespace(&instrumentations, &out, GO).expect("valid"),
            None,
            "opted out"
        );
        let plain = NamespaceView {
            name: "shop",
            labels: &empty,
            annotations: &empty,
        };
        assert_eq!(
            resolve_namespace(&instrumentations, &plain, GO).expect("valid"),
            None,
            "not opted in"
        );
    }

    #[test]
    fn duplicate_candidates_are_one_instrumentation() {
        let instrumentations =
            Instrumentations::new([cand("obs/default", &[GO]), cand("obs/default", &[GO])]);
        assert_eq!(
            instrumentations.len(),
            1,
            "the same key listed twice must not make \"true\" ambiguous"
        );
    }

    #[test]
    fn candidates_round_trip_through_the_probe_config_format() {
        let original = set("sel");
        let yaml = serde_yaml::to_string(&original).expect("serializes");
        let parsed: Vec<Candidate> = serde_yaml::from_str(&yaml).expect("parses");
        assert_eq!(parsed, original);
    }
}
