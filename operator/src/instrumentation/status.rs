//! The status stage, pure like `build`: what is instrumented, computed from
//! the caches, and the Events that go with a change ([`report`]). The driver
//! hands in the namespaces and pods from its metadata-only reflectors and the
//! DaemonSets' observed status, and writes the result once, at the end of the
//! reconcile, only if it changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ferrotel_api::{
    conditions::{self, carry_transition_time, reasons},
    instrumentation::{
        InstrumentationStatus, LanguageStatus, MAX_LISTED_NAMESPACES, ResolvedExporter,
    },
    optin::{
        self, InstrumentationKey, Instrumentations, KeyValues, NamespaceView, OptInError, PodView,
    },
    probe_config::Language,
};
use k8s_openapi::{
    api::apps::v1::DaemonSetStatus,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};

use crate::runtime::report::{self, Report};

/// Labels and annotations of an object, as the opt-in rules read them:
/// borrowed from where the caches keep them.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub labels: &'a dyn KeyValues,
    pub annotations: &'a dyn KeyValues,
}

/// Matched namespaces and pods of one language.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LanguageMatch {
    pub namespaces: BTreeSet<String>,
    pub pods: u32,
}

/// What the opt-in rules say about one Instrumentation, cluster-wide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchSummary {
    pub languages: BTreeMap<Language, LanguageMatch>,
    /// Pods matched for at least one language (a pod whose language is not
    /// pinned is matched for every language and counted once here).
    pub pods: u32,
    /// Distinct opt-in errors that involve this Instrumentation (e.g. a
    /// namespace saying `"true"` while there are several), sorted.
    pub errors: Vec<OptInError>,
}

/// At most this many distinct opt-in problems are spelled out in a condition.
const MAX_REPORTED_ERRORS: usize = 3;

/// What the opt-in rules say about each Instrumentation in the set.
pub type MatchTable = HashMap<InstrumentationKey, MatchSummary>;

/// Applies the opt-in rules to every namespace and pod, for every
/// Instrumentation at once: one pass over the cluster whatever the number of
/// Instrumentations (a pass per Instrumentation made a round of pod events
/// cost 50 passes over 10,000 pods in the scale benchmark).
///
/// Each Instrumentation's summary has an entry for each of its languages,
/// and counts only what it claims for those. A namespace is matched for a
/// language when the namespace as a whole is claimed (even with no pods yet)
/// or when one of its pods is.
pub fn match_table<'a>(
    instrumentations: &Instrumentations,
    namespaces: impl IntoIterator<Item = Meta<'a>>,
    pods: impl IntoIterator<Item = Meta<'a>>,
) -> MatchTable {
    let serves: HashMap<&InstrumentationKey, &[Language]> = instrumentations.keys().collect();
    let mut languages: Vec<Language> = serves.values().flat_map(|l| l.iter().copied()).collect();
    languages.sort();
    languages.dedup();
    let namespaces: Vec<Meta<'a>> = namespaces.into_iter().collect();
    let namespaces: HashMap<&str, NamespaceView<'_>> = namespaces
        .iter()
        .map(|m| {
            (
                m.name,
                NamespaceView {
                    name: m.name,
                    labels: m.labels,
                    annotations: m.annotations,
                },
            )
        })
        .collect();
    let mut table: MatchTable = serves
        .iter()
        .map(|(&key, langs)| {
            let summary = MatchSummary {
                languages: langs
                    .iter()
                    .map(|&l| (l, LanguageMatch::default()))
                    .collect(),
                ..MatchSummary::default()
            };
            (key.clone(), summary)
        })
        .collect();
    // What `claimer` matched for `language`; none when it does not serve
    // that language (a namespace naming it claims for every language).
    fn entry<'t>(
        table: &'t mut MatchTable,
        claimer: &InstrumentationKey,
        language: Language,
    ) -> Option<&'t mut LanguageMatch> {
        table.get_mut(claimer)?.languages.get_mut(&language)
    }
    let mut errors: HashMap<InstrumentationKey, BTreeMap<String, OptInError>> = HashMap::new();
    let mut note = |error: OptInError, language| {
        for (key, langs) in &serves {
            if langs.contains(&language) && error.involves(key) {
                errors
                    .entry((*key).clone())
                    .or_default()
                    .entry(error.to_string())
                    .or_insert_with(|| error.clone());
            }
        }
    };
    for &language in &languages {
        for view in namespaces.values() {
            match optin::resolve_namespace(instrumentations, view, language) {
                Ok(Some((claimer, _))) => {
                    if let Some(matched) = entry(&mut table, &claimer, language) {
                        matched.namespaces.insert(view.name.to_owned());
                    }
                }
                Ok(None) => {}
                Err(error) => note(error, language),
            }
        }
    }
    let mut claimers: Vec<InstrumentationKey> = Vec::new();
    for pod in pods {
        // A pod whose namespace we have not seen yet (watch lag) is counted
        // on the next reconcile, which the namespace event triggers.
        let Some(namespace) = namespaces.get(pod.namespace) else {
            continue;
        };
        let view = PodView {
            labels: pod.labels,
            annotations: pod.annotations,
        };
        claimers.clear();
        for &language in &languages {
            match optin::resolve(instrumentations, namespace, &view, language, None) {
                Ok(decision) => {
                    let Some(claim) = decision.claim() else {
                        continue;
                    };
                    let claimer = &claim.instrumentation;
                    if let Some(matched) = entry(&mut table, claimer, language) {
                        matched.pods += 1;
                        matched.namespaces.insert(pod.namespace.to_owned());
                        if !claimers.contains(claimer) {
                            claimers.push(claimer.clone());
                        }
                    }
                }
                Err(error) => note(error, language),
            }
        }
        // A pod claimed for several languages is one pod.
        for key in &claimers {
            if let Some(summary) = table.get_mut(key) {
                summary.pods += 1;
            }
        }
    }
    for (key, errors) in errors {
        if let Some(summary) = table.get_mut(&key) {
            summary.errors = errors.into_values().collect();
        }
    }
    table
}

