//! The Kubernetes side: the client (kubeconfig, context), typed reads whose
//! errors name the request, the probe pods, and their HTTP endpoints through
//! the API server's pod proxy (`pods/proxy`, `get`).
//!
//! # Why the pod proxy
//!
//! The probes already hold every number the CLI shows (`/metrics`) and
//! what they decided per process (`/debug/processes`), and they can stream
//! their spans (`/debug/tap`). Reading them through the API server needs no
//! Prometheus, no tracing backend, no port-forward and no network path from
//! the user's machine to the nodes: only the `get pods/proxy` permission in
//! the probes' namespace, which `docs/cli.md` shows how to grant narrowly.

use std::path::PathBuf;
use std::time::Duration;

use ferrotel_api::labels::{APP_INSTANCE_LABEL, PROBE_APP_NAME, PROBE_LANGUAGE_LABEL};
use ferrotel_api::language::Language;
use ferrotel_api::probe_endpoints::{PORT, PORT_NAME};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource};
use serde::de::DeserializeOwned;

use crate::error::{CliError, Request};

/// How to reach the cluster.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// How long one API request may take.
    pub request_timeout: Option<Duration>,
}

/// A connected client and the namespace of the current context.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub default_namespace: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("default_namespace", &self.default_namespace)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    pub async fn connect(options: &ConnectOptions) -> Result<Self, CliError> {
        let kube_options = KubeConfigOptions {
            context: options.context.clone(),
            ..KubeConfigOptions::default()
        };
        let mut config = match &options.kubeconfig {
            Some(path) => {
                let kubeconfig =
                    Kubeconfig::read_from(path).map_err(|e| CliError::NoKubeconfig {
                        detail: format!("reading {}: {e}", path.display()),
                    })?;
                Config::from_custom_kubeconfig(kubeconfig, &kube_options)
                    .await
                    .map_err(|e| CliError::NoKubeconfig {
                        detail: crate::error::error_chain(&e),
                    })?
            }
            None if options.context.is_some() => Config::from_kubeconfig(&kube_options)
                .await
                .map_err(|e| CliError::NoKubeconfig {
                    detail: crate::error::error_chain(&e),
                })?,
            None => Config::infer().await.map_err(|e| CliError::NoKubeconfig {
                detail: crate::error::error_chain(&e),
            })?,
        };
        if let Some(timeout) = options.request_timeout {
            config.read_timeout = Some(timeout);
        }
        let default_namespace = config.default_namespace.clone();
        let client = Client::try_from(config).map_err(|e| CliError::NoKubeconfig {
            detail: crate::error::error_chain(&e),
        })?;
        Ok(Self {
            client,
            default_namespace,
        })
    }

    /// Lists `K` in `namespace` (`None`: every namespace).
    pub async fn list<K>(
        &self,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<Vec<K>, CliError>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        api.list(params)
            .await
            .map(|list| list.items)
            .map_err(|e| CliError::from_kube(request::<K>("list", namespace, None), e))
    }

    /// Gets namespaced `K` `name` in `namespace`.
    pub async fn get<K>(&self, namespace: &str, name: &str) -> Result<K, CliError>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        api.get(name)
            .await
            .map_err(|e| CliError::from_kube(request::<K>("get", Some(namespace), Some(name)), e))
    }

    /// Gets cluster-scoped `K` `name`.
    pub async fn get_cluster<K>(&self, name: &str) -> Result<K, CliError>
    where
        K: Resource<DynamicType = (), Scope = ClusterResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::all(self.client.clone());
        api.get(name)
            .await
            .map_err(|e| CliError::from_kube(request::<K>("get", None, Some(name)), e))
    }

    /// Every probe pod (all namespaces: Instrumentations live anywhere).
    pub async fn probe_pods(&self) -> Result<Vec<ProbePod>, CliError> {
        let params =
            ListParams::default().labels(&format!("app.kubernetes.io/name={PROBE_APP_NAME}"));
        let pods: Vec<Pod> = self.list(None, &params).await?;
        Ok(pods.iter().filter_map(ProbePod::from_pod).collect())
    }

    /// `GET path` on a probe pod's HTTP port, through the API server.
    pub async fn probe_get(&self, probe: &ProbePod, path: &str) -> Result<String, CliError> {
        let request = http::Request::get(probe.proxy_path(path))
            .body(Vec::new())
            .map_err(|e| CliError::Usage(format!("bad probe path {path:?}: {e}")))?;
        self.client
            .request_text(request)
            .await
            .map_err(|e| CliError::from_probe(probe.proxy_request(), path, e))
    }

    /// A streaming `GET` on a probe pod (the tap).
    pub async fn probe_stream(
        &self,
        probe: &ProbePod,
        path_and_query: &str,
    ) -> Result<impl futures::AsyncBufRead + use<>, CliError> {
        let request = http::Request::get(probe.proxy_path(path_and_query))
            .body(Vec::new())
            .map_err(|e| CliError::Usage(format!("bad probe path {path_and_query:?}: {e}")))?;
        self.client
            .request_stream(request)
            .await
            .map_err(|e| CliError::from_probe(probe.proxy_request(), path_and_query, e))
    }
}

