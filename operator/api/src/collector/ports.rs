//! Service ports derived from the config: the network endpoints of the
//! receivers (and of the Prometheus exporter, which serves a scrape port).
//!
//! Receivers known to the OpenTelemetry Operator with fixed protocol layouts
//! (otlp, jaeger, zipkin, opencensus, ...) get named ports and their default
//! port when a protocol is enabled without an endpoint; any other receiver
//! with an `endpoint: host:port` setting gets a TCP port too.

use serde_json::Value;

use super::{
    CollectorPort, PortProtocol,
    config::{CollectorConfig, Kind, split_id},
};

/// OTLP flavour of a port, as an OTLP exporter's `protocol` setting spells it.
pub const OTLP_GRPC: &str = "grpc";
pub const OTLP_HTTP: &str = "http/protobuf";

/// One port the collector listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedPort {
    /// Service port name (DNS label).
    pub name: String,
    pub port: i32,
    /// Container port the traffic goes to.
    pub target_port: i32,
    pub protocol: PortProtocol,
    pub app_protocol: Option<String>,
    /// `Some(OTLP_GRPC | OTLP_HTTP)` when OTLP can be sent here.
    pub otlp: Option<&'static str>,
    /// Config path the port came from, for error messages.
    pub source: String,
}

/// A protocol of a known multi-protocol receiver.
struct KnownProtocol {
    key: &'static str,
    suffix: &'static str,
    default_port: i32,
    protocol: PortProtocol,
    app_protocol: Option<&'static str>,
    otlp: Option<&'static str>,
}

const fn proto(
    key: &'static str,
    suffix: &'static str,
    default_port: i32,
    protocol: PortProtocol,
    app_protocol: Option<&'static str>,
    otlp: Option<&'static str>,
) -> KnownProtocol {
    KnownProtocol {
        key,
        suffix,
        default_port,
        protocol,
        app_protocol,
        otlp,
    }
}

/// Receivers with a `protocols:` map.
fn known_protocols(receiver_type: &str) -> Option<&'static [KnownProtocol]> {
    use PortProtocol::{Tcp, Udp};
    const OTLP: &[KnownProtocol] = &[
        proto("grpc", "grpc", 4317, Tcp, Some("grpc"), Some(OTLP_GRPC)),
        proto("http", "http", 4318, Tcp, Some("http"), Some(OTLP_HTTP)),
    ];
    const JAEGER: &[KnownProtocol] = &[
        proto("grpc", "grpc", 14250, Tcp, Some("grpc"), None),
        proto("thrift_http", "thrift-http", 14268, Tcp, Some("http"), None),
        proto("thrift_compact", "thrift-compact", 6831, Udp, None, None),
        proto("thrift_binary", "thrift-binary", 6832, Udp, None, None),
    ];
    const LOKI: &[KnownProtocol] = &[
        proto("grpc", "grpc", 3600, Tcp, Some("grpc"), None),
        proto("http", "http", 3500, Tcp, Some("http"), None),
    ];
    const SKYWALKING: &[KnownProtocol] = &[
        proto("grpc", "grpc", 11800, Tcp, Some("grpc"), None),
        proto("http", "http", 12800, Tcp, Some("http"), None),
    ];
    match receiver_type {
        "otlp" => Some(OTLP),
        "jaeger" => Some(JAEGER),
        "loki" => Some(LOKI),
        "skywalking" => Some(SKYWALKING),
        _ => None,
    }
}

/// Receivers with a single `endpoint` and a well-known default port.
fn known_single(receiver_type: &str) -> Option<(i32, PortProtocol, Option<&'static str>)> {
    use PortProtocol::{Tcp, Udp};
    Some(match receiver_type {
        "zipkin" => (9411, Tcp, Some("http")),
        "opencensus" => (55678, Tcp, Some("grpc")),
        "carbon" => (2003, Tcp, None),
        "statsd" => (8125, Udp, None),
        "influxdb" => (8086, Tcp, Some("http")),
        "splunk_hec" => (8088, Tcp, Some("http")),
        "sapm" => (7276, Tcp, Some("http")),
        "signalfx" => (9943, Tcp, Some("http")),
        "awsxray" => (2000, Udp, None),
        "fluentforward" => (8006, Tcp, None),
        "datadog" => (8126, Tcp, Some("http")),
        _ => return None,
    })
}

/// Why an endpoint could not be turned into a port.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{path}: endpoint {value:?} is not host:port with a port between 1 and 65535; write it like \"0.0.0.0:4317\""
)]
pub struct EndpointError {
    pub path: String,
    pub value: String,
}

