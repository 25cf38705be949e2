//! The operator as a local process, and kubectl as the tests call it:
//! shared by the controller, chart, kustomize and full-stack tests and the
//! demo, so that every one starts and watches the operator the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::Process;
use crate::{Error, Result, TestBed, free_port, wait_for, workspace_binary};

/// `ferrotel-operator` running against a kubeconfig, with its metrics and
/// health endpoints on free loopback ports.
#[derive(Debug)]
pub struct OperatorProcess {
    pub process: Process,
    /// Its log file.
    pub log: PathBuf,
    /// `127.0.0.1:<port>` of `/metrics`.
    pub metrics_addr: String,
    /// `127.0.0.1:<port>` of `/readyz` and `/livez`.
    pub health_addr: String,
}

impl OperatorProcess {
    /// Starts the operator with `args` and `env` against `kubeconfig`,
    /// logging to `log`. `--metrics-addr`/`--health-addr` in `args` (a
    /// manifest's, whose fixed ports may be taken on a shared machine) are
    /// replaced by free loopback ports; every other argument is passed
    /// verbatim. `RUST_LOG` is removed so that `--log-level` rules.
    pub fn start(
        kubeconfig: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> Result<OperatorProcess> {
        let mut args: Vec<String> = args
            .iter()
            .filter(|a| !a.starts_with("--metrics-addr=") && !a.starts_with("--health-addr="))
            .cloned()
            .collect();
        args.push(format!("--metrics-addr=127.0.0.1:{}", free_port()));
        args.push(format!("--health-addr=127.0.0.1:{}", free_port()));
        Self::spawn(kubeconfig, &args, env, log)
    }

    /// Starts the operator with exactly `args` (which must name
    /// `--metrics-addr=` and `--health-addr=`, e.g. a chart's args rendered
    /// with free ports) and `env` against `kubeconfig`, logging to `log`.
    pub fn spawn(
        kubeconfig: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> Result<OperatorProcess> {
        let addr_of = |flag: &str| -> Result<String> {
            let value = args
                .iter()
                .find_map(|a| a.strip_prefix(flag))
                .ok_or_else(|| Error::Collector(format!("operator args {args:?} lack {flag}")))?;
            // `:8080` listens on every address; connect over loopback.
            Ok(match value.strip_prefix(':') {
                Some(port) => format!("127.0.0.1:{port}"),
                None => value.replace("0.0.0.0", "127.0.0.1"),
            })
        };
        let metrics_addr = addr_of("--metrics-addr=")?;
        let health_addr = addr_of("--health-addr=")?;
        let mut cmd = Command::new(workspace_binary("ferrotel-operator")?);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("KUBECONFIG", kubeconfig)
            .env_remove("RUST_LOG");
        let process = Process::spawn("ferrotel-operator", cmd, log)?;
        Ok(OperatorProcess {
            process,
            log: log.to_owned(),
            metrics_addr,
            health_addr,
        })
    }

    /// `Err("fatal: …")` once the process has exited (for [`wait_for`]).
    pub fn alive(&mut self) -> std::result::Result<(), String> {
        self.process
            .check_running()
            .map_err(|e| format!("fatal: operator died: {e}"))
    }

    /// The last lines of its log, for failure messages.
    pub fn tail(&self) -> String {
        crate::process::tail(&self.log, 40)
    }

    /// Waits until `/readyz` answers 200 (or fails with the log tail).
    pub async fn wait_ready(&mut self) -> Result<()> {
        let addr = self.health_addr.clone();
        let process = std::sync::Mutex::new(&mut self.process);
        let ready = wait_for("the operator's /readyz", Duration::from_secs(60), || {
            let alive = process
                .lock()
                .map(|mut p| p.check_running())
                .unwrap_or(Ok(()));
            let addr = addr.clone();
            async move {
                alive.map_err(|e| format!("fatal: operator died: {e}"))?;
                match crate::stack::http_get(&addr, "/readyz").await {
                    Ok((200, _)) => Ok(()),
                    Ok((code, body)) => Err(format!("{code}: {body}")),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await;
        ready.map_err(|e| Error::Collector(format!("{e}\noperator log:\n{}", self.tail())))
    }

    /// The text of its `/metrics`.
    pub async fn metrics(&self) -> std::result::Result<String, String> {
        match crate::stack::http_get(&self.metrics_addr, "/metrics").await {
            Ok((200, body)) => Ok(body),
            Ok((code, body)) => Err(format!("/metrics answered {code}: {body}")),
            Err(e) => Err(format!("/metrics: {e}")),
        }
    }
}

/// Runs the test bed's kubectl with `args` (and `stdin`), returning stdout,
/// or the command, its status and stderr.
pub fn kubectl(
    bed: &TestBed,
    args: &[&str],
    stdin: Option<&str>,
) -> std::result::Result<String, String> {
    use std::io::Write;
    let mut cmd = bed.kubectl();
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("spawn kubectl: {e}"))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "kubectl {args:?} failed ({}): {}{stdout}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `kubectl <args> -o json`, parsed.
pub fn kubectl_json(
    bed: &TestBed,
    args: &[&str],
) -> std::result::Result<serde_json::Value, String> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let text = kubectl(bed, &all, None)?;
    serde_json::from_str(&text)
        .map_err(|e| format!("kubectl {args:?} output is not JSON: {e}: {text}"))
}

/// `namespace/name` of every subject of the probes' ClusterRoleBinding
/// (`ferrotel-probe`, shipped with the install; the operator keeps its
/// subjects equal to the probes' ServiceAccounts).
pub fn probe_binding_subjects(bed: &TestBed) -> std::result::Result<Vec<String>, String> {
    let binding = kubectl_json(bed, &["get", "clusterrolebinding", "ferrotel-probe"])?;
    Ok(binding["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            format!(
                "{}/{}",
                s["namespace"].as_str().unwrap_or_default(),
                s["name"].as_str().unwrap_or_default()
            )
        })
        .collect())
}

/// The status of the DaemonSets and Deployments in `ns` (the probes and
/// collectors), which their controllers write (and the operator reports):
/// while it moves, the operator rightly writes its CRs' status, so a test
/// that counts the operator's writes checks it stayed put.
pub fn workload_status(bed: &TestBed, ns: &str) -> BTreeMap<String, String> {
    let list = kubectl_json(bed, &["get", "daemonsets,deployments", "-n", ns])
        .unwrap_or_else(|e| panic!("{e}"));
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let mut status = i["status"].clone();
            // Conditions carry timestamps; the counts are what is reported.
            if let Some(s) = status.as_object_mut() {
                s.remove("conditions");
            }
            let kind = i["kind"].as_str().unwrap_or_default();
            let name = i["metadata"]["name"].as_str().unwrap_or_default();
            (format!("{kind}/{name}"), status.to_string())
        })
        .collect()
}

/// `kind/name → resourceVersion` of everything the operator writes in `ns`
/// (and the probes' ClusterRoleBinding), except
/// for DaemonSets and Deployments, whose status their controllers write:
/// their `generation` (spec changes only).
pub fn stored_state(bed: &TestBed, ns: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let kinds = "configmaps,serviceaccounts,services,daemonsets,deployments,instrumentations,telemetrycollectors";
    let list = kubectl_json(bed, &["get", kinds, "-n", ns]).unwrap_or_else(|e| panic!("{e}"));
    for item in list["items"].as_array().into_iter().flatten() {
        let kind = item["kind"].as_str().unwrap_or_default();
        let meta = &item["metadata"];
        let version = if matches!(kind, "DaemonSet" | "Deployment") {
            format!("generation {}", meta["generation"])
        } else {
            format!("resourceVersion {}", meta["resourceVersion"])
        };
        out.insert(
            format!("{kind}/{}", meta["name"].as_str().unwrap_or_default()),
            version,
        );
    }
    let binding = kubectl_json(bed, &["get", "clusterrolebinding", "ferrotel-probe"])
        .unwrap_or_else(|e| panic!("{e}"));
    out.insert(
        "ClusterRoleBinding/ferrotel-probe".into(),
        format!("resourceVersion {}", binding["metadata"]["resourceVersion"]),
    );
    out
}
