//! The full stack on one machine: the operator against the test bed's
//! control plane, a collector and probes started from what the operator
//! rendered, and apps in pod-like sandboxes ([`crate::sandbox`]). Shared by
//! `tests/full_stack.rs`, the demo (`ferrotel-demo`) and the opt-in latency
//! benchmark.
//!
//! # From rendered objects to local processes
//!
//! Nothing about how the probe or collector is started is re-typed here: the
//! command line, environment and config file come from the DaemonSet,
//! ConfigMaps and Deployment the operator wrote, read back from the API.
//! What a kubelet would provide and a laptop does not is translated, and
//! only that:
//! - `valueFrom.fieldRef` env vars get the values the downward API would
//!   give (`spec.nodeName` is the kwok node whose pods the sandboxes run);
//! - volume mount paths in args/env are rewritten to a local directory
//!   holding the ConfigMap's files (configMap volumes) or to the host path
//!   (hostPath volumes);
//! - cluster DNS names and fixed ports do not exist on one shared host: the
//!   collector's receivers move to free loopback ports, the probe's exporter
//!   endpoint points at them, and the probe's `/metrics` listens on a free
//!   loopback port (each probe pod would have its own network namespace).
//! - the collector additionally gets a `file` exporter so tests can read
//!   what it received (its own exporters stay);
//! - the probe's in-cluster credentials (the projected ServiceAccount token)
//!   become a kubeconfig holding a token of the DaemonSet's
//!   `serviceAccountName`, obtained with the TokenRequest API: the probe
//!   runs with exactly the RBAC the operator rendered, not as admin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::process::Process;
use crate::sandbox::{PodSandbox, SandboxOptions};
use crate::{Error, Result, free_port, wait_for, workspace_binary};

/// Group/version of our CRDs.
pub const API_VERSION: &str = "ferrotel.io/v1alpha1";

fn err(message: impl Into<String>) -> Error {
    Error::Collector(message.into())
}

