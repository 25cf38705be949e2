//! The full stack on the test bed's real node ([`crate::node`]): the
//! project's images built locally ([`crate::images`]) and loaded into the
//! node's containerd, the Helm chart installed with them, the collector and
//! probes as the pods the operator renders, and the apps as Deployments.
//! Shared by `tests/full_stack.rs`, `tests/least_privilege.rs`, the demo
//! (`ferrotel-demo`) and the opt-in latency benchmark.
//!
//! What the collector pod received is read from a *backend*: a collector on
//! the host, listening on the node link, that the in-cluster collector
//! forwards to with an `otlp` exporter ([`backend_exporter`]) — the way a
//! gateway forwards to Tempo. The backend writes OTLP/JSON files the tests
//! parse ([`crate::Collector::spans`]).
//!
//! Also here: the pod-like sandbox workloads ([`deploy`], [`Workload`]) that
//! the probe's discovery tests still use (hand-made cgroups behind kwok
//! Pods, see [`crate::sandbox`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::images::LocalImage;
use crate::sandbox::{PodSandbox, SandboxOptions};
use crate::{Collector, Error, Result, Span, TestBed, wait_for};

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
    let template = pod_template(name, node, labels, annotations);
    apply_replicated::<Deployment>(client, namespace, name, name, &template).await?;
    run_workload_pod(client, namespace, name, program, args, port, log_dir).await
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
    let template = pod_template(name, node, labels, annotations);
    adopt_under_deployment(client, namespace, name, &template).await?;
    run_workload_pod(client, namespace, name, program, args, port, log_dir).await
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
    program: &Path,
    args: &[String],
    port: u16,
    log_dir: &Path,
) -> Result<Workload> {
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
        PodSandbox::adopt(client, namespace, &pod_name, SandboxOptions::default()).await?;
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

// ------------------------------------------------------------------------
// The full stack on the real node.

/// Namespace the chart is installed into.
pub const CHART_NAMESPACE: &str = "ferrotel-system";

/// The project's images, built locally and loaded into a bed's real node.
#[derive(Clone, Debug)]
pub struct StackImages {
    pub operator: LocalImage,
    pub probe: LocalImage,
    pub collector: LocalImage,
    /// The demo's Go backend (`e2e/apps/demo/backend`).
    pub backend: LocalImage,
    /// The demo's Python frontend (`e2e/apps/demo/frontend.py`).
    pub frontend: LocalImage,
}

impl StackImages {
    /// Builds every image (cached by inputs) and imports them into the
    /// real node of `bed`.
    pub async fn build_and_import(bed: &TestBed) -> Result<StackImages> {
        use crate::images::catalog;
        let images = tokio::task::spawn_blocking(|| -> Result<StackImages> {
            Ok(StackImages {
                operator: catalog::operator()?,
                probe: catalog::probe()?,
                collector: catalog::collector()?,
                backend: catalog::go_backend()?,
                frontend: catalog::python_frontend()?,
            })
        })
        .await
        .map_err(|e| err(format!("building the images panicked: {e}")))??;
        bed.import_images(&[
            images.operator.clone(),
            images.probe.clone(),
            images.collector.clone(),
            images.backend.clone(),
            images.frontend.clone(),
        ])?;
        Ok(images)
    }
}

/// `helm upgrade --install ferrotel charts/ferrotel` into `namespace`,
/// with the locally built operator image (`pullPolicy: Never`) and the
/// local collector and probe images as the operator's defaults; waits until
/// the operator Deployment is available. The chart's CRDs come with it.
pub async fn install_chart(bed: &TestBed, images: &StackImages, namespace: &str) -> Result<()> {
    let chart = workspace_root().join("charts/ferrotel");
    let helm = crate::tools::try_tool_path("helm")?;
    let sets = [
        format!("operator.image.repository={}", images.operator.repository()),
        format!("operator.image.tag={}", images.operator.tag()),
        "operator.image.pullPolicy=Never".to_owned(),
        format!(
            "defaultImages.collector.repository={}",
            images.collector.repository()
        ),
        format!("defaultImages.collector.tag={}", images.collector.tag()),
        format!(
            "defaultImages.probe.repository={}",
            images.probe.repository()
        ),
        format!("defaultImages.probe.tag={}", images.probe.tag()),
    ];
    let mut cmd = Command::new(&helm);
    cmd.env("KUBECONFIG", bed.kubeconfig())
        .env("HELM_CACHE_HOME", bed.dir().join("helm/cache"))
        .env("HELM_CONFIG_HOME", bed.dir().join("helm/config"))
        .env("HELM_DATA_HOME", bed.dir().join("helm/data"))
        .args(["upgrade", "--install", "ferrotel"])
        .arg(&chart)
        .args(["--namespace", namespace, "--create-namespace"]);
    for set in &sets {
        cmd.args(["--set", set]);
    }
    let out = cmd.output().map_err(|source| Error::Spawn {
        component: "helm".into(),
        program: helm.display().to_string(),
        source,
    })?;
    if !out.status.success() {
        return Err(err(format!(
            "helm upgrade --install ferrotel {} failed: {}",
            chart.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let client = bed.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    wait_for(
        &format!("the operator Deployment in {namespace} to be available"),
        Duration::from_secs(120),
        || {
            let (deployments, pods, client) = (deployments.clone(), pods.clone(), client.clone());
            async move {
                let list = deployments
                    .list(&ListParams::default().labels("app.kubernetes.io/component=operator"))
                    .await
                    .map_err(|e| e.to_string())?;
                let d = list.items.first().ok_or("no operator Deployment yet")?;
                let ready = d
                    .status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0);
                if ready >= 1 {
                    return Ok(());
                }
                let operator_pods = pods
                    .list(&ListParams::default().labels("app.kubernetes.io/component=operator"))
                    .await
                    .map_err(|e| e.to_string())?;
                let operator_pods: Vec<&Pod> = operator_pods.items.iter().collect();
                Err(format!(
                    "{ready} ready replicas; {}",
                    pods_problems(&client, &operator_pods, "; ").await
                ))
            }
        },
    )
    .await
}

/// A collector on the host end of the bed's node link, writing what it
/// receives to files: the backend the in-cluster collector forwards to.
pub async fn start_backend(bed: &TestBed) -> Result<Collector> {
    let host = bed.with_real_node(|n| n.network().host_ip().to_string());
    Collector::start_with_file_exporter_on(&host).await
}

/// The `otlp` exporter (name `otlp/backend`) that forwards to `backend`.
pub fn backend_exporter(backend: &Collector) -> Value {
    json!({"endpoint": backend.grpc_endpoint(), "tls": {"insecure": true}})
}

/// Applies TelemetryCollector `otel` in `namespace` — OTLP in over gRPC
/// and HTTP, traces and metrics out to `backend` and to its log — and
/// waits for its pod to be Ready.
async fn apply_backend_collector(
    bed: &TestBed,
    namespace: &str,
    backend: &Collector,
) -> Result<()> {
    let yaml = format!(
        r#"apiVersion: {API_VERSION}
kind: TelemetryCollector
metadata: {{name: otel, namespace: {namespace}}}
spec:
  mode: deployment
  config:
    receivers: {{otlp: {{protocols: {{grpc: {{endpoint: "0.0.0.0:4317"}}, http: {{endpoint: "0.0.0.0:4318"}}}}}}}}
    processors: {{batch: {{timeout: 200ms}}}}
    exporters: {{debug: {{verbosity: basic}}, otlp/backend: {exporter}}}
    service:
      pipelines:
        traces: {{receivers: [otlp], processors: [batch], exporters: [debug, otlp/backend]}}
        metrics: {{receivers: [otlp], processors: [batch], exporters: [debug, otlp/backend]}}
"#,
        exporter = backend_exporter(backend),
    );
    kubectl_apply(bed.kubeconfig(), &yaml)?;
    wait_pod_ready(
        &bed.client(),
        namespace,
        "app.kubernetes.io/instance=otel,app.kubernetes.io/component=collector",
    )
    .await
    .map(drop)
}

/// Applies Instrumentation `default` in `namespace` — Go and Python,
/// exporting to collector `otel` ([`apply_backend_collector`]), resource
/// attribute `deployment.environment=e2e` — and waits for both probe
/// DaemonSets to be Ready.
async fn apply_instrumentation(bed: &TestBed, namespace: &str) -> Result<()> {
    kubectl_apply(
        bed.kubeconfig(),
        &format!(
            r#"apiVersion: {API_VERSION}
kind: Instrumentation
metadata: {{name: default, namespace: {namespace}}}
spec:
  languages: [go, python]
  exporter: {{collectorRef: {{name: otel}}}}
  resource: {{attributes: {{deployment.environment: e2e}}}}
"#
        ),
    )?;
    let client = bed.client();
    for language in ["go", "python"] {
        wait_probe_ready(&client, namespace, "default", language).await?;
    }
    Ok(())
}

/// An application Deployment on the real node.
#[derive(Clone, Debug, Default)]
pub struct App {
    pub name: String,
    pub image: String,
    pub args: Vec<String>,
    pub port: u16,
    /// Pod labels besides `app=<name>`.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The pod belongs to a ReplicaSet `<name>-legacy` created first and
    /// then adopted by Deployment `name` (see [`deploy_adopted`]).
    pub adopted: bool,
    /// Run as uid 0 (still with every capability dropped) instead of the
    /// image's non-root user.
    pub run_as_root: bool,
    /// A writable directory (an `emptyDir` on the node's disk) mounted
    /// here, for an app that writes files under its read-only root.
    pub scratch: Option<String>,
}

/// A running pod of an [`App`].
#[derive(Clone, Debug)]
pub struct AppPod {
    pub namespace: String,
    pub deployment: String,
    pub pod: String,
    pub uid: String,
    pub ip: String,
    pub port: u16,
}

impl AppPod {
    /// `ip:port`, reachable from the host through the node link.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// The in-cluster URL of the app's Service.
    pub fn service_url(&self) -> String {
        format!(
            "http://{}.{}.svc.cluster.local:{}",
            self.deployment, self.namespace, self.port
        )
    }
}

/// Creates Service and Deployment `app.name` in `namespace` (non-root,
/// read-only root filesystem, the image's entrypoint with `app.args`,
/// `imagePullPolicy: Never`) and waits until its pod is Ready.
pub async fn deploy_app(client: &kube::Client, namespace: &str, app: &App) -> Result<AppPod> {
    let mut labels = app.labels.clone();
    labels.insert("app".into(), app.name.clone());
    let uid = if app.run_as_root { 0 } else { 65532 };
    let (volumes, mounts) = match &app.scratch {
        Some(path) => (
            json!([{"name": "scratch", "emptyDir": {}}]),
            json!([{"name": "scratch", "mountPath": path}]),
        ),
        None => (json!([]), json!([])),
    };
    let template = json!({
        "metadata": {"labels": labels, "annotations": app.annotations},
        "spec": {
            "securityContext": {"runAsNonRoot": !app.run_as_root, "runAsUser": uid, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "app",
                "image": app.image,
                "imagePullPolicy": "Never",
                "args": app.args,
                "ports": [{"name": "http", "containerPort": app.port}],
                "readinessProbe": {"tcpSocket": {"port": app.port}, "periodSeconds": 1},
                "volumeMounts": mounts,
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
            "volumes": volumes,
        }
    });
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), namespace);
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": app.name, "namespace": namespace},
        "spec": {"selector": {"app": app.name}, "ports": [{"name": "http", "port": app.port, "targetPort": app.port}]},
    }))
    .map_err(|e| err(format!("Service fixture: {e}")))?;
    services
        .patch(
            &app.name,
            &PatchParams::apply("ferrotel-e2e").force(),
            &Patch::Apply(&service),
        )
        .await
        .map_err(|source| Error::Kube {
            context: format!("apply Service {namespace}/{}", app.name),
            source,
        })?;
    if app.adopted {
        adopt_under_deployment(client, namespace, &app.name, &template).await?;
    } else {
        apply_replicated::<Deployment>(client, namespace, &app.name, &app.name, &template).await?;
    }
    let pod = wait_pod_ready(client, namespace, &format!("app={}", app.name)).await?;
    Ok(AppPod {
        namespace: namespace.to_owned(),
        deployment: app.name.clone(),
        pod: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        ip: pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default(),
        port: app.port,
    })
}

