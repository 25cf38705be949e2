//! Label and annotation keys: the public contract with users' manifests.

/// Namespace or pod annotation that opts workloads in or out of
/// instrumentation: `"true"`, `"false"` or `"<namespace>/<instrumentation>"`.
pub const INSTRUMENT_ANNOTATION: &str = "ferrotel.io/instrument";
/// Pod annotation that overrides language detection: `go` or `python`.
pub const LANGUAGE_ANNOTATION: &str = "ferrotel.io/language";
/// Pod annotation that overrides the `service.name` resource attribute.
pub const SERVICE_NAME_ANNOTATION: &str = "ferrotel.io/service-name";
/// OpenTelemetry Operator compatibility: `instrumentation.opentelemetry.io/inject-<language>`.
pub const OTEL_INJECT_ANNOTATION_PREFIX: &str = "instrumentation.opentelemetry.io/inject-";
/// OpenTelemetry Operator compatibility: `resource.opentelemetry.io/<attribute>`.
pub const OTEL_RESOURCE_ANNOTATION_PREFIX: &str = "resource.opentelemetry.io/";

/// Field manager used for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "ferrotel-operator";

pub const APP_NAME_LABEL: &str = "app.kubernetes.io/name";
pub const APP_INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const APP_COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const APP_PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
pub const APP_MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const PART_OF_VALUE: &str = "ferrotel";
pub const MANAGED_BY_VALUE: &str = "ferrotel-operator";

/// `app.kubernetes.io/name` of everything rendered for an Instrumentation:
/// the probe DaemonSets, their pods, ServiceAccounts and ConfigMaps.
pub const PROBE_APP_NAME: &str = "ferrotel-probe";
/// Label on every child of an Instrumentation: the probe language it belongs to.
pub const PROBE_LANGUAGE_LABEL: &str = "ferrotel.io/probe-language";