/// Selects rustls' `ring` provider for the process. A workspace build
/// (`cargo test --workspace`) unifies features: kube brings `ring`, the
/// probe's HTTP exporter `aws-lc-rs`, and with both rustls refuses to pick
/// one — the first API call would panic. Call before any client is made.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs `kubectl apply -f -` with `yaml` against `kubeconfig`.
pub fn kubectl_apply(kubeconfig: &Path, yaml: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new(crate::tools::try_tool_path("kubectl")?)
        .env("KUBECONFIG", kubeconfig)
        .args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            component: "kubectl".into(),
            program: "kubectl".into(),
            source,
        })?;
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(yaml.as_bytes())
        .map_err(|source| Error::Io {
            path: "kubectl stdin".into(),
            source,
        })?;
    let out = child.wait_with_output().map_err(|source| Error::Io {
        path: "kubectl".into(),
        source,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(err(format!(
            "kubectl apply failed: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Installs what a Ferrotel install ships besides the operator: the
/// generated CRDs from `<workspace>/crds` (waiting until they are
/// established) and the probes' ClusterRole and ClusterRoleBinding
/// (`config/rbac/probe_role.yaml`, `probe_role_binding.yaml`), whose subjects
/// the operator maintains.
pub fn install_crds(kubeconfig: &Path) -> Result<()> {
    let root = workspace_root();
    let crds = root.join("crds");
    let kubectl = crate::tools::try_tool_path("kubectl")?;
    let run = |args: &[&str], path: &Path, failure: &str| -> Result<()> {
        let out = Command::new(&kubectl)
            .env("KUBECONFIG", kubeconfig)
            .args(args)
            .arg(path)
            .output()
            .map_err(|source| Error::Spawn {
                component: "kubectl".into(),
                program: "kubectl".into(),
                source,
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(err(format!(
                "{failure} ({}): {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    };
    run(
        &["apply", "--server-side", "--force-conflicts", "-f"],
        &crds,
        "installing the CRDs failed",
    )?;
    run(
        &["wait", "--for=condition=Established", "--timeout=60s", "-f"],
        &crds,
        "the CRDs were not established",
    )?;
    for file in ["probe_role.yaml", "probe_role_binding.yaml"] {
        run(
            &["apply", "--server-side", "-f"],
            &root.join("config/rbac").join(file),
            "installing the probes' RBAC failed",
        )?;
    }
    Ok(())
}

/// Whether this process runs as root (the full stack needs it for cgroups,
/// network namespaces and eBPF).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        .unwrap_or(false)
}

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Starts `ferrotel-operator` with `kubeconfig`, health and metrics on free
/// loopback ports, logging to `<dir>/operator.log`.
pub fn start_operator(kubeconfig: &Path, dir: &Path) -> Result<crate::operator::OperatorProcess> {
    let args = [
        "--log-format=text".to_owned(),
        "--log-level=info".to_owned(),
    ];
    crate::operator::OperatorProcess::start(kubeconfig, &args, &[], &dir.join("operator.log"))
}

/// Reads `path` in `value` (`a.b.c`), for YAML/JSON configs.
fn pointer_mut<'a>(value: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, key| v.get_mut(*key))
}

/// What the rendered collector config became locally.
#[derive(Debug)]
pub struct LocalCollector {
    pub collector: crate::Collector,
    /// `http://127.0.0.1:<port>` of the OTLP/gRPC receiver.
    pub grpc_url: String,
    /// Where the added `file` exporter writes spans (OTLP/JSON lines).
    pub traces_file: PathBuf,
    /// Where the added `file` exporter writes metrics.
    pub metrics_file: PathBuf,
}

impl LocalCollector {
    pub fn spans(&self) -> Result<Vec<crate::Span>> {
        crate::collector::read_spans(&self.traces_file)
    }

    pub fn metrics(&self) -> Result<Vec<crate::MetricPoint>> {
        crate::collector::read_metrics(&self.metrics_file)
    }
}

/// Waits until the operator rendered TelemetryCollector `namespace/name`
/// (its `status.configMap`), reads that ConfigMap, and runs the collector
/// with it locally (see the module docs for the translations).
pub async fn run_rendered_collector(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    dir: &Path,
) -> Result<LocalCollector> {
    let collectors: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &kube::api::ApiResource {
            group: "ferrotel.io".into(),
            version: "v1alpha1".into(),
            api_version: API_VERSION.into(),
            kind: "TelemetryCollector".into(),
            plural: "telemetrycollectors".into(),
        },
    );
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let what =
        format!("the operator to render TelemetryCollector {namespace}/{name} (status.configMap)");
    let config_map = wait_for(&what, Duration::from_secs(60), || {
        let collectors = collectors.clone();
        let config_maps = config_maps.clone();
        async move {
            let tc = collectors.get(name).await.map_err(|e| e.to_string())?;
            let cm_name = tc.data["status"]["configMap"]
                .as_str()
                .ok_or("status.configMap not set yet")?
                .to_owned();
            config_maps
                .get(&cm_name)
                .await
                .map_err(|e| format!("ConfigMap {cm_name}: {e}"))
        }
    })
    .await?;
    let data = config_map.data.unwrap_or_default();
    let (_, text) = data
        .iter()
        .next()
        .ok_or_else(|| err("the rendered collector ConfigMap has no data"))?;
    let mut config: Value = serde_yaml::from_str(text)
        .map_err(|e| err(format!("rendered collector config is not YAML: {e}")))?;

    let grpc = free_port();
    let http = free_port();
    if let Some(protocols) = pointer_mut(&mut config, &["receivers", "otlp", "protocols"]) {
        if let Some(grpc_cfg) = protocols.get_mut("grpc") {
            grpc_cfg["endpoint"] = json!(format!("127.0.0.1:{grpc}"));
        }
        if let Some(http_cfg) = protocols.get_mut("http") {
            http_cfg["endpoint"] = json!(format!("127.0.0.1:{http}"));
        }
    } else {
        return Err(err(
            "the rendered collector config has no receivers.otlp.protocols; the full stack needs an OTLP receiver",
        ));
    }
    let traces_file = dir.join("collector-traces.jsonl");
    let metrics_file = dir.join("collector-metrics.jsonl");
    config["exporters"]["file/ferrotel-e2e-traces"] =
        json!({"path": traces_file, "flush_interval": "100ms"});
    config["exporters"]["file/ferrotel-e2e-metrics"] =
        json!({"path": metrics_file, "flush_interval": "100ms"});
    if let Some(pipelines) =
        pointer_mut(&mut config, &["service", "pipelines"]).and_then(Value::as_object_mut)
    {
        for (pipeline, spec) in pipelines.iter_mut() {
            let exporter = if pipeline.starts_with("traces") {
                "file/ferrotel-e2e-traces"
            } else if pipeline.starts_with("metrics") {
                "file/ferrotel-e2e-metrics"
            } else {
                continue;
            };
            if let Some(list) = spec.get_mut("exporters").and_then(Value::as_array_mut) {
                list.push(json!(exporter));
            }
        }
    }
    // The collector's own telemetry port (:8888) would clash between runs.
    config["service"]["telemetry"]["metrics"] = json!({"level": "none"});
    let yaml = serde_yaml::to_string(&config)
        .map_err(|e| err(format!("re-serializing collector config: {e}")))?;
    let collector = crate::Collector::start(&yaml).await?;
    Ok(LocalCollector {
        collector,
        grpc_url: format!("http://127.0.0.1:{grpc}"),
        traces_file,
        metrics_file,
    })
}

/// A probe started the way its DaemonSet would start it.
#[derive(Debug)]
pub struct LocalProbe {
    pub language: String,
    pub process: Process,
    pub metrics_addr: String,
    /// The command line used, for logs and reports.
    pub command: Vec<String>,
}

/// Waits for DaemonSet `namespace/<instrumentation>-probe-<language>` and
/// its ConfigMap, then starts `ferrotel-probe` as its pod spec says, as if
/// scheduled on `node`.
#[allow(clippy::too_many_arguments)]
pub async fn run_rendered_probe(
    client: &kube::Client,
    namespace: &str,
    instrumentation: &str,
    language: &str,
    node: &str,
    collector_grpc_url: &str,
    kubeconfig: &Path,
    dir: &Path,
) -> Result<LocalProbe> {
    let ds_name = format!("{instrumentation}-probe-{language}");
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let what = format!("the operator to render DaemonSet {namespace}/{ds_name}");
    let ds = wait_for(&what, Duration::from_secs(60), || {
        let daemon_sets = daemon_sets.clone();
        let ds_name = ds_name.clone();
        async move {
            daemon_sets
                .get_opt(&ds_name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "absent".to_string())
        }
    })
    .await?;
    let pod_spec: PodSpec = ds
        .spec
        .and_then(|s| s.template.spec)
        .ok_or_else(|| err(format!("DaemonSet {ds_name} has no pod spec")))?;
    let container: Container = pod_spec
        .containers
        .first()
        .cloned()
        .ok_or_else(|| err(format!("DaemonSet {ds_name} has no container")))?;

    // Volume mount path -> local path.
    let probe_dir = dir.join(format!("probe-{language}"));
    std::fs::create_dir_all(&probe_dir).map_err(|source| Error::Io {
        path: probe_dir.clone(),
        source,
    })?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let Some(volume) = pod_spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
        else {
            continue;
        };
        if let Some(cm) = &volume.config_map {
            let local = probe_dir.join(&mount.name);
            std::fs::create_dir_all(&local).map_err(|source| Error::Io {
                path: local.clone(),
                source,
            })?;
            let config_map = config_maps
                .get(&cm.name)
                .await
                .map_err(|source| Error::Kube {
                    context: format!("get ConfigMap {}", cm.name),
                    source,
                })?;
            for (file, content) in config_map.data.unwrap_or_default() {
                let content = if file.ends_with(".yaml") || file.ends_with(".yml") {
                    localize_probe_config(&content, collector_grpc_url)?
                } else {
                    content
                };
                let path = local.join(&file);
                std::fs::write(&path, content).map_err(|source| Error::Io { path, source })?;
            }
            mounts.push((mount.mount_path.clone(), local));
        } else if let Some(host) = &volume.host_path {
            mounts.push((mount.mount_path.clone(), PathBuf::from(&host.path)));
        }
    }
    // Longest mount path first so nested mounts win.
    mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
    let localize = |text: &str| -> String {
        for (mount_path, local) in &mounts {
            if let Some(rest) = text.strip_prefix(mount_path.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return format!("{}{rest}", local.display());
            }
        }
        text.to_owned()
    };

    let mut cmd = Command::new(workspace_binary("ferrotel-probe")?);
    let mut command = vec!["ferrotel-probe".to_owned()];
    // The image's entrypoint is the probe; `command` (if any) would replace it.
    for arg in container
        .command
        .iter()
        .flatten()
        .skip(1)
        .chain(container.args.iter().flatten())
    {
        let arg = localize(arg);
        command.push(arg.clone());
        cmd.arg(arg);
    }
    let pod_name = format!("{ds_name}-{}", node.rsplit('-').next().unwrap_or("0"));
    for env in container.env.iter().flatten() {
        let value = match (&env.value, &env.value_from) {
            (Some(value), _) => localize(value),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("spec.nodeName") => node.to_owned(),
                Some("metadata.name") => pod_name.clone(),
                Some("metadata.namespace") => namespace.to_owned(),
                Some(other) => {
                    return Err(err(format!(
                        "probe env {} uses fieldRef {other}, unknown to the e2e translation",
                        env.name
                    )));
                }
                None => continue,
            },
            (None, None) => String::new(),
        };
        cmd.env(&env.name, &value);
        command.insert(0, format!("{}={value}", env.name));
    }
    // In a pod the probe would authenticate with its ServiceAccount's
    // projected token; here it gets a token of that same ServiceAccount
    // (TokenRequest API), so every call it makes is checked against the
    // RBAC the operator rendered.
    let service_account = pod_spec
        .service_account_name
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| err(format!("DaemonSet {ds_name} names no serviceAccountName")))?;
    let sa_kubeconfig = service_account_kubeconfig(
        client,
        kubeconfig,
        namespace,
        &service_account,
        &probe_dir.join("kubeconfig"),
    )
    .await?;
    cmd.env("KUBECONFIG", &sa_kubeconfig);
    let metrics_addr = read_metrics_listen(&probe_dir)?;
    let log = dir.join(format!("probe-{language}.log"));
    let process = Process::spawn(&format!("probe-{language}"), cmd, &log)?;
    Ok(LocalProbe {
        language: language.to_owned(),
        process,
        metrics_addr,
        command,
    })
}

/// Writes a kubeconfig at `out` that authenticates to the cluster of
/// `admin_kubeconfig` as ServiceAccount `namespace/name`, with a token from
/// the TokenRequest API (valid for a day: the demo may run that long).
pub async fn service_account_kubeconfig(
    client: &kube::Client,
    admin_kubeconfig: &Path,
    namespace: &str,
    name: &str,
    out: &Path,
) -> Result<PathBuf> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;

    let admin = kube::config::Kubeconfig::read_from(admin_kubeconfig)
        .map_err(|e| err(format!("reading {}: {e}", admin_kubeconfig.display())))?;
    let context_name = admin.current_context.clone().unwrap_or_default();
    let cluster_name = admin
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .ok_or_else(|| {
            err(format!(
                "{} has no current context",
                admin_kubeconfig.display()
            ))
        })?;
    let cluster = admin
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| {
            err(format!(
                "{} has no cluster {cluster_name}",
                admin_kubeconfig.display()
            ))
        })?;

    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let what = format!("ServiceAccount {namespace}/{name} to exist");
    wait_for(&what, Duration::from_secs(60), || {
        let accounts = accounts.clone();
        async move {
            accounts
                .get_opt(name)
                .await
                .map_err(|e| e.to_string())?
                .map(|_| ())
                .ok_or_else(|| "absent".to_string())
        }
    })
    .await?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(24 * 3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let token = accounts
        .create_token_request(name, &kube::api::PostParams::default(), &request)
        .await
        .map_err(|source| Error::Kube {
            context: format!("request a token for ServiceAccount {namespace}/{name}"),
            source,
        })?
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            err(format!(
                "the token request for {namespace}/{name} returned no token"
            ))
        })?;

    let mut cluster_entry = json!({"server": cluster.server});
    if let Some(ca) = cluster.certificate_authority {
        cluster_entry["certificate-authority"] = json!(ca);
    }
    if let Some(ca) = cluster.certificate_authority_data {
        cluster_entry["certificate-authority-data"] = json!(ca);
    }
    let user = format!("system:serviceaccount:{namespace}:{name}");
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": cluster_entry}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster_name, "user": user, "namespace": namespace}}],
        "current-context": user,
    });
    let yaml = serde_yaml::to_string(&config)
        .map_err(|e| err(format!("serializing the ServiceAccount kubeconfig: {e}")))?;
    std::fs::write(out, yaml).map_err(|source| Error::Io {
        path: out.to_owned(),
        source,
    })?;
    Ok(out.to_owned())
}

