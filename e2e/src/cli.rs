//! Running `kubectl-ferrotel`, the CLI built next to the test executable,
//! the way a user would: against a kubeconfig, colors off.

use std::path::Path;
use std::process::{Command, Output};

use crate::workspace_binary;

/// `kubectl-ferrotel` with `KUBECONFIG=kubeconfig` and `NO_COLOR`, ready
/// for arguments.
pub fn command(kubeconfig: &Path) -> Command {
    let binary = workspace_binary("kubectl-ferrotel").unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(binary);
    cmd.env("KUBECONFIG", kubeconfig).env("NO_COLOR", "1");
    cmd
}

/// Runs `kubectl-ferrotel args` to completion.
pub fn run(kubeconfig: &Path, args: &[&str]) -> Output {
    command(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl-ferrotel runs")
}

/// Standard output and standard error, as text.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Standard output of a run that must have succeeded.
#[track_caller]
pub fn succeeds(out: &Output) -> String {
    let (stdout, stderr) = text(out);
    assert!(
        out.status.success(),
        "expected success; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}
