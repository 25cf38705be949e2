//! Status conditions shared by every Ferrotel kind: type and reason
//! constants, and helpers that keep `lastTransitionTime` stable so a status
//! is only rewritten when something really changed.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

// Condition types. Each kind reports the ones that describe it; the docs of
// the kinds (`docs/telemetrycollector.md`, `docs/instrumentation.md`) list
// them for users, and ArgoCD's health checks read them.

/// The rendered collector config passed validation (or why not).
/// TelemetryCollector.
pub const CONFIG_VALID: &str = "ConfigValid";
/// The workload has as many ready pods as desired. TelemetryCollector.
pub const AVAILABLE: &str = "Available";
/// A rollout is in progress (a new config or image is being rolled out).
/// Both kinds.
pub const PROGRESSING: &str = "Progressing";
/// The operator could not apply what it built (API error, RBAC...).
/// TelemetryCollector.
pub const RECONCILED: &str = "Reconciled";
/// Every probe DaemonSet is rolled out and ready, and the exporter resolved.
/// Instrumentation.
pub const READY: &str = "Ready";
/// Something the user must fix: unresolvable collector, ambiguous opt-in,
/// invalid spec, a child the API server refused. Instrumentation.
pub const DEGRADED: &str = "Degraded";

/// Condition reasons (CamelCase, as the API requires). A bounded set: they
/// are also Event reasons.
pub mod reasons {
    /// Validation passed, including the component check against the distribution.
    pub const VALID: &str = "Valid";
    /// Validation passed, but the component check was skipped because a
    /// custom image was set whose component list the operator cannot know.
    pub const VALID_CUSTOM_IMAGE: &str = "ValidComponentsUnchecked";
    /// The config is invalid; the previous config keeps running.
    pub const INVALID_CONFIG: &str = "InvalidConfig";
    /// `spec.managementState: unmanaged`: the operator writes nothing.
    pub const UNMANAGED: &str = "Unmanaged";
    /// All desired pods are ready.
    pub const REPLICAS_READY: &str = "ReplicasReady";
    /// Some desired pods are not ready yet.
    pub const REPLICAS_NOT_READY: &str = "ReplicasNotReady";
    /// The new pod template is rolling out.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// The pod template is fully rolled out.
    pub const ROLLED_OUT: &str = "RolledOut";
    /// Children were applied successfully.
    pub const APPLIED: &str = "Applied";
    /// Applying children failed; details in the message.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// Nothing to report (the `False` state of `Degraded`).
    pub const AS_EXPECTED: &str = "AsExpected";
    /// `exporter.collectorRef` names a TelemetryCollector that does not exist.
    pub const COLLECTOR_NOT_FOUND: &str = "CollectorNotFound";
    /// The referenced TelemetryCollector publishes no endpoint of the protocol.
    pub const COLLECTOR_HAS_NO_ENDPOINT: &str = "CollectorHasNoEndpoint";
    /// A `"true"` opt-in while several Instrumentations could serve it.
    pub const AMBIGUOUS_INSTRUMENTATION: &str = "AmbiguousInstrumentation";
    /// An opt-in annotation names no valid Instrumentation.
    pub const INVALID_ANNOTATION: &str = "InvalidAnnotation";
    /// A spec problem the schema could not catch.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The object is being deleted and its cluster-scoped children removed.
    pub const DELETING: &str = "Deleting";
    /// An Instrumentation asks for more than its ProbeClass (or, without
    /// one, the operator's defaults) allows: an image, privileged mode, or a
    /// class its namespace may not use. Its probes are removed.
    pub const NOT_ALLOWED: &str = "NotAllowed";
    /// `spec.probeClassName` names no ProbeClass.
    pub const PROBE_CLASS_NOT_FOUND: &str = "ProbeClassNotFound";
    /// The named ProbeClass cannot be applied (an invalid selector).
    pub const INVALID_PROBE_CLASS: &str = "InvalidProbeClass";
}

/// A condition stamped with the current time.
pub fn new_condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// Inserts or replaces the condition of `new.type_`, keeping the previous
/// `lastTransitionTime` when the status did not flip (that is what the field
/// means, and it keeps unchanged statuses byte-identical).
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) {
    let new = carry_transition_time(conditions, new);
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => *old = new,
        None => conditions.push(new),
    }
}

/// `new`, with the `lastTransitionTime` of its type in `previous` when the
/// status did not flip.
pub fn carry_transition_time(previous: &[Condition], mut new: Condition) -> Condition {
    if let Some(old) = find(previous, &new.type_)
        && old.status == new.status
    {
        new.last_transition_time = old.last_transition_time.clone();
    }
    new
}

/// The condition of type `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition `type_` is present with status `"True"`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Equality that ignores `lastTransitionTime`, for "did the status change?".
pub fn same_ignoring_time(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().all(|x| {
            find(b, &x.type_).is_some_and(|y| {
                x.status == y.status
                    && x.reason == y.reason
                    && x.message == y.message
                    && x.observed_generation == y.observed_generation
            })
        })
}

/// A status with standard conditions, so that shared code can tell whether
/// a freshly computed status differs from the stored one.
pub trait WithConditions: Clone + PartialEq {
    fn conditions(&self) -> &[Condition];
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
}

/// True when `a` and `b` differ in nothing but condition timestamps: writing
/// `b` over `a` would tell nobody anything new.
pub fn same_status<S: WithConditions>(a: &S, b: &S) -> bool {
    let without_conditions = |s: &S| {
        let mut s = s.clone();
        s.conditions_mut().clear();
        s
    };
    without_conditions(a) == without_conditions(b)
        && same_ignoring_time(a.conditions(), b.conditions())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_condition_keeps_transition_time_while_status_is_unchanged() {
        let mut conds = vec![new_condition(
            AVAILABLE,
            false,
            reasons::REPLICAS_NOT_READY,
            "0/1",
            Some(1),
        )];
        let mut first = conds[0].clone();
        first.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        conds[0] = first;
        set_condition(
            &mut conds,
            new_condition(
                AVAILABLE,
                false,
                reasons::REPLICAS_NOT_READY,
                "0/2",
                Some(2),
            ),
        );
        assert_eq!(conds.len(), 1, "condition replaced, not appended");
        assert_eq!(conds[0].message, "0/2");
        assert_eq!(
            conds[0].last_transition_time,
            Time(Timestamp::UNIX_EPOCH),
            "status unchanged: time kept"
        );
        set_condition(
            &mut conds,
            new_condition(AVAILABLE, true, reasons::REPLICAS_READY, "2/2", Some(2)),
        );
        assert_ne!(
            conds[0].last_transition_time,
            Time(Timestamp::UNIX_EPOCH),
            "status flipped: time updated"
        );
        assert!(is_true(&conds, AVAILABLE));
    }

    #[test]
    fn same_ignoring_time_detects_message_changes_only() {
        let a = vec![new_condition(
            CONFIG_VALID,
            true,
            reasons::VALID,
            "ok",
            Some(1),
        )];
        let mut b = a.clone();
        b[0].last_transition_time = Time(Timestamp::UNIX_EPOCH);
        assert!(
            same_ignoring_time(&a, &b),
            "timestamps must not count as a change"
        );
        b[0].message = "changed".into();
        assert!(!same_ignoring_time(&a, &b), "a new message is a change");
    }
}