/// Rewrites the probe config for one host: exporter endpoint to the local
/// collector, `/metrics` to a free loopback port.
fn localize_probe_config(text: &str, collector_grpc_url: &str) -> Result<String> {
    let mut config: Value = serde_yaml::from_str(text)
        .map_err(|e| err(format!("rendered probe config is not YAML: {e}")))?;
    if config.get("exporter").is_none() {
        config["exporter"] = json!({});
    }
    config["exporter"]["endpoint"] = json!(collector_grpc_url);
    config["exporter"]["protocol"] = json!("grpc");
    if config.get("metrics").is_none() {
        config["metrics"] = json!({});
    }
    config["metrics"]["listen"] = json!(format!("127.0.0.1:{}", free_port()));
    serde_yaml::to_string(&config).map_err(|e| err(format!("re-serializing probe config: {e}")))
}

fn read_metrics_listen(probe_dir: &Path) -> Result<String> {
    for entry in walk(probe_dir) {
        if entry.extension().is_some_and(|e| e == "yaml")
            && let Ok(text) = std::fs::read_to_string(&entry)
            && let Ok(config) = serde_yaml::from_str::<Value>(&text)
            && let Some(listen) = config["metrics"]["listen"].as_str()
        {
            return Ok(listen.to_owned());
        }
    }
    Err(err(format!(
        "no probe config with metrics.listen under {}",
        probe_dir.display()
    )))
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Waits until a probe serves `/readyz` with 200 (or fails if it exited).
pub async fn wait_probe_ready(probe: &mut LocalProbe) -> Result<()> {
    let addr = probe.metrics_addr.clone();
    let what = format!("probe {} to be ready on {addr}/readyz", probe.language);
    let process = std::sync::Mutex::new(&mut probe.process);
    wait_for(&what, Duration::from_secs(90), || {
        let status = process
            .lock()
            .map(|mut p| p.check_running())
            .unwrap_or(Ok(()));
        let addr = addr.clone();
        async move {
            status.map_err(|e| format!("fatal: {e}"))?;
            let (code, _) = http_get(&addr, "/readyz")
                .await
                .map_err(|e| e.to_string())?;
            if code == 200 {
                Ok(())
            } else {
                Err(format!("/readyz answered {code}"))
            }
        }
    })
    .await?;
    Ok(())
}

/// A minimal HTTP/1.1 GET (no client library needed): `(status, body)`.
pub async fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_get_within(addr, path, Duration::from_secs(10)).await
}

