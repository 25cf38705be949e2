//! One OTLP transport per signal: gRPC (tonic) or HTTP/protobuf (reqwest),
//! with failures classified as retryable or permanent per the OTLP spec.

use std::time::Duration;

use bytes::{BufMut, Bytes};
use ferrotel_api::probe_config::{OtlpProtocol, TlsConfig};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::settings::{Signal, SignalSettings};

/// The gRPC method of OTLP trace export.
const TRACE_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// The gRPC method of OTLP metrics export.
const METRICS_EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
/// The gRPC method of OTLP profiles export (alpha: `v1development`).
const PROFILES_EXPORT_PATH: &str =
    "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export";

/// Encodes a trace export request once, for [`OtlpClient::export_traces_encoded`].
pub fn encode_traces(request: &ExportTraceServiceRequest) -> Bytes {
    Bytes::from(request.encode_to_vec())
}

/// Encodes a profiles export request once, for
/// [`OtlpClient::export_profiles_encoded`].
pub fn encode_profiles(request: &ExportProfilesServiceRequest) -> Bytes {
    Bytes::from(request.encode_to_vec())
}

/// A gRPC codec whose requests are already-encoded protobuf bytes and whose
/// responses are decoded as `R`.
#[derive(Debug)]
struct EncodedCodec<R>(std::marker::PhantomData<fn() -> R>);

impl<R> Default for EncodedCodec<R> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

#[derive(Debug)]
struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

#[derive(Debug)]
struct MessageDecoder<R>(std::marker::PhantomData<fn() -> R>);

impl<R: Message + Default> Decoder for MessageDecoder<R> {
    type Item = R;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<R>, tonic::Status> {
        R::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable export response: {e}")))
    }
}

impl<R: Message + Default + Send + 'static> Codec for EncodedCodec<R> {
    type Encode = Bytes;
    type Decode = R;
    type Encoder = BytesEncoder;
    type Decoder = MessageDecoder<R>;

    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> MessageDecoder<R> {
        MessageDecoder(std::marker::PhantomData)
    }
}

/// A failed export.
#[derive(Debug, thiserror::Error)]
#[error("OTLP {signal} export to {endpoint} failed: {message}")]
pub struct ExportError {
    pub signal: &'static str,
    pub endpoint: String,
    pub message: String,
    /// Worth retrying (collector unavailable, overloaded, timeout).
    pub retryable: bool,
    /// The server asked to wait this long (HTTP `Retry-After`).
    pub retry_after: Option<Duration>,
}

/// The exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot read TLS file {path:?} for the OTLP exporter; check exporter.tls or OTEL_EXPORTER_OTLP_CERTIFICATE"
    )]
    TlsFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid TLS settings for the OTLP exporter: {0}")]
    Tls(String),
    #[error("invalid OTLP endpoint {endpoint:?}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error(
        "invalid OTLP header {name:?}; header names must be lowercase ASCII tokens and values printable ASCII"
    )]
    Header { name: String },
    #[error("cannot build the HTTP client for the OTLP exporter")]
    Http(#[source] reqwest::Error),
}

#[derive(Clone, Debug)]
enum Transport {
    Grpc {
        channel: Channel,
        metadata: MetadataMap,
    },
    Http {
        client: reqwest::Client,
        url: String,
        headers: reqwest::header::HeaderMap,
    },
}

/// An OTLP client for one signal. Cheap to clone.
#[derive(Clone, Debug)]
pub struct OtlpClient {
    settings: SignalSettings,
    transport: Transport,
}

fn read(path: &str) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::TlsFile {
        path: path.to_owned(),
        source,
    })
}

