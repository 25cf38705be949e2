//! The status stage, pure: what the reconcile came to ([`Outcome`]) → the
//! status and the Events ([`report`]). The driver writes them once, at the
//! end of the reconcile, and only a status that changed (timestamps
//! ignored), so a steady-state reconcile — or an operator restart — writes
//! nothing.

use ferrotel_api::{
    collector::{TelemetryCollector, TelemetryCollectorStatus, validate::Report},
    conditions::{self, new_condition, reasons, set_condition},
};
use kube::ResourceExt;

use super::{Error, Outcome, apply::Applied, build::Built};
use crate::runtime::report::{self, Report as Written};

/// The status and Events of one reconcile.
pub fn report(tc: &TelemetryCollector, outcome: &Outcome) -> Written<TelemetryCollectorStatus> {
    let old = tc.status.clone().unwrap_or_default();
    match outcome {
        Outcome::Unmanaged => Written {
            status: unmanaged(tc, &old),
            events: Vec::new(),
        },
        Outcome::Invalid(validation) => {
            let message = format!(
                "config not rolled out, the previous one keeps serving: {}",
                validation.summary()
            );
            let previous = conditions::find(&old.conditions, conditions::CONFIG_VALID)
                .map(|c| c.message.as_str());
            // Said once per distinct problem, not on every resync.
            let events = if previous == Some(message.as_str()) {
                Vec::new()
            } else {
                vec![report::warning(
                    reasons::INVALID_CONFIG,
                    "Validate",
                    message.clone(),
                )]
            };
            Written {
                status: invalid(tc, &old, &message),
                events,
            }
        }
        // Only a hand-made object lacks the metadata build needs: nothing to
        // tell its users; the error is logged and retried.
        Outcome::Failed(Error::Build { .. }) => Written {
            status: old,
            events: Vec::new(),
        },
        Outcome::Failed(err) => Written {
            status: apply_failed(tc, &old, err),
            events: vec![report::warning(err.reason(), "Apply", err.describe())],
        },
        Outcome::Applied {
            built,
            applied: done,
            report: validation,
        } => {
            let mut events = Vec::new();
            if old.config_hash.as_deref() != Some(built.config_hash.as_str()) {
                let note = match &old.config_hash {
                    Some(previous) => format!(
                        "rolling out config {} (was {previous}) with image {}",
                        built.config_hash, built.image
                    ),
                    None => format!(
                        "rolled out config {} with image {}",
                        built.config_hash, built.image
                    ),
                };
                events.push(report::normal("ConfigRolledOut", "Apply", note));
            }
            events.extend(done.pruned.iter().map(|pruned| {
                report::normal(
                    "Pruned",
                    "Prune",
                    format!("deleted {pruned}, no longer wanted"),
                )
            }));
            Written {
                status: applied(tc, &old, built, done, validation),
                events,
            }
        }
    }
}

fn base(tc: &TelemetryCollector, old: &TelemetryCollectorStatus) -> TelemetryCollectorStatus {
    TelemetryCollectorStatus {
        observed_generation: tc.metadata.generation,
        ..old.clone()
    }
}

/// `managementState: unmanaged`: only the conditions say so.
pub fn unmanaged(
    tc: &TelemetryCollector,
    old: &TelemetryCollectorStatus,
) -> TelemetryCollectorStatus {
    let mut s = base(tc, old);
    set_condition(
        &mut s.conditions,
        new_condition(
            conditions::RECONCILED,
            false,
            reasons::UNMANAGED,
            "spec.managementState is unmanaged: the operator does not touch this collector's children",
            tc.metadata.generation,
        ),
    );
    s
}

/// Invalid config: everything describing the running collector stays.
pub fn invalid(
    tc: &TelemetryCollector,
    old: &TelemetryCollectorStatus,
    message: &str,
) -> TelemetryCollectorStatus {
    let mut s = base(tc, old);
    set_condition(
        &mut s.conditions,
        new_condition(
            conditions::CONFIG_VALID,
            false,
            reasons::INVALID_CONFIG,
            message,
            tc.metadata.generation,
        ),
    );
    s
}

