//! What can go wrong, said so that the user knows what to do: a missing
//! kubeconfig, a missing permission (naming the verb and resource to ask
//! for), an unreachable API server or probe, a Prometheus that answers
//! nonsense.

use std::fmt;

/// The API request a failure happened in, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `list`, `get`, `watch`.
    pub verb: &'static str,
    /// `pods`, `pods/proxy`, `instrumentations.ferrotel.io`, ...
    pub resource: String,
    /// `None`: cluster-wide.
    pub namespace: Option<String>,
    /// The object, for `get`.
    pub name: Option<String>,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns:?}"),
            None => write!(f, " at the cluster scope"),
        }
    }
}

impl Request {
    /// `kubectl auth can-i` arguments that check this permission.
    fn can_i(&self) -> String {
        let scope = match &self.namespace {
            Some(ns) => format!("-n {ns}"),
            None => "-A".to_owned(),
        };
        format!("kubectl auth can-i {} {} {scope}", self.verb, self.resource)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "no usable kubeconfig ({detail}); set KUBECONFIG or pass --kubeconfig (and --context), or run inside a pod with a ServiceAccount"
    )]
    NoKubeconfig { detail: String },

    #[error(
        "not allowed to {request} ({message}); bind the ferrotel-cli-viewer ClusterRole (and ferrotel-cli-probe-proxy in the probes' namespace for pods/proxy) to your user, see docs/cli.md#permissions; check with: {can_i}"
    )]
    Forbidden {
        request: Box<Request>,
        message: String,
        can_i: String,
    },

    #[error("{kind} {name:?} not found{}; check the name and -n", in_namespace(.namespace))]
    NotFound {
        kind: &'static str,
        name: String,
        namespace: Option<String>,
    },

    #[error(
        "cannot reach the Kubernetes API server to {request}: {detail}; check that the cluster is up and your kubeconfig's server address"
    )]
    Unreachable {
        request: Box<Request>,
        detail: String,
    },

    #[error("the API server refused to {request}: {message} (HTTP {code})")]
    Api {
        request: Box<Request>,
        code: u16,
        message: String,
    },

    #[error("{0}")]
    Usage(String),

    #[error("no Ferrotel probe to ask: {detail}; check `kubectl ferrotel status`")]
    NoProbes { detail: String },

    #[error(
        "nothing to show: {detail}; opt it in with `kubectl annotate namespace {namespace} ferrotel.io/instrument=true`, and `kubectl ferrotel why <pod>` explains a single pod"
    )]
    NotOptedIn { namespace: String, detail: String },

    #[error("{what}: {detail}")]
    NoData { what: &'static str, detail: String },

    #[error("probe {probe} did not answer {path}: {detail}")]
    Probe {
        probe: String,
        path: String,
        detail: String,
    },

    #[error(
        "no probe answered through the API server: {0}; check the probe pods are running (kubectl ferrotel status) and that the API server can reach pod IPs"
    )]
    ProbesUnreachable(String),

    #[error(
        "Prometheus at {url} failed: {detail}; check --prometheus (the server's base URL, e.g. http://localhost:9090)"
    )]
    Prometheus { url: String, detail: String },

    #[error("writing the output failed: {0}")]
    Output(#[source] std::io::Error),
}

fn in_namespace(namespace: &Option<String>) -> String {
    namespace
        .as_ref()
        .map(|ns| format!(" in namespace {ns:?}"))
        .unwrap_or_default()
}

impl CliError {
    /// Maps a kube client error of `request`.
    pub fn from_kube(request: Request, error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) if status.code == 403 => CliError::Forbidden {
                can_i: request.can_i(),
                request: Box::new(request),
                message: status.message.clone(),
            },
            kube::Error::Api(status) if status.code == 404 && request.name.is_some() => {
                CliError::NotFound {
                    kind: kind_of(&request.resource),
                    name: request.name.clone().unwrap_or_default(),
                    namespace: request.namespace.clone(),
                }
            }
            kube::Error::Api(status) => CliError::Api {
                request: Box::new(request),
                code: status.code,
                message: status.message.clone(),
            },
            kube::Error::HyperError(e) => CliError::Unreachable {
                request: Box::new(request),
                detail: e.to_string(),
            },
            kube::Error::Service(e) => CliError::Unreachable {
                request: Box::new(request),
                detail: error_chain(&*e),
            },
            other => CliError::Api {
                request: Box::new(request),
                code: 0,
                message: other.to_string(),
            },
        }
    }

    /// Maps an error of a request to a probe's `path` through the pod proxy.
    pub fn from_probe(request: Request, path: &str, error: kube::Error) -> Self {
        let probe = format!(
            "{}/{}",
            request.namespace.as_deref().unwrap_or_default(),
            request.name.as_deref().unwrap_or_default()
        );
        // The API server's own refusals are JSON Status objects with a
        // reason; whatever the probe (or a middlebox on the way to it)
        // answered is plain text, which kube wraps without one.
        let from_api_server = |status: &kube::core::Status| {
            matches!(status.reason.as_str(), "Forbidden" | "NotFound")
        };
        match error {
            kube::Error::Api(status) if status.code == 403 && from_api_server(&status) => {
                CliError::Forbidden {
                    can_i: request.can_i(),
                    request: Box::new(request),
                    message: status.message.clone(),
                }
            }
            kube::Error::Api(status) if status.code == 404 && from_api_server(&status) => {
                CliError::NotFound {
                    kind: "pod",
                    name: request.name.clone().unwrap_or_default(),
                    namespace: request.namespace.clone(),
                }
            }
            kube::Error::Api(status) if status.code == 404 => CliError::Probe {
                probe,
                path: path.to_owned(),
                detail:
                    "HTTP 404: an older probe version without this endpoint; upgrade the probes"
                        .into(),
            },
            kube::Error::Api(status) if status.code == 502 || status.code == 503 => {
                CliError::Probe {
                    probe,
                    path: path.to_owned(),
                    detail: format!(
                        "{} (HTTP {}); is the probe running, and can the API server reach pod IPs?",
                        status.message.trim(),
                        status.code
                    ),
                }
            }
            kube::Error::Api(status) => CliError::Probe {
                probe,
                path: path.to_owned(),
                detail: format!("{} (HTTP {})", status.message.trim(), status.code),
            },
            other => CliError::from_kube(request, other),
        }
    }

    /// Exit code: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