/// Waits until one pod matching `selector` in `namespace` is Running and
/// Ready, and returns it. Gives up at once if a container cannot start
/// (image missing, crash loop), with the reason.
pub async fn wait_pod_ready(client: &kube::Client, namespace: &str, selector: &str) -> Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    wait_for(
        &format!("a Ready pod {selector} in {namespace}"),
        Duration::from_secs(120),
        || {
            let pods = pods.clone();
            async move {
                let list = pods
                    .list(&ListParams::default().labels(selector))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut last = "no pod yet".to_owned();
                for pod in list.items {
                    if pod.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    if pod_ready(&pod) {
                        return Ok(pod);
                    }
                    last = pods_problems(client, &[&pod], "; ").await;
                    if last.contains("ErrImageNeverPull") || last.contains("InvalidImageName") {
                        return Err(format!("{}{last}", crate::FATAL));
                    }
                }
                Err(last)
            }
        },
    )
    .await
}

/// Whether the pod is Running with condition Ready.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What keeps a pod from being Ready, in one line (phase, waiting or
/// terminated reasons and messages of its containers).
pub fn pod_problem(pod: &Pod) -> String {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let mut parts = vec![format!("pod {name} {}", status.phase.unwrap_or_default())];
    // An evicted pod says why only at pod level ("Evicted: The node was low
    // on resource: ephemeral-storage").
    if let Some(reason) = status.reason {
        parts.push(format!(
            "{reason}: {}",
            status.message.unwrap_or_default().trim()
        ));
    }
    // A pod that is not scheduled says why only here (a node taint such as
    // disk pressure, too little CPU): without it, "Pending" explains nothing.
    for c in status.conditions.unwrap_or_default() {
        if c.type_ == "PodScheduled" && c.status == "False" {
            parts.push(format!(
                "not scheduled: {} {}",
                c.reason.unwrap_or_default(),
                c.message.unwrap_or_default()
            ));
        }
    }
    for c in status.container_statuses.unwrap_or_default() {
        let state = c.state.unwrap_or_default();
        if let Some(w) = state.waiting {
            parts.push(format!(
                "{} waiting: {} {}",
                c.name,
                w.reason.unwrap_or_default(),
                w.message.unwrap_or_default()
            ));
        }
        if let Some(t) = c.last_state.and_then(|s| s.terminated) {
            parts.push(format!(
                "{} last exit {}: {} {}",
                c.name,
                t.exit_code,
                t.reason.unwrap_or_default(),
                t.message.unwrap_or_default().trim()
            ));
        }
        parts.push(format!("restarts {}", c.restart_count));
    }
    parts.join("; ")
}