/// [`http_get`] for a request whose handler does real work (burns CPU,
/// writes to disk): the answer may take `read_timeout` on a loaded machine.
pub async fn http_get_within(
    addr: &str,
    path: &str,
    read_timeout: Duration,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(read_timeout, stream.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("read timed out"))??;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(buf.len());
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let body = buf.get(split + 4..).unwrap_or_default();
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {head:?}")))?;
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.trim() == "chunked"
        })
    });
    let body = if chunked {
        dechunk(body).ok_or_else(|| std::io::Error::other("malformed chunked body"))?
    } else {
        body.to_vec()
    };
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

/// The payload of an HTTP/1.1 chunked body (Go's servers chunk what they do
/// not size up front, e.g. a collector's /metrics).
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    loop {
        let line = body.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&body[..line]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        let rest = &body[line + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

/// Builds the demo's Go backend (stdlib only, offline) into `out_dir`.
pub fn build_go_backend(out_dir: &Path) -> Result<PathBuf> {
    build_go_app("e2e/apps/demo/backend", "demo-backend", out_dir)
}

/// Builds the Go module at `source` (relative to the workspace; stdlib
/// only, offline) into `out_dir/<name>`.
pub fn build_go_app(source: &str, name: &str, out_dir: &Path) -> Result<PathBuf> {
    let source = workspace_root().join(source);
    let out = out_dir.join(name);
    let go = ["/usr/local/go/bin/go", "go"]
        .into_iter()
        .find(|g| Path::new(g).is_file())
        .unwrap_or("go");
    let status = Command::new(go)
        .current_dir(&source)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", "0")
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .output()
        .map_err(|source| Error::Spawn {
            component: "go build".into(),
            program: go.into(),
            source,
        })?;
    if !status.status.success() {
        return Err(err(format!(
            "go build of {} failed: {}",
            source.display(),
            String::from_utf8_lossy(&status.stderr)
        )));
    }
    Ok(out)
}

/// The Python interpreter used for the demo frontend: a real binary (not a
/// pyenv shim script) so that `/proc/<pid>/exe` names Python.
pub fn python_interpreter() -> Result<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .map_err(|source| Error::Spawn {
            component: "python3".into(),
            program: "python3".into(),
            source,
        })?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && path.is_file() {
        Ok(path)
    } else {
        Err(err(
            "python3 not found on PATH; install Python 3.11 (see README prerequisites)",
        ))
    }
}

/// A workload: a one-replica Deployment whose pod runs, for real, in a
/// sandbox on this machine.
#[derive(Debug)]
pub struct Workload {
    pub sandbox: PodSandbox,
    pub deployment: String,
    pub port: u16,
}

impl Workload {
    /// `ip:port` of the workload.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.sandbox.ip(), self.port)
    }
}