fn grpc_tls(tls: &TlsConfig) -> Result<ClientTlsConfig, ClientError> {
    if tls.insecure_skip_verify {
        return Err(ClientError::Tls(
            "insecureSkipVerify is not supported for OTLP/gRPC; set exporter.tls.caFile to the collector's CA".into(),
        ));
    }
    let mut config = ClientTlsConfig::new().with_enabled_roots();
    if let Some(ca) = &tls.ca_file {
        config = config.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?))
        }
        (None, None) => {}
        _ => {
            return Err(ClientError::Tls(
                "mutual TLS needs both certFile and keyFile".into(),
            ));
        }
    }
    Ok(config)
}

fn http_client(settings: &SignalSettings) -> Result<reqwest::Client, ClientError> {
    // reqwest is built without a bundled crypto provider (its default, aws-lc,
    // would be a second TLS stack next to the ring one kube and tonic use);
    // installing ring is idempotent and a no-op when the process already did.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout);
    if let Some(tls) = &settings.tls {
        if let Some(ca) = &tls.ca_file {
            let certs = reqwest::Certificate::from_pem_bundle(&read(ca)?)
                .map_err(|e| ClientError::Tls(e.to_string()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => {
                let mut pem = read(cert)?;
                pem.extend_from_slice(b"\n");
                pem.extend(read(key)?);
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| ClientError::Tls(e.to_string()))?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => {
                return Err(ClientError::Tls(
                    "mutual TLS needs both certFile and keyFile".into(),
                ));
            }
        }
        if tls.insecure_skip_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
    }
    builder.build().map_err(ClientError::Http)
}

impl OtlpClient {
    /// Builds the client; gRPC connects lazily, so a collector that is down
    /// at startup is not an error (exports fail and are retried).
    pub fn new(settings: SignalSettings) -> Result<Self, ClientError> {
        let transport = match settings.protocol {
            OtlpProtocol::Grpc => {
                let mut endpoint = Endpoint::from_shared(settings.endpoint.clone())
                    .map_err(|source| ClientError::Endpoint {
                        endpoint: settings.endpoint.clone(),
                        source,
                    })?
                    .timeout(settings.timeout)
                    .connect_timeout(settings.timeout);
                let tls = match &settings.tls {
                    Some(tls) => Some(grpc_tls(tls)?),
                    None if settings.endpoint.starts_with("https://") => {
                        Some(ClientTlsConfig::new().with_enabled_roots())
                    }
                    None => None,
                };
                if let Some(tls) = tls {
                    endpoint =
                        endpoint
                            .tls_config(tls)
                            .map_err(|source| ClientError::Endpoint {
                                endpoint: settings.endpoint.clone(),
                                source,
                            })?;
                }
                let mut metadata = MetadataMap::new();
                for (name, value) in &settings.headers {
                    let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                        .map_err(|_| ClientError::Header { name: name.clone() })?;
                    let value = MetadataValue::try_from(value.as_str())
                        .map_err(|_| ClientError::Header { name: name.clone() })?;
                    metadata.insert(key, value);
                }
                Transport::Grpc {
                    channel: endpoint.connect_lazy(),
                    metadata,
                }
            }
            OtlpProtocol::HttpProtobuf => {
                let mut headers = reqwest::header::HeaderMap::new();
                for (name, value) in &settings.headers {
                    let key = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| ClientError::Header { name: name.clone() })?;
                    let value = reqwest::header::HeaderValue::from_str(value)
                        .map_err(|_| ClientError::Header { name: name.clone() })?;
                    headers.insert(key, value);
                }
                Transport::Http {
                    client: http_client(&settings)?,
                    url: settings.endpoint.clone(),
                    headers,
                }
            }
        };
        Ok(Self {
            settings,
            transport,
        })
    }

    pub fn settings(&self) -> &SignalSettings {
        &self.settings
    }

    fn error(
        &self,
        message: String,
        retryable: bool,
        retry_after: Option<Duration>,
    ) -> ExportError {
        ExportError {
            signal: self.settings.signal.as_str(),
            endpoint: self.settings.endpoint.clone(),
            message,
            retryable,
            retry_after,
        }
    }

    /// Exports a request already encoded for this client's signal (see
    /// [`encode_traces`]): a batch retried after a failure is sent again
    /// without re-encoding or deep-copying its items (a clone of the
    /// request per attempt was a visible share of the probe's CPU).
    pub async fn export_encoded(&self, body: Bytes) -> Result<(), ExportError> {
        match self.settings.signal {
            Signal::Traces => self.export_traces_encoded(body).await,
            Signal::Metrics => self.export_metrics_encoded(body).await,
            Signal::Profiles => self.export_profiles_encoded(body).await,
        }
    }

    /// Exports spans already encoded as an `ExportTraceServiceRequest`.
    pub async fn export_traces_encoded(&self, body: Bytes) -> Result<(), ExportError> {
        self.unary_encoded(body, TRACE_EXPORT_PATH, |r: ExportTraceServiceResponse| {
            r.partial_success
                .filter(|p| p.rejected_spans > 0)
                .map(|p| (p.rejected_spans, p.error_message))
        })
        .await
    }

    /// Exports spans.
    pub async fn export_traces(
        &self,
        request: ExportTraceServiceRequest,
    ) -> Result<(), ExportError> {
        self.export_traces_encoded(encode_traces(&request)).await
    }

    /// Exports metrics already encoded as an `ExportMetricsServiceRequest`.
    pub async fn export_metrics_encoded(&self, body: Bytes) -> Result<(), ExportError> {
        self.unary_encoded(
            body,
            METRICS_EXPORT_PATH,
            |r: ExportMetricsServiceResponse| {
                r.partial_success
                    .filter(|p| p.rejected_data_points > 0)
                    .map(|p| (p.rejected_data_points, p.error_message))
            },
        )
        .await
    }

    /// Exports metrics.
    pub async fn export_metrics(
        &self,
        request: ExportMetricsServiceRequest,
    ) -> Result<(), ExportError> {
        self.export_metrics_encoded(request.encode_to_vec().into())
            .await
    }

    /// Exports profiles already encoded as an `ExportProfilesServiceRequest`
    /// (OTLP `v1development`: the collector needs its
    /// `service.profilesSupport` feature gate and a profiles pipeline).
    pub async fn export_profiles_encoded(&self, body: Bytes) -> Result<(), ExportError> {
        self.unary_encoded(
            body,
            PROFILES_EXPORT_PATH,
            |r: ExportProfilesServiceResponse| {
                r.partial_success
                    .filter(|p| p.rejected_profiles > 0)
                    .map(|p| (p.rejected_profiles, p.error_message))
            },
        )
        .await
    }

    /// Sends `body` as the unary gRPC call `path` (or an HTTP POST to the
    /// signal's URL), and logs what the collector's partial success says
    /// it rejected.
    async fn unary_encoded<R: Message + Default + Send + 'static>(
        &self,
        body: Bytes,
        path: &'static str,
        rejected: impl FnOnce(R) -> Option<(i64, String)>,
    ) -> Result<(), ExportError> {
        match &self.transport {
            Transport::Grpc { channel, metadata } => {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                // A channel that cannot become ready is a transport failure
                // (kept as the status' source, hence retryable).
                grpc.ready()
                    .await
                    .map_err(|e| self.grpc_error(tonic::Status::from_error(e.into())))?;
                let mut req = tonic::Request::new(body);
                *req.metadata_mut() = metadata.clone();
                let response = grpc
                    .unary(
                        req,
                        PathAndQuery::from_static(path),
                        EncodedCodec::<R>::default(),
                    )
                    .await;
                match response {
                    Ok(ok) => {
                        if let Some((n, message)) = rejected(ok.into_inner()) {
                            let signal = self.settings.signal.as_str();
                            tracing::warn!(signal, rejected = n, %message, "Collector rejected part of an export");
                        }
                        Ok(())
                    }
                    Err(status) => Err(self.grpc_error(status)),
                }
            }
            Transport::Http { .. } => self.post(body).await,
        }
    }

    fn grpc_error(&self, status: tonic::Status) -> ExportError {
        use tonic::Code;
        // The OTLP spec's retryable codes...
        let spec_retryable = matches!(
            status.code(),
            Code::Cancelled
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Aborted
                | Code::OutOfRange
                | Code::Unavailable
                | Code::DataLoss
        );
        // ...plus failures tonic synthesised locally from a transport error
        // (they carry a source): a collector killed mid-request surfaces as
        // `Unknown`/`Internal` "transport error", which is as transient as a
        // refused connection. Statuses the collector itself sent have none.
        let transport_failure = std::error::Error::source(&status).is_some();
        let mut message = format!("gRPC status {:?}: {}", status.code(), status.message());
        if let Some(source) = std::error::Error::source(&status) {
            message.push_str(&format!(" ({source})"));
        }
        self.error(message, spec_retryable || transport_failure, None)
    }

    async fn post(&self, body: Bytes) -> Result<(), ExportError> {
        let Transport::Http {
            client,
            url,
            headers,
        } = &self.transport
        else {
            unreachable!("post is only called for HTTP transports");
        };
        let response = client
            .post(url)
            .headers(headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body)
            .send()
            .await;
        match response {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let retryable = matches!(status, 429 | 502 | 503 | 504);
                let text = response.text().await.unwrap_or_default();
                self.error_result(
                    format!(
                        "HTTP {status}: {}",
                        text.chars().take(200).collect::<String>()
                    ),
                    retryable,
                    retry_after,
                )
            }
            // Connection refused/reset, DNS, timeouts: the collector is
            // (temporarily) unreachable.
            Err(err) => self.error_result(format!("{err}"), true, None),
        }
    }

    fn error_result(
        &self,
        message: String,
        retryable: bool,
        retry_after: Option<Duration>,
    ) -> Result<(), ExportError> {
        Err(self.error(message, retryable, retry_after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::settings::{ExportSettings, Signal};
    use ferrotel_api::probe_config::ExporterConfig;

    fn client() -> OtlpClient {
        let config = ExporterConfig {
            endpoint: "http://127.0.0.1:1".into(),
            ..Default::default()
        };
        let settings = ExportSettings::resolve(&config, &|_| None).expect("settings");
        assert_eq!(settings.traces.signal, Signal::Traces);
        OtlpClient::new(settings.traces).expect("a lazy gRPC client builds without a collector")
    }

    #[tokio::test]
    async fn grpc_failures_are_classified_per_the_otlp_spec() {
        let c = client();
        assert!(
            c.grpc_error(tonic::Status::unavailable("down")).retryable,
            "UNAVAILABLE is retried"
        );
        assert!(
            c.grpc_error(tonic::Status::resource_exhausted("busy"))
                .retryable,
            "RESOURCE_EXHAUSTED is retried"
        );
        assert!(
            !c.grpc_error(tonic::Status::invalid_argument("bad"))
                .retryable,
            "INVALID_ARGUMENT is permanent"
        );
        assert!(
            !c.grpc_error(tonic::Status::unauthenticated("who"))
                .retryable,
            "UNAUTHENTICATED is permanent"
        );
        let local = tonic::Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert!(
            c.grpc_error(local).retryable,
            "a transport failure synthesised locally is retried"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_retryable_failure() {
        let err = client()
            .export_traces(ExportTraceServiceRequest::default())
            .await
            .expect_err("nothing listens on port 1");
        assert!(err.retryable, "connection refused must be retried: {err}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_retryable_for_pre_encoded_spans_too() {
        let body = encode_traces(&ExportTraceServiceRequest::default());
        let err = client()
            .export_traces_encoded(body)
            .await
            .expect_err("nothing listens on port 1");
        assert!(err.retryable, "connection refused must be retried: {err}");
    }
}