/// [`pod_problem`] for each of `pods`, joined by `separator`, followed by
/// what the nodes report when a pod is held back by its node (not scheduled,
/// or failed as when evicted): their taints and pressure conditions, such as
/// a disk-pressure taint, which otherwise shows only as "untolerated taint".
pub async fn pods_problems(client: &kube::Client, pods: &[&Pod], separator: &str) -> String {
    let mut problems: Vec<String> = pods.iter().map(|p| pod_problem(p)).collect();
    if pods.iter().any(|p| held_back_by_node(p)) {
        problems.push(nodes_pressure(client).await);
    }
    problems.join(separator)
}

fn held_back_by_node(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    let unscheduled = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "PodScheduled" && c.status == "False");
    unscheduled || status.phase.as_deref() == Some("Failed")
}

/// Each node's taints and the conditions that are not as a healthy node
/// reports them, in one line.
async fn nodes_pressure(client: &kube::Client) -> String {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = match nodes.list(&ListParams::default()).await {
        Ok(list) => list,
        Err(e) => return format!("nodes: cannot list them: {e}"),
    };
    let mut lines = Vec::new();
    for node in list.items {
        let name = node.metadata.name.unwrap_or_default();
        let taints: Vec<String> = node
            .spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .into_iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect();
        let unhealthy: Vec<String> = node
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| (c.type_ == "Ready") != (c.status == "True"))
            .map(|c| {
                format!(
                    "{}={} ({})",
                    c.type_,
                    c.status,
                    c.message.unwrap_or_default()
                )
            })
            .collect();
        lines.push(format!(
            "node {name}: taints [{}], conditions [{}]",
            taints.join(", "),
            unhealthy.join(", ")
        ));
    }
    lines.join("; ")
}