/// Parses the port of a `host:port` endpoint (`:4317`, `0.0.0.0:4317`,
/// `[::]:4317`, `localhost:4317`). `Ok(None)` when the endpoint uses
/// `${env:...}` expansion, which only the collector can resolve.
pub fn endpoint_port(path: &str, value: &str) -> Result<Option<i32>, EndpointError> {
    let err = || EndpointError {
        path: path.to_owned(),
        value: value.to_owned(),
    };
    if value.contains("${") {
        return Ok(None);
    }
    let (host, port) = value.rsplit_once(':').ok_or_else(err)?;
    if host.contains('/') || (host.contains(':') && !(host.starts_with('[') && host.ends_with(']')))
    {
        return Err(err());
    }
    match port.parse::<i32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(Some(p)),
        _ => Err(err()),
    }
}

/// A DNS-label-safe Service port name.
fn port_name(id: &str, suffix: Option<&str>) -> String {
    let mut base: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if let Some(s) = suffix {
        base.push('-');
        base.push_str(s);
    }
    let trimmed: String = base.trim_matches('-').chars().take(63).collect();
    trimmed.trim_end_matches('-').to_owned()
}

fn endpoint_of(v: &Value) -> Option<&str> {
    v.get("endpoint").and_then(Value::as_str)
}

/// Ports the collector listens on according to its config. Endpoint errors
/// are returned so validation can report them; the derived ports of the
/// valid endpoints are still returned.
pub fn derive_ports(config: &CollectorConfig) -> (Vec<DerivedPort>, Vec<EndpointError>) {
    let mut ports = Vec::new();
    let mut errors = Vec::new();
    let mut push = |ports: &mut Vec<DerivedPort>,
                    path: String,
                    endpoint: Option<&str>,
                    default_port: Option<i32>,
                    name: String,
                    protocol: PortProtocol,
                    app_protocol: Option<&str>,
                    otlp: Option<&'static str>| {
        let port = match endpoint {
            Some(ep) => match endpoint_port(&path, ep) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            None => default_port,
        };
        if let Some(port) = port {
            ports.push(DerivedPort {
                name,
                port,
                target_port: port,
                protocol,
                app_protocol: app_protocol.map(str::to_owned),
                otlp,
                source: path,
            });
        }
    };

    for (id, settings) in config.components(Kind::Receiver) {
        let (ty, _) = split_id(id);
        if let Some(protocols) = known_protocols(ty) {
            let enabled = settings.get("protocols").and_then(Value::as_object);
            for p in protocols {
                let Some(proto_settings) = enabled.and_then(|m| m.get(p.key)) else {
                    continue;
                };
                push(
                    &mut ports,
                    format!("receivers.{id}.protocols.{}.endpoint", p.key),
                    endpoint_of(proto_settings),
                    Some(p.default_port),
                    port_name(id, Some(p.suffix)),
                    p.protocol,
                    p.app_protocol,
                    p.otlp,
                );
            }
        } else if let Some((default_port, protocol, app)) = known_single(ty) {
            push(
                &mut ports,
                format!("receivers.{id}.endpoint"),
                endpoint_of(settings),
                Some(default_port),
                port_name(id, None),
                protocol,
                app,
                None,
            );
        } else if let Some(ep) = endpoint_of(settings) {
            push(
                &mut ports,
                format!("receivers.{id}.endpoint"),
                Some(ep),
                None,
                port_name(id, None),
                PortProtocol::Tcp,
                None,
                None,
            );
        }
    }
    for (id, settings) in config.components(Kind::Exporter) {
        if split_id(id).0 == "prometheus"
            && let Some(ep) = endpoint_of(settings)
        {
            push(
                &mut ports,
                format!("exporters.{id}.endpoint"),
                Some(ep),
                None,
                port_name(id, None),
                PortProtocol::Tcp,
                Some("http"),
                None,
            );
        }
    }
    (ports, errors)
}

/// Two listeners that would bind the same port in one pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{first}: port {port}/{protocol} is also used by {second}; give one of them another port")]
pub struct PortCollision {
    pub first: String,
    pub second: String,
    pub port: i32,
    pub protocol: &'static str,
}

/// Port collisions among derived ports (same number and transport).
pub fn collisions(ports: &[DerivedPort]) -> Vec<PortCollision> {
    let mut out = Vec::new();
    for (i, a) in ports.iter().enumerate() {
        for b in &ports[i + 1..] {
            if a.target_port == b.target_port && a.protocol == b.protocol {
                out.push(PortCollision {
                    first: a.source.clone(),
                    second: b.source.clone(),
                    port: a.target_port,
                    protocol: a.protocol.as_str(),
                });
            }
        }
    }
    out
}