/// `key`'s summary in `table`, or an empty one for each of `languages` when
/// the table does not have it (an Instrumentation its ProbeClass refuses
/// claims nothing).
pub fn summary_of(
    table: &MatchTable,
    key: &InstrumentationKey,
    languages: &[Language],
) -> MatchSummary {
    table.get(key).cloned().unwrap_or_else(|| MatchSummary {
        languages: languages
            .iter()
            .map(|&l| (l, LanguageMatch::default()))
            .collect(),
        ..MatchSummary::default()
    })
}

/// A reason the Instrumentation cannot be (fully) served, found by an earlier
/// reconcile stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// One language's DaemonSet as observed.
#[derive(Debug, Clone)]
pub struct ObservedDaemonSet {
    pub language: Language,
    pub name: String,
    /// `None` when the DaemonSet does not exist (not created yet).
    pub status: Option<DaemonSetStatus>,
    /// `metadata.generation` of the DaemonSet, to tell a stale status.
    pub generation: Option<i64>,
    pub config_hash: Option<String>,
}

/// Everything the status is computed from.
#[derive(Debug, Clone)]
pub struct StatusInput<'a> {
    pub generation: Option<i64>,
    pub exporter: Option<ResolvedExporter>,
    pub probe_image: Option<String>,
    pub daemon_sets: Vec<ObservedDaemonSet>,
    pub matches: &'a MatchSummary,
    pub problem: Option<Problem>,
    pub previous: Option<&'a InstrumentationStatus>,
    pub now: Time,
}

fn rolled_out(ds: &ObservedDaemonSet) -> bool {
    let Some(status) = &ds.status else {
        return false;
    };
    let current =
        status.observed_generation.is_some() && status.observed_generation >= ds.generation;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    current
        && status.number_ready == status.desired_number_scheduled
        && updated == status.desired_number_scheduled
}

fn progress_text(ds: &ObservedDaemonSet) -> String {
    match &ds.status {
        None => format!("{}: not created", ds.language),
        Some(s) => format!(
            "{}: {}/{} ready, {}/{} updated",
            ds.language,
            s.number_ready,
            s.desired_number_scheduled,
            s.updated_number_scheduled.unwrap_or(0),
            s.desired_number_scheduled
        ),
    }
}