/// Waits until DaemonSet `<instrumentation>-probe-<language>` in
/// `namespace` (rendered by the operator) has every pod Ready.
pub async fn wait_probe_ready(
    client: &kube::Client,
    namespace: &str,
    instrumentation: &str,
    language: &str,
) -> Result<()> {
    let name = format!("{instrumentation}-probe-{language}");
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    wait_for(
        &format!("DaemonSet {namespace}/{name} to be Ready"),
        Duration::from_secs(120),
        || {
            let (daemon_sets, pods, name) = (daemon_sets.clone(), pods.clone(), name.clone());
            async move {
                let ds = daemon_sets
                    .get_opt(&name)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("not rendered yet")?;
                let status = ds.status.unwrap_or_default();
                let current = status.observed_generation == ds.metadata.generation;
                if current
                    && status.desired_number_scheduled > 0
                    && status.number_ready == status.desired_number_scheduled
                    && status.updated_number_scheduled == Some(status.desired_number_scheduled)
                {
                    return Ok(());
                }
                let listed = pods
                    .list(&ListParams::default().labels(&format!(
                        "ferrotel.io/probe-language={language},app.kubernetes.io/instance={instrumentation}"
                    )))
                    .await
                    .map_err(|e| e.to_string())?;
                let not_ready: Vec<&Pod> = listed.items.iter().filter(|p| !pod_ready(p)).collect();
                Err(format!(
                    "{}/{} ready; {}",
                    status.number_ready,
                    status.desired_number_scheduled,
                    pods_problems(client, &not_ready, " | ").await
                ))
            }
        },
    )
    .await
}