fn request<K: Resource<DynamicType = ()>>(
    verb: &'static str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Request {
    let plural = K::plural(&()).into_owned();
    let group = K::group(&());
    Request {
        verb,
        resource: if group.is_empty() {
            plural
        } else {
            format!("{plural}.{group}")
        },
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
    }
}

/// A probe pod, as the operator rendered it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbePod {
    pub namespace: String,
    pub name: String,
    /// `namespace/name` of its Instrumentation.
    pub instrumentation: String,
    pub language: Option<Language>,
    pub node: String,
    pub ready: bool,
    /// Why it is not ready, in one line (empty when ready).
    pub problem: String,
    /// Container restarts.
    pub restarts: i32,
    #[serde(skip)]
    pub port: u16,
}

impl ProbePod {
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let namespace = pod.metadata.namespace.clone()?;
        let name = pod.metadata.name.clone()?;
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let port = spec
            .and_then(|s| s.containers.first())
            .and_then(|c| c.ports.as_ref())
            .and_then(|ports| ports.iter().find(|p| p.name.as_deref() == Some(PORT_NAME)))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .unwrap_or(PORT);
        let (ready, problem) = readiness(pod);
        let restarts = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).sum())
            .unwrap_or(0);
        Some(Self {
            instrumentation: format!(
                "{namespace}/{}",
                labels.get(APP_INSTANCE_LABEL).cloned().unwrap_or_default()
            ),
            language: labels
                .get(PROBE_LANGUAGE_LABEL)
                .and_then(|l| l.parse().ok()),
            node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            namespace,
            name,
            ready,
            problem,
            restarts,
            port,
        })
    }

    fn proxy_path(&self, path: &str) -> String {
        format!(
            "/api/v1/namespaces/{}/pods/{}:{}/proxy{path}",
            self.namespace, self.name, self.port
        )
    }

    fn proxy_request(&self) -> Request {
        Request {
            verb: "get",
            resource: "pods/proxy".into(),
            namespace: Some(self.namespace.clone()),
            name: Some(self.name.clone()),
        }
    }
}

/// Ready, and otherwise why not in one line (phase, then the container's
/// waiting or last termination reason).
pub fn readiness(pod: &Pod) -> (bool, String) {
    let Some(status) = &pod.status else {
        return (false, "no status yet".into());
    };
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if ready {
        return (true, String::new());
    }
    let mut problem = status.phase.clone().unwrap_or_else(|| "Unknown".into());
    for container in status.container_statuses.iter().flatten() {
        if let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            problem = waiting.reason.clone().unwrap_or(problem);
            if let Some(message) = &waiting.message {
                problem = format!("{problem}: {message}");
            }
        } else if let Some(last) = container
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
        {
            problem = format!(
                "{problem}, last exit {} ({})",
                last.exit_code,
                last.reason.clone().unwrap_or_default()
            );
        } else if !container.ready {
            problem = format!("{problem}, container {} not ready", container.name);
        }
    }
    (false, problem)
}