/// Applies `spec.ports`: a user port replaces the derived port with the same
/// name or the same port number, otherwise it is added.
pub fn merge_user_ports(mut derived: Vec<DerivedPort>, user: &[CollectorPort]) -> Vec<DerivedPort> {
    for u in user {
        let replaced = derived
            .iter()
            .position(|d| d.name == u.name || d.port == u.port);
        let otlp = replaced.and_then(|i| derived[i].otlp);
        let port = DerivedPort {
            name: u.name.clone(),
            port: u.port,
            target_port: u.target_port.unwrap_or(u.port),
            protocol: u.protocol.unwrap_or_default(),
            app_protocol: u.app_protocol.clone(),
            otlp,
            source: format!("spec.ports.{}", u.name),
        };
        match replaced {
            Some(i) => derived[i] = port,
            None => derived.push(port),
        }
    }
    derived
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> CollectorConfig {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("test config must parse: {e}"))
    }

    #[test]
    fn otlp_receiver_yields_grpc_and_http_ports_with_otlp_flavour() {
        let c = config(
            "receivers: {otlp: {protocols: {grpc: {endpoint: 0.0.0.0:4317}, http: {endpoint: '0.0.0.0:4318'}}}}\n\
             service: {pipelines: {}}",
        );
        let (ports, errors) = derive_ports(&c);
        assert!(errors.is_empty(), "no endpoint errors expected: {errors:?}");
        let summary: Vec<_> = ports
            .iter()
            .map(|p| (p.name.as_str(), p.port, p.otlp))
            .collect();
        assert_eq!(
            summary,
            [
                ("otlp-grpc", 4317, Some(OTLP_GRPC)),
                ("otlp-http", 4318, Some(OTLP_HTTP))
            ]
        );
    }

    #[test]
    fn enabled_protocol_without_endpoint_gets_its_default_port() {
        let c = config(
            "receivers: {jaeger/in: {protocols: {thrift_compact: null}}, zipkin: null}\nservice: {}",
        );
        let (ports, _) = derive_ports(&c);
        let summary: Vec<_> = ports
            .iter()
            .map(|p| (p.name.as_str(), p.port, p.protocol))
            .collect();
        assert_eq!(
            summary,
            [
                ("jaeger-in-thrift-compact", 6831, PortProtocol::Udp),
                ("zipkin", 9411, PortProtocol::Tcp)
            ]
        );
    }

    #[test]
    fn endpoint_parsing_accepts_host_port_forms_and_rejects_garbage() {
        assert_eq!(endpoint_port("p", ":4317"), Ok(Some(4317)));
        assert_eq!(endpoint_port("p", "[::]:4318"), Ok(Some(4318)));
        assert_eq!(
            endpoint_port("p", "${env:MY_POD_IP}:4317"),
            Ok(None),
            "env expansion is left to the collector"
        );
        for bad in [
            "0.0.0.0",
            "0.0.0.0:abc",
            "0.0.0.0:70000",
            "http://0.0.0.0:4317",
            "::1:4317",
            "host:0",
        ] {
            assert!(endpoint_port("p", bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn same_port_twice_is_a_collision_but_tcp_and_udp_are_not() {
        let c = config(
            "receivers: {otlp: {protocols: {grpc: {endpoint: 0.0.0.0:9411}}}, zipkin: null, \
             jaeger: {protocols: {thrift_compact: {endpoint: 0.0.0.0:9411}}}}\nservice: {}",
        );
        let (ports, _) = derive_ports(&c);
        let found = collisions(&ports);
        assert_eq!(
            found.len(),
            1,
            "only the two TCP listeners collide: {found:?}"
        );
        assert_eq!(found[0].port, 9411);
    }

    #[test]
    fn user_ports_override_by_name_or_port_and_otherwise_add() {
        let c = config("receivers: {otlp: {protocols: {grpc: null}}}\nservice: {}");
        let (ports, _) = derive_ports(&c);
        let user = vec![
            CollectorPort {
                name: "otlp-grpc".into(),
                port: 14317,
                target_port: Some(4317),
                protocol: None,
                app_protocol: None,
            },
            CollectorPort {
                name: "metrics".into(),
                port: 8888,
                target_port: None,
                protocol: None,
                app_protocol: None,
            },
        ];
        let merged = merge_user_ports(ports, &user);
        let summary: Vec<_> = merged
            .iter()
            .map(|p| (p.name.as_str(), p.port, p.target_port, p.otlp))
            .collect();
        assert_eq!(
            summary,
            [
                ("otlp-grpc", 14317, 4317, Some(OTLP_GRPC)),
                ("metrics", 8888, 8888, None)
            ]
        );
    }
}