/// `(language, ip:port)` of the `/metrics` endpoint of every Ready probe
/// pod that Instrumentation `namespace/instrumentation` runs, reachable
/// from the host through the node link.
pub async fn probe_endpoints(
    client: &kube::Client,
    namespace: &str,
    instrumentation: &str,
) -> Result<Vec<(String, String)>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!(
            "app.kubernetes.io/instance={instrumentation},ferrotel.io/probe-language"
        )))
        .await
        .map_err(|source| Error::Kube {
            context: format!("list the probe pods of {namespace}/{instrumentation}"),
            source,
        })?;
    Ok(list
        .items
        .iter()
        .filter(|p| pod_ready(p))
        .filter_map(|p| {
            let language = p
                .metadata
                .labels
                .as_ref()?
                .get("ferrotel.io/probe-language")?;
            let ip = p.status.as_ref()?.pod_ip.as_ref()?;
            Some((
                language.clone(),
                format!("{ip}:{}", ferrotel_api::probe_endpoints::PORT),
            ))
        })
        .collect())
}

/// `kubectl logs` of a pod's container (`previous`: of its last run).
pub fn pod_logs(bed: &TestBed, namespace: &str, pod: &str, previous: bool) -> String {
    let mut cmd = bed.kubectl();
    cmd.args(["logs", "-n", namespace, pod]);
    if previous {
        cmd.arg("--previous");
    }
    cmd.output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        })
        .unwrap_or_else(|e| format!("kubectl logs failed: {e}"))
}

async fn adopt_under_deployment(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    template: &Value,
) -> Result<()> {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    let rs_name = format!("{name}-legacy");
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    apply_replicated::<ReplicaSet>(client, namespace, &rs_name, name, template).await?;
    apply_replicated::<Deployment>(client, namespace, name, name, template).await?;
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
    Ok(())
}

/// Everything the full-stack tests start before their own objects: a bed
/// with a real node and no kwok node (so every pod, the probes' included,
/// is real), the images built and imported, the chart installed, the
/// backend collector on the host, and in namespace `observability` a
/// collector forwarding to it and Go and Python probes exporting there.
#[derive(Debug)]
pub struct RealStack {
    pub images: StackImages,
    pub backend: Collector,
    /// Holds TelemetryCollector `otel` and Instrumentation `default`.
    pub observability: String,
    // Last: dropping it stops every pod and the node.
    pub bed: TestBed,
}

impl RealStack {
    /// Starts it all; as root only (a real node: network namespace,
    /// cgroups, mounts; the probes load eBPF programs).
    pub async fn start() -> Result<RealStack> {
        if !is_root() {
            return Err(err(
                "the stack on a real node needs root: it runs a network namespace, cgroups and mounts, and the probes load eBPF programs (run make test with sudo)",
            ));
        }
        install_crypto_provider();
        let bed = TestBed::start(crate::TestBedOptions {
            nodes: 0,
            real_node: true,
            ..crate::TestBedOptions::default()
        })
        .await?;
        let images = StackImages::build_and_import(&bed).await?;
        install_chart(&bed, &images, CHART_NAMESPACE).await?;
        let backend = start_backend(&bed).await?;
        let observability = bed.create_namespace("observability").await;
        apply_backend_collector(&bed, &observability, &backend).await?;
        apply_instrumentation(&bed, &observability).await?;
        Ok(RealStack {
            images,
            backend,
            observability,
            bed,
        })
    }
}

/// Everything a span says about its request: path, query, target, name —
/// where the full-stack tests put their request ids.
pub fn span_request_text(span: &Span) -> String {
    ["url.path", "url.query", "url.full", "http.target"]
        .iter()
        .filter_map(|k| span.attr_str(k))
        .chain([span.name.as_str()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// The spans `backend` received from pod `pod` whose request mentions
/// `text` ([`span_request_text`]).
pub fn pod_spans(backend: &Collector, pod: &str, text: &str) -> Result<Vec<Span>> {
    Ok(backend
        .spans()?
        .into_iter()
        .filter(|s| {
            s.resource_str("k8s.pod.name") == Some(pod) && span_request_text(s).contains(text)
        })
        .collect())
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