fn kind_of(resource: &str) -> &'static str {
    match resource.split('.').next().unwrap_or(resource) {
        "pods" => "pod",
        "namespaces" => "namespace",
        "deployments" => "deployment",
        "instrumentations" => "Instrumentation",
        _ => "object",
    }
}

/// `error: cause: cause`, for errors whose Display hides their source.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forbidden_answer_names_the_verb_the_resource_and_the_check() {
        let status = kube::core::Status::failure(
            "pods \"p\" is forbidden: User \"dev\" cannot get resource \"pods/proxy\"",
            "Forbidden",
        )
        .with_code(403);
        let error = CliError::from_kube(
            Request {
                verb: "get",
                resource: "pods/proxy".into(),
                namespace: Some("observability".into()),
                name: Some("default-probe-go-x".into()),
            },
            kube::Error::Api(status.boxed()),
        );
        let text = error.to_string();
        assert!(
            text.starts_with(
                "not allowed to get pods/proxy \"default-probe-go-x\" in namespace \"observability\""
            ),
            "{text}"
        );
        assert!(
            text.contains("kubectl auth can-i get pods/proxy -n observability"),
            "{text}"
        );
        assert!(text.contains("ferrotel-cli-probe-proxy"), "{text}");
    }

    #[test]
    fn a_probe_error_is_told_apart_from_the_api_servers_own_refusal() {
        let request = || Request {
            verb: "get",
            resource: "pods/proxy".into(),
            namespace: Some("otel".into()),
            name: Some("default-probe-go-x".into()),
        };
        let rbac = kube::core::Status::failure("cannot get resource pods/proxy", "Forbidden")
            .with_code(403);
        assert!(matches!(
            CliError::from_probe(request(), "/metrics", kube::Error::Api(rbac.boxed())),
            CliError::Forbidden { .. }
        ));
        // What kube makes of a plain-text answer (from the probe, or a
        // middlebox between the API server and the pod).
        let proxied =
            kube::core::Status::failure("denied destination", "Failed to parse error data")
                .with_code(403);
        let error = CliError::from_probe(request(), "/metrics", kube::Error::Api(proxied.boxed()));
        assert_eq!(
            error.to_string(),
            "probe otel/default-probe-go-x did not answer /metrics: denied destination (HTTP 403)"
        );
        let old_probe =
            kube::core::Status::failure("404 page not found", "Failed to parse error data")
                .with_code(404);
        let error =
            CliError::from_probe(request(), "/debug/tap", kube::Error::Api(old_probe.boxed()));
        assert!(error.to_string().contains("older probe version"), "{error}");
        let unreachable = kube::core::Status::failure(
            "error trying to reach service: dial tcp 10.0.0.9:9464: connect: no route to host",
            "ServiceUnavailable",
        )
        .with_code(503);
        let error =
            CliError::from_probe(request(), "/metrics", kube::Error::Api(unreachable.boxed()));
        assert!(
            error
                .to_string()
                .contains("can the API server reach pod IPs?"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_object_is_not_found_with_its_namespace() {
        let status = kube::core::Status::failure("pods \"x\" not found", "NotFound").with_code(404);
        let error = CliError::from_kube(
            Request {
                verb: "get",
                resource: "pods".into(),
                namespace: Some("shop".into()),
                name: Some("x".into()),
            },
            kube::Error::Api(status.boxed()),
        );
        assert_eq!(
            error.to_string(),
            "pod \"x\" not found in namespace \"shop\"; check the name and -n"
        );
    }
}