/// Applying failed (the error is retried).
pub fn apply_failed(
    tc: &TelemetryCollector,
    old: &TelemetryCollectorStatus,
    err: &Error,
) -> TelemetryCollectorStatus {
    let mut s = base(tc, old);
    set_condition(
        &mut s.conditions,
        new_condition(
            conditions::RECONCILED,
            false,
            reasons::APPLY_FAILED,
            err.describe(),
            tc.metadata.generation,
        ),
    );
    s
}

/// Everything applied.
pub fn applied(
    tc: &TelemetryCollector,
    old: &TelemetryCollectorStatus,
    built: &Built,
    applied: &Applied,
    report: &Report,
) -> TelemetryCollectorStatus {
    let generation = tc.metadata.generation;
    let w = &applied.workload;
    let mut s = TelemetryCollectorStatus {
        observed_generation: generation,
        conditions: old.conditions.clone(),
        mode: Some(built.mode),
        image: Some(built.image.clone()),
        config_hash: Some(built.config_hash.clone()),
        config_map: Some(built.children.config_map.name_any()),
        replicas: Some(w.desired),
        ready_replicas: Some(w.ready),
        ready: Some(format!("{}/{}", w.ready, w.desired)),
        endpoints: built.endpoints.clone(),
    };
    let (valid_reason, valid_message) = if report.components_checked {
        (reasons::VALID, "config is valid".to_owned())
    } else {
        (
            reasons::VALID_CUSTOM_IMAGE,
            format!(
                "config is valid; component types were not checked because spec.image {:?} is a custom image",
                built.image
            ),
        )
    };
    let conds = &mut s.conditions;
    set_condition(
        conds,
        new_condition(
            conditions::CONFIG_VALID,
            true,
            valid_reason,
            valid_message,
            generation,
        ),
    );
    let available = w.ready >= w.desired;
    set_condition(
        conds,
        new_condition(
            conditions::AVAILABLE,
            available,
            if available {
                reasons::REPLICAS_READY
            } else {
                reasons::REPLICAS_NOT_READY
            },
            format!("{} of {} collector pods ready", w.ready, w.desired),
            generation,
        ),
    );
    set_condition(
        conds,
        new_condition(
            conditions::PROGRESSING,
            !w.rolled_out,
            if w.rolled_out {
                reasons::ROLLED_OUT
            } else {
                reasons::ROLLING_OUT
            },
            if w.rolled_out {
                format!("config {} is rolled out", built.config_hash)
            } else {
                format!("rolling out config {}", built.config_hash)
            },
            generation,
        ),
    );
    set_condition(
        conds,
        new_condition(
            conditions::RECONCILED,
            true,
            reasons::APPLIED,
            "all children applied",
            generation,
        ),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrotel_api::{
        collector::validate::ConfigError,
        conditions::{new_condition, same_status},
    };

    #[test]
    fn status_differing_only_in_condition_times_is_unchanged() {
        let a = TelemetryCollectorStatus {
            conditions: vec![new_condition(
                conditions::AVAILABLE,
                true,
                reasons::REPLICAS_READY,
                "1 of 1",
                Some(1),
            )],
            image: Some("img".into()),
            ..Default::default()
        };
        let mut b = a.clone();
        b.conditions[0].last_transition_time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        );
        assert!(
            same_status(&a, &b),
            "timestamps alone must not cause a status write"
        );
        b.ready = Some("0/1".into());
        assert!(!same_status(&a, &b), "a new ready count is a change");
    }

    fn sample() -> TelemetryCollector {
        let mut tc: TelemetryCollector = serde_yaml::from_str(include_str!(
            "../../../config/samples/telemetrycollector.yaml"
        ))
        .unwrap_or_else(|e| panic!("sample must parse: {e}"));
        tc.metadata.uid = Some("uid-1".into());
        tc.metadata.generation = Some(2);
        tc
    }

    fn state(desired: i32, ready: i32, rolled_out: bool) -> Applied {
        Applied {
            workload: super::super::apply::WorkloadState {
                desired,
                ready,
                rolled_out,
            },
            pruned: Vec::new(),
        }
    }

    fn cond(s: &TelemetryCollectorStatus, t: &str) -> (String, String) {
        let c =
            conditions::find(&s.conditions, t).unwrap_or_else(|| panic!("condition {t} missing"));
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn applied_status_reports_rollout_readiness_and_resolved_defaults() {
        let tc = sample();
        let built = super::super::build::build(&tc, "img:1").expect("sample builds");
        let valid = Report {
            errors: Vec::new(),
            components_checked: true,
        };
        let rolling = applied(
            &tc,
            &Default::default(),
            &built,
            &state(2, 1, false),
            &valid,
        );
        assert_eq!(rolling.ready.as_deref(), Some("1/2"));
        assert_eq!(rolling.observed_generation, Some(2));
        assert_eq!(
            rolling.image.as_deref(),
            Some("img:1"),
            "resolved image shown in status"
        );
        assert_eq!(
            cond(&rolling, conditions::AVAILABLE),
            ("False".into(), reasons::REPLICAS_NOT_READY.into())
        );
        assert_eq!(
            cond(&rolling, conditions::PROGRESSING),
            ("True".into(), reasons::ROLLING_OUT.into())
        );
        let done = applied(&tc, &rolling, &built, &state(2, 2, true), &valid);
        assert_eq!(
            cond(&done, conditions::AVAILABLE),
            ("True".into(), reasons::REPLICAS_READY.into())
        );
        assert_eq!(
            cond(&done, conditions::PROGRESSING),
            ("False".into(), reasons::ROLLED_OUT.into())
        );
        assert!(
            same_status(
                &done,
                &applied(&tc, &done, &built, &state(2, 2, true), &valid)
            ),
            "steady state writes nothing"
        );
    }

    #[test]
    fn custom_image_says_component_types_were_not_checked() {
        let tc = sample();
        let built = super::super::build::build(&tc, "img:1").expect("sample builds");
        let unchecked = Report {
            errors: Vec::new(),
            components_checked: false,
        };
        let s = applied(
            &tc,
            &Default::default(),
            &built,
            &state(1, 1, true),
            &unchecked,
        );
        assert_eq!(
            cond(&s, conditions::CONFIG_VALID),
            ("True".into(), reasons::VALID_CUSTOM_IMAGE.into())
        );
    }

    #[test]
    fn an_invalid_config_is_announced_once_per_distinct_problem() {
        let tc = sample();
        let invalid = |path: &str| {
            Outcome::Invalid(Report {
                errors: vec![ConfigError::Required {
                    path: path.to_owned(),
                    hint: "no receivers",
                }],
                components_checked: true,
            })
        };
        let first = report(&tc, &invalid("service.pipelines.traces.receivers"));
        assert_eq!(
            first
                .events
                .iter()
                .map(|e| e.reason.as_str())
                .collect::<Vec<_>>(),
            ["InvalidConfig"],
            "the first refusal is a Warning Event"
        );
        assert!(
            first.events[0].note.contains("no receivers"),
            "the Event says what is wrong: {}",
            first.events[0].note
        );
        let mut again = tc.clone();
        again.status = Some(first.status.clone());
        assert!(
            report(&again, &invalid("service.pipelines.traces.receivers"))
                .events
                .is_empty(),
            "the same problem is not announced on every reconcile"
        );
        assert_eq!(
            report(&again, &invalid("service.pipelines.logs.receivers"))
                .events
                .len(),
            1,
            "a different problem is announced"
        );
    }

    #[test]
    fn invalid_config_keeps_the_serving_hash_and_image() {
        let old = TelemetryCollectorStatus {
            config_hash: Some("abc".into()),
            image: Some("img:1".into()),
            ..Default::default()
        };
        let s = invalid(&sample(), &old, "service.pipelines: bad");
        assert_eq!(
            s.config_hash.as_deref(),
            Some("abc"),
            "the last good config keeps serving"
        );
        assert_eq!(
            cond(&s, conditions::CONFIG_VALID),
            ("False".into(), reasons::INVALID_CONFIG.into())
        );
    }
}
