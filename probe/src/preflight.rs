//! Startup checks for the probe in a pod: what the pod spec must give it,
//! checked before anything is loaded, each failure naming the fix.

/// The probe's pod does not share the node's PID namespace.
#[derive(Debug, thiserror::Error)]
#[error(
    "the probe runs in a PID namespace of its own ({evidence}): it cannot see the node's processes, so it would instrument nothing; run it with `hostPID: true` (the DaemonSet the operator renders does)"
)]
pub struct NotInHostPidNamespace {
    pub evidence: String,
}

/// In Kubernetes mode the probe finds application processes through
/// `/proc`, which shows the node's processes only with `hostPID: true`.
/// Without it the container runtime starts the probe as PID 1 of a new
/// namespace (or, with `shareProcessNamespace`, the pod's pause process is
/// PID 1); in the node's namespace PID 1 is the node's init.
pub fn check_host_pid_namespace() -> Result<(), NotInHostPidNamespace> {
    if std::process::id() == 1 {
        return Err(NotInHostPidNamespace {
            evidence: "the probe itself is PID 1".into(),
        });
    }
    let init = std::fs::read("/proc/1/cmdline").unwrap_or_default();
    let argv0 = init.split(|b| *b == 0).next().unwrap_or_default();
    let name = String::from_utf8_lossy(argv0);
    if name.rsplit('/').next() == Some("pause") {
        return Err(NotInHostPidNamespace {
            evidence: "PID 1 is the pod's pause process".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_that_is_not_pid_1_of_a_pod_passes() {
        // The test runner is neither PID 1 nor started by a pause process.
        check_host_pid_namespace().expect("the test process shares its host's PID namespace");
    }

    #[test]
    fn the_error_names_the_fix() {
        let text = NotInHostPidNamespace {
            evidence: "the probe itself is PID 1".into(),
        }
        .to_string();
        assert!(text.contains("hostPID: true"), "{text}");
    }
}