/// Creates Deployment `name` (1 replica, pinned to `node`, with pod
/// `annotations` and labels `app=<name>` plus `labels`), waits for its pod,
/// runs `program args` in a sandbox for it and publishes the container ID.
#[allow(clippy::too_many_arguments)]
pub async fn deploy(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    node: &str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    program: &Path,
    args: &[String],
    port: u16,
    log_dir: &Path,
) -> Result<Workload> {
    let workload = WorkloadSpec {
        program,
        args,
        port,
        sandbox: SandboxOptions::default(),
    };
    deploy_with(
        client,
        namespace,
        name,
        node,
        labels,
        annotations,
        workload,
        log_dir,
    )
    .await
}

/// What runs in a workload's pod.
#[derive(Debug)]
pub struct WorkloadSpec<'a> {
    pub program: &'a Path,
    pub args: &'a [String],
    /// The port it answers on once started.
    pub port: u16,
    pub sandbox: SandboxOptions,
}

/// Like [`deploy`], with the sandbox's options given.
#[allow(clippy::too_many_arguments)]
pub async fn deploy_with(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    node: &str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    workload: WorkloadSpec<'_>,
    log_dir: &Path,
) -> Result<Workload> {
    let template = pod_template(name, node, labels, annotations);
    apply_replicated::<Deployment>(client, namespace, name, name, &template).await?;
    run_workload_pod(client, namespace, name, &workload, log_dir).await
}

