//! What this probe decided about each process, served as JSON on
//! `/debug/processes` ([`ferrotel_api::probe_endpoints`]) so that
//! `kubectl ferrotel why <pod>` can say which processes of a pod are traced,
//! by which program set, or exactly why not.
//!
//! Two writers, one per stage, each owning its half of an entry:
//! - Kubernetes discovery replaces its view of every container process on
//!   the node after each reconcile ([`ProcessLedger::discovered`]): the pod,
//!   the detected language and the opt-in decision;
//! - the driver records what the program set did with each claimed process
//!   ([`ProcessLedger::traced`], [`ProcessLedger::refused`]) and forgets it
//!   when it is released.
//!
//! Both halves are bounded by what the node runs: discovery's by its
//! container processes, the driver's by the processes claimed now. Writes
//! happen on claims, releases and reconciles, never per request.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use ferrotel_api::language::Language;
use ferrotel_api::probe_endpoints::{ProcessReport, ProcessesReport, TracingOutcome};

/// Shared by discovery, the driver and the HTTP endpoint. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ProcessLedger {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// Discovery's last view, by pid (`tracing` unset).
    discovered: BTreeMap<u32, ProcessReport>,
    /// The program set's outcome per claimed pid, with the executable it
    /// was claimed with.
    tracing: HashMap<u32, (String, TracingOutcome)>,
}

impl ProcessLedger {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep
        // serving it rather than failing every later request.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces discovery's view: every container process it saw, keyed by
    /// pid (their `tracing` is ignored).
    pub fn discovered(&self, processes: BTreeMap<u32, ProcessReport>) {
        self.lock().discovered = processes;
    }

    /// `program_set` traces `pid`.
    pub fn traced(&self, pid: u32, exe: &Path, program_set: &str) {
        self.lock().tracing.insert(
            pid,
            (
                exe.display().to_string(),
                TracingOutcome::Traced {
                    program_set: program_set.to_owned(),
                },
            ),
        );
    }

    /// `program_set` refused `pid`: `reason` is the `attach_refused` label.
    pub fn refused(&self, pid: u32, exe: &Path, program_set: &str, reason: &str, message: String) {
        self.lock().tracing.insert(
            pid,
            (
                exe.display().to_string(),
                TracingOutcome::Refused {
                    program_set: program_set.to_owned(),
                    reason: reason.to_owned(),
                    message,
                },
            ),
        );
    }

    /// The process was released (it exited or stopped matching).
    pub fn released(&self, pid: u32) {
        self.lock().tracing.remove(&pid);
    }

    /// Everything known, one entry per pid, sorted by pid.
    pub fn report(&self, language: Option<Language>, node: &str) -> ProcessesReport {
        let state = self.lock();
        let mut processes: BTreeMap<u32, ProcessReport> = state.discovered.clone();
        for (pid, (exe, outcome)) in &state.tracing {
            let entry = processes.entry(*pid).or_insert_with(|| ProcessReport {
                pid: *pid,
                exe: exe.clone(),
                pod: None,
                detected: None,
                discovery: None,
                tracing: None,
            });
            entry.tracing = Some(outcome.clone());
        }
        ProcessesReport {
            language,
            node: node.to_owned(),
            processes: processes.into_values().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrotel_api::probe_endpoints::{DiscoveryOutcome, PodRef};

    fn seen(pid: u32, outcome: DiscoveryOutcome) -> ProcessReport {
        ProcessReport {
            pid,
            exe: format!("/bin/p{pid}"),
            pod: Some(PodRef {
                namespace: "shop".into(),
                name: format!("pod-{pid}"),
                uid: format!("u{pid}"),
                container: "app".into(),
            }),
            detected: None,
            discovery: Some(outcome),
            tracing: None,
        }
    }

    #[test]
    fn discovery_and_driver_halves_join_by_pid_and_a_release_forgets_the_outcome() {
        let ledger = ProcessLedger::new();
        let claimed = DiscoveryOutcome::Claimed {
            instrumentation: "obs/default".into(),
        };
        ledger.discovered(BTreeMap::from([
            (10, seen(10, claimed.clone())),
            (11, seen(11, claimed)),
            (12, seen(12, DiscoveryOutcome::NotOptedIn)),
        ]));
        ledger.traced(10, Path::new("/bin/p10"), "go");
        ledger.refused(
            11,
            Path::new("/bin/p11"),
            "go",
            "no_functions",
            "no net/http".into(),
        );
        // A standalone claim has no discovery half.
        ledger.traced(99, Path::new("/usr/bin/server"), "sockets");

        let report = ledger.report(Some(Language::Go), "node-a");
        assert_eq!(report.node, "node-a");
        let pids: Vec<u32> = report.processes.iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![10, 11, 12, 99]);
        assert_eq!(
            report.processes[0].tracing,
            Some(TracingOutcome::Traced {
                program_set: "go".into()
            })
        );
        assert!(matches!(
            &report.processes[1].tracing,
            Some(TracingOutcome::Refused { reason, .. }) if reason == "no_functions"
        ));
        assert_eq!(report.processes[2].tracing, None);
        assert_eq!(report.processes[3].exe, "/usr/bin/server");
        assert_eq!(report.processes[3].discovery, None);

        ledger.released(11);
        ledger.discovered(BTreeMap::from([(
            10,
            seen(
                10,
                DiscoveryOutcome::Claimed {
                    instrumentation: "obs/default".into(),
                },
            ),
        )]));
        let pids: Vec<u32> = ledger
            .report(None, "")
            .processes
            .iter()
            .map(|p| p.pid)
            .collect();
        assert_eq!(
            pids,
            vec![10, 99],
            "released and no longer seen processes are gone"
        );
    }
}
