//! Dereference: the exporter endpoint, from `spec.exporter.endpoint` or from
//! the referenced TelemetryCollector's `status.endpoints` (written by the
//! collector controller once its Service exists), read from the
//! TelemetryCollector watch cache.

use ferrotel_api::{
    collector::TelemetryCollector,
    conditions::reasons,
    instrumentation::{Instrumentation, ResolvedExporter},
    probe_config::OtlpProtocol,
};
use kube::{
    Api, Client, ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};

use super::status::Problem;

/// Resolves the exporter. `Ok(Err(problem))` is a user-facing problem
/// (collector missing or not serving yet); `Err` is an API failure.
///
/// `collectors` caches the TelemetryCollectors of `watch_namespace` (all
/// namespaces when `None`); a collector in another namespace is read from
/// the API server.
pub async fn resolve(
    client: &Client,
    collectors: &Store<TelemetryCollector>,
    watch_namespace: Option<&str>,
    inst: &Instrumentation,
) -> Result<Result<ResolvedExporter, Problem>, kube::Error> {
    let exporter = &inst.spec.exporter;
    let protocol = exporter.protocol.unwrap_or_default();
    if let Some(endpoint) = &exporter.endpoint {
        return Ok(Ok(ResolvedExporter {
            endpoint: endpoint.clone(),
            protocol,
        }));
    }
    let Some(collector) = &exporter.collector_ref else {
        // The schema requires one of the two; an object stored before the
        // rule existed gets a clear message instead of a panic.
        return Ok(Err(Problem {
            reason: reasons::INVALID_SPEC,
            message: "set exactly one of exporter.collectorRef and exporter.endpoint".into(),
        }));
    };
    let namespace = collector
        .namespace
        .clone()
        .or_else(|| inst.namespace())
        .unwrap_or_default();
    let object = if watch_namespace.is_none_or(|watched| watched == namespace) {
        collectors.get(&ObjectRef::new(&collector.name).within(&namespace))
    } else {
        let api: Api<TelemetryCollector> = Api::namespaced(client.clone(), &namespace);
        match api.get_opt(&collector.name).await {
            Ok(object) => object.map(std::sync::Arc::new),
            // The TelemetryCollector CRD is not installed: same as a missing collector.
            Err(kube::Error::Api(status)) if status.code == 404 => None,
            Err(err) => return Err(err),
        }
    };
    let Some(object) = object else {
        return Ok(Err(Problem {
            reason: reasons::COLLECTOR_NOT_FOUND,
            message: format!(
                "exporter.collectorRef {:?} not found in namespace {namespace:?}; create the TelemetryCollector or set exporter.endpoint",
                collector.name
            ),
        }));
    };
    let endpoint = object
        .status
        .as_ref()
        .and_then(|s| s.endpoint(protocol_name(protocol)))
        .map(|e| e.url.clone());
    match endpoint.filter(|url| !url.is_empty()) {
        Some(endpoint) => Ok(Ok(ResolvedExporter { endpoint, protocol })),
        None => Ok(Err(Problem {
            reason: reasons::COLLECTOR_HAS_NO_ENDPOINT,
            message: format!(
                "TelemetryCollector {namespace}/{} reports no {} OTLP endpoint in its status yet; it needs an otlp receiver with that protocol",
                object.name_any(),
                protocol_name(protocol)
            ),
        })),
    }
}

fn protocol_name(protocol: OtlpProtocol) -> &'static str {
    match protocol {
        OtlpProtocol::Grpc => "grpc",
        OtlpProtocol::HttpProtobuf => "http/protobuf",
    }
}