/// Like [`deploy`], but the pod belongs to a ReplicaSet `<name>-legacy`
/// created first, which Deployment `name` then adopts (as when a team moves
/// bare ReplicaSets under a Deployment). Its pods carry no
/// `pod-template-hash` label and its name is not `<name>-<hash>`, so only a
/// real lookup of the ReplicaSet's ownerReferences names the Deployment.
#[allow(clippy::too_many_arguments)]
pub async fn deploy_adopted(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    node: &str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    program: &Path,
    args: &[String],
    port: u16,
    log_dir: &Path,
) -> Result<Workload> {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    let template = pod_template(name, node, labels, annotations);
    let rs_name = format!("{name}-legacy");
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    apply_replicated::<ReplicaSet>(client, namespace, &rs_name, name, &template).await?;
    apply_replicated::<Deployment>(client, namespace, name, name, &template).await?;
    let what =
        format!("Deployment {namespace}/{name} to adopt ReplicaSet {rs_name} (and make no other)");
    wait_for(&what, Duration::from_secs(60), || {
        let replica_sets = replica_sets.clone();
        async move {
            let list = replica_sets
                .list(&ListParams::default().labels(&format!("app={name}")))
                .await
                .map_err(|e| e.to_string())?;
            let names: Vec<String> = list
                .items
                .iter()
                .filter_map(|r| r.metadata.name.clone())
                .collect();
            if names != [format!("{name}-legacy")] {
                return Err(format!(
                    "fatal: ReplicaSets {names:?}: the Deployment made its own instead of adopting"
                ));
            }
            let adopted = list.items[0]
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && o.kind == "Deployment" && o.name == name);
            if adopted {
                Ok(())
            } else {
                Err("not adopted yet".to_string())
            }
        }
    })
    .await?;
    let workload = WorkloadSpec {
        program,
        args,
        port,
        sandbox: SandboxOptions::default(),
    };
    run_workload_pod(client, namespace, name, &workload, log_dir).await
}