/// Computes the whole status. Condition timestamps are carried over from
/// `previous` when a condition's status did not change, so an unchanged
/// world yields an identical status (and no write).
pub fn compute(input: StatusInput<'_>) -> InstrumentationStatus {
    let StatusInput {
        generation,
        exporter,
        probe_image,
        daemon_sets,
        matches,
        problem,
        previous,
        now,
    } = input;

    let mut languages = Vec::new();
    let mut all_namespaces = BTreeSet::new();
    for ds in &daemon_sets {
        let matched = matches
            .languages
            .get(&ds.language)
            .cloned()
            .unwrap_or_default();
        all_namespaces.extend(matched.namespaces.iter().cloned());
        let status = ds.status.clone().unwrap_or_default();
        languages.push(LanguageStatus {
            language: ds.language,
            daemon_set: ds.name.clone(),
            desired: status.desired_number_scheduled,
            ready: status.number_ready,
            updated: status.updated_number_scheduled.unwrap_or(0),
            config_hash: ds.config_hash.clone(),
            matched_namespace_count: u32::try_from(matched.namespaces.len()).unwrap_or(u32::MAX),
            matched_namespaces: matched
                .namespaces
                .into_iter()
                .take(MAX_LISTED_NAMESPACES)
                .collect(),
            matched_pods: matched.pods,
        });
    }

    // With a problem nothing is applied, so a DaemonSet that does not exist
    // is not "rolling out": it waits for the fix (Degraded says which).
    let pending: Vec<String> = daemon_sets
        .iter()
        .filter(|ds| !rolled_out(ds) && (problem.is_none() || ds.status.is_some()))
        .map(progress_text)
        .collect();
    let progressing = if pending.is_empty() {
        (
            false,
            reasons::ROLLED_OUT,
            "every probe DaemonSet is rolled out".to_owned(),
        )
    } else {
        (true, reasons::ROLLING_OUT, pending.join("; "))
    };

    let degraded = match (&problem, matches.errors.first()) {
        (Some(p), _) => (true, p.reason, p.message.clone()),
        (None, Some(first)) => {
            let mut message: Vec<String> = matches
                .errors
                .iter()
                .take(MAX_REPORTED_ERRORS)
                .map(ToString::to_string)
                .collect();
            if matches.errors.len() > MAX_REPORTED_ERRORS {
                message.push(format!(
                    "and {} more",
                    matches.errors.len() - MAX_REPORTED_ERRORS
                ));
            }
            let reason = match first {
                OptInError::Ambiguous { .. } => reasons::AMBIGUOUS_INSTRUMENTATION,
                OptInError::InvalidSelector { .. } => reasons::INVALID_SPEC,
                _ => reasons::INVALID_ANNOTATION,
            };
            (true, reason, message.join("; "))
        }
        (None, None) => (false, reasons::AS_EXPECTED, "no problems found".to_owned()),
    };

    let ready = match &problem {
        Some(p) => (false, p.reason, p.message.clone()),
        None if progressing.0 => (false, reasons::ROLLING_OUT, progressing.2.clone()),
        None => (true, reasons::ROLLED_OUT, "every probe is ready".to_owned()),
    };

    let previous_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let condition = |type_: &str, (status, reason, message): (bool, &str, String)| {
        let fresh = Condition {
            type_: type_.to_owned(),
            status: if status { "True" } else { "False" }.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time: now.clone(),
        };
        carry_transition_time(previous_conditions, fresh)
    };
    let conditions = vec![
        condition(conditions::READY, ready),
        condition(conditions::PROGRESSING, progressing),
        condition(conditions::DEGRADED, degraded),
    ];

    InstrumentationStatus {
        observed_generation: generation,
        conditions,
        exporter,
        probe_image,
        matched_namespaces: u32::try_from(all_namespaces.len()).unwrap_or(u32::MAX),
        matched_pods: matches.pods,
        languages,
    }
}

/// The status and Events of one reconcile: a Normal Event naming what was
/// pruned, and a Warning when `Degraded` turns on or changes reason.
pub fn report(input: StatusInput<'_>, pruned: &[String]) -> Report<InstrumentationStatus> {
    let previous = input.previous;
    let status = compute(input);
    let mut events = Vec::new();
    if !pruned.is_empty() {
        events.push(report::normal(
            "Pruned",
            "Reconcile",
            format!("removed objects no longer wanted: {}", pruned.join(", ")),
        ));
    }
    let degraded =
        |s: &InstrumentationStatus| conditions::find(&s.conditions, conditions::DEGRADED).cloned();
    if let Some(now) = degraded(&status)
        && now.status == "True"
        && previous
            .and_then(degraded)
            .is_none_or(|before| before.status != now.status || before.reason != now.reason)
    {
        events.push(report::warning(&now.reason, "Reconcile", now.message));
    }
    Report { status, events }
}

#[cfg(test)]
mod tests;