fn pod_template(
    name: &str,
    node: &str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
) -> Value {
    let mut pod_labels = labels;
    pod_labels.insert("app".into(), name.into());
    json!({
        "metadata": {"labels": pod_labels, "annotations": annotations},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "image": format!("ferrotel.local/{name}:dev")}],
            "tolerations": [{"operator": "Exists"}],
        }
    })
}

/// Server-side applies a one-replica `K` (Deployment or ReplicaSet) `name`
/// selecting pods labelled `app=<app>`, with pod `template`.
async fn apply_replicated<K>(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    app: &str,
    template: &Value,
) -> Result<()>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
{
    let kind = K::kind(&()).into_owned();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let object: K = serde_json::from_value(json!({
        "apiVersion": K::api_version(&()),
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": app}},
            "template": template,
        }
    }))
    .map_err(|e| err(format!("{kind} fixture: {e}")))?;
    api.patch(
        name,
        &PatchParams::apply("ferrotel-e2e").force(),
        &Patch::Apply(&object),
    )
    .await
    .map_err(|source| Error::Kube {
        context: format!("apply {kind} {namespace}/{name}"),
        source,
    })?;
    Ok(())
}

/// Waits for the pod labelled `app=<name>`, runs `program args` in its
/// sandbox, publishes the container ID and waits until it answers.
async fn run_workload_pod(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    workload: &WorkloadSpec<'_>,
    log_dir: &Path,
) -> Result<Workload> {
    let (program, args, port) = (workload.program, workload.args, workload.port);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let what = format!("Deployment {namespace}/{name} to create its pod");
    let pod_name = wait_for(&what, Duration::from_secs(60), || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels(&format!("app={name}")))
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .into_iter()
                .find(|p| p.metadata.deletion_timestamp.is_none())
                .and_then(|p| p.metadata.name)
                .ok_or_else(|| "no pod yet".to_string())
        }
    })
    .await?;
    let mut sandbox =
        PodSandbox::adopt(client, namespace, &pod_name, workload.sandbox.clone()).await?;
    let log = log_dir.join(format!("{namespace}-{name}.log"));
    sandbox.spawn(program, args, &[], &log)?;
    sandbox.publish_status().await?;
    let addr = format!("{}:{port}", sandbox.ip());
    let what = format!("{namespace}/{name} to answer on {addr}");
    let sandbox_ref = std::sync::Mutex::new(&mut sandbox);
    wait_for(&what, Duration::from_secs(30), || {
        let status = sandbox_ref
            .lock()
            .map(|mut s| s.check_running())
            .unwrap_or(Ok(()));
        let addr = addr.clone();
        async move {
            status.map_err(|e| format!("fatal: {e}"))?;
            tokio::net::TcpStream::connect(&addr)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await?;
    Ok(Workload {
        sandbox,
        deployment: name.to_owned(),
        port,
    })
}

/// Sets (`Some`) or removes (`None`) an annotation on a namespace.
pub async fn annotate_namespace(
    client: &kube::Client,
    namespace: &str,
    key: &str,
    value: Option<&str>,
) -> Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let patch = json!({"metadata": {"annotations": {key: value}}});
    api.patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Kube {
            context: format!("annotate namespace {namespace}"),
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_chunked_body_is_joined_even_where_a_chunk_splits_a_line_or_a_character() {
        let raw: &[u8] = b"5\r\nabc\xc3\xa9\r\n3\r\nde\n\r\n0\r\n\r\n";
        assert_eq!(
            super::dechunk(raw).as_deref(),
            Some("abc\u{e9}de\n".as_bytes())
        );
        let split: &[u8] = b"4\r\nabc\xc3\r\n4\r\n\xa9de\n\r\n0\r\n\r\n";
        assert_eq!(
            String::from_utf8_lossy(&super::dechunk(split).unwrap()),
            "abc\u{e9}de\n"
        );
        assert_eq!(super::dechunk(b"zz\r\n"), None, "not a size");
        assert_eq!(super::dechunk(b"9\r\nshort\r\n"), None, "truncated");
    }
}
