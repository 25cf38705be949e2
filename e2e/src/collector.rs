//! The real OpenTelemetry Collector (our ocb-built distribution, `otelcol`
//! from `make tools`) as a local process, and a reader for what its `file`
//! exporter writes (OTLP/JSON, one export request per line).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferrotel_api::collector::CollectorConfig;
use serde_json::Value;

use crate::process::{self, Process};
use crate::tools::try_tool_path;
use crate::{Error, FATAL, Result, free_port, wait_for};

/// The line the collector logs once every pipeline runs.
const READY_LINE: &str = "Everything is ready";
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the file exporter flushes; the settle window of
/// [`Collector::wait_for_spans`] is a few of these.
const FLUSH_INTERVAL_MS: u64 = 100;

/// A running collector. Dropping it kills the process; its directory
/// (config, output files, log) is deleted unless a test panicked.
#[derive(Debug)]
pub struct Collector {
    process: Process,
    dir: PathBuf,
    config_path: PathBuf,
    grpc_port: Option<u16>,
    http_port: Option<u16>,
    traces_file: Option<PathBuf>,
    metrics_file: Option<PathBuf>,
    logs_file: Option<PathBuf>,
    profiles_file: Option<PathBuf>,
    panics_at_start: usize,
    /// Address the OTLP receivers listen on.
    host: String,
}

impl Collector {
    /// Starts a collector with an OTLP receiver (gRPC and HTTP on free
    /// loopback ports) and `file` exporters writing traces, metrics and logs
    /// as OTLP/JSON, flushed every 100 ms. No batch processor: data is written
    /// as soon as it is received. Read it back with [`Collector::spans`] and
    /// [`Collector::metrics`].
    pub async fn start_with_file_exporter() -> Result<Collector> {
        Self::start_with_files("127.0.0.1", false).await
    }

    /// Like [`Collector::start_with_file_exporter`], listening on `host`
    /// instead of loopback: the host end of a real node's veth, where the
    /// node's pods (an in-cluster collector exporting to this one) reach it.
    pub async fn start_with_file_exporter_on(host: &str) -> Result<Collector> {
        Self::start_with_files(host, false).await
    }

    /// Like [`Collector::start_with_file_exporter`], plus a `profiles`
    /// pipeline writing OTLP/JSON to [`Collector::profiles_file`] (profiles
    /// are alpha: the collector runs with their feature gate, as the
    /// operator runs it).
    pub async fn start_with_profiles() -> Result<Collector> {
        Self::start_with_files("127.0.0.1", true).await
    }

    async fn start_with_files(host: &str, profiles: bool) -> Result<Collector> {
        let dir = new_dir()?;
        let grpc = free_port();
        let http = free_port();
        let outputs = FileOutputs {
            traces: dir.join("traces.json"),
            metrics: Some(dir.join("metrics.json")),
            logs: Some(dir.join("logs.json")),
            profiles: profiles.then(|| dir.join("profiles.json")),
        };
        let config = file_exporter_config(host, grpc, Some(http), &outputs);
        let mut c = Self::start_in(dir, &config).await?;
        c.http_port = Some(http);
        c.host = host.to_owned();
        c.set_outputs(grpc, outputs);
        Ok(c)
    }

    /// Where the `profiles` pipeline writes (OTLP/JSON, one export request
    /// per line); read it with [`read_profile_samples`].
    pub fn profiles_file(&self) -> Option<&Path> {
        self.profiles_file.as_deref()
    }

    /// A collector that can be stopped and started again in its place: its
    /// OTLP/gRPC receiver on `grpc_port`, its file exporters writing where
    /// the test says (files that outlive it), otherwise like
    /// [`Collector::start_with_file_exporter`]. For outage tests.
    pub async fn start_with_file_exporter_at(
        grpc_port: u16,
        outputs: FileOutputs,
    ) -> Result<Collector> {
        let config = file_exporter_config("127.0.0.1", grpc_port, None, &outputs);
        let mut c = Self::start_in(new_dir()?, &config).await?;
        c.set_outputs(grpc_port, outputs);
        Ok(c)
    }

    fn set_outputs(&mut self, grpc_port: u16, outputs: FileOutputs) {
        self.grpc_port = Some(grpc_port);
        self.traces_file = Some(outputs.traces);
        self.metrics_file = outputs.metrics;
        self.logs_file = outputs.logs;
        self.profiles_file = outputs.profiles;
    }

    /// Starts a collector with any configuration (YAML text) and waits until
    /// it reports ready. Mind ports: set `service.telemetry.metrics.level:
    /// none` (or a free port) or parallel collectors fight over :8888.
    pub async fn start(config_yaml: &str) -> Result<Collector> {
        Self::start_in(new_dir()?, config_yaml).await
    }

    /// Runs the collector on `config_yaml` with the command line the
    /// operator gives a TelemetryCollector of that config (feature gates
    /// included).
    async fn start_in(dir: PathBuf, config_yaml: &str) -> Result<Collector> {
        let config_path = dir.join("config.yaml");
        std::fs::write(&config_path, config_yaml).map_err(|source| Error::Io {
            path: config_path.clone(),
            source,
        })?;
        let mut cmd = Command::new(try_tool_path("otelcol")?);
        cmd.args(command_args(config_yaml, &config_path));
        let log = dir.join("otelcol.log");
        let panics_at_start = process::panics_observed();
        let process = Process::spawn("otelcol", cmd, &log)?;
        let mut collector = Collector {
            process,
            dir,
            config_path,
            grpc_port: None,
            http_port: None,
            traces_file: None,
            metrics_file: None,
            logs_file: None,
            profiles_file: None,
            panics_at_start,
            host: "127.0.0.1".to_owned(),
        };
        let log_path = log.clone();
        let proc = std::sync::Mutex::new(&mut collector.process);
        wait_for(
            "the collector to log \"Everything is ready\"",
            START_TIMEOUT,
            || {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                let status = proc.lock().map(|mut p| p.check_running()).unwrap_or(Ok(()));
                async move {
                    if let Err(e) = status {
                        return Err(format!("{FATAL}{e}"));
                    }
                    if text.contains(READY_LINE) {
                        Ok(())
                    } else {
                        Err("not ready yet".into())
                    }
                }
            },
        )
        .await
        .map_err(|e| match collector.process.check_running() {
            Err(fatal) => fatal,
            Ok(()) => e,
        })?;
        Ok(collector)
    }

    /// `<host>:<port>` of the OTLP/gRPC receiver (as `telemetrygen
    /// --otlp-endpoint` wants it). Only for [`Collector::start_with_file_exporter`].
    pub fn grpc_endpoint(&self) -> String {
        format!(
            "{}:{}",
            self.host,
            self.grpc_port.expect("no gRPC receiver known")
        )
    }

    /// `<host>:<port>` of the OTLP/HTTP receiver.
    pub fn http_endpoint(&self) -> String {
        format!(
            "{}:{}",
            self.host,
            self.http_port.expect("no HTTP receiver known")
        )
    }

    /// `http://127.0.0.1:<port>` of the OTLP/gRPC receiver (for SDKs and the probe).
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_endpoint())
    }

    /// `http://127.0.0.1:<port>` of the OTLP/HTTP receiver (append `/v1/traces`...).
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_endpoint())
    }

    /// The collector's own log.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The configuration file it runs with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Its directory (config, output files, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Fails (with its log) if the collector has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.process.check_running()
    }

    /// Every span the file exporter has written so far.
    pub fn spans(&self) -> Result<Vec<Span>> {
        let path = self.traces_file.as_ref().ok_or_else(|| {
            Error::Collector("spans() needs Collector::start_with_file_exporter".into())
        })?;
        read_spans(path)
    }

    /// Every metric data point the file exporter has written so far.
    pub fn metrics(&self) -> Result<Vec<MetricPoint>> {
        let path = self.metrics_file.as_ref().ok_or_else(|| {
            Error::Collector("metrics() needs Collector::start_with_file_exporter".into())
        })?;
        read_metrics(path)
    }

    /// The raw OTLP/JSON logs file (one export request per line), if any.
    pub fn logs_file(&self) -> Option<&Path> {
        self.logs_file.as_deref()
    }

    /// Waits until at least `at_least` spans matching `filter` were written
    /// and their number stayed the same for a few flush intervals (so late
    /// duplicates would be seen), then returns the matching spans. The caller
    /// asserts the exact count.
    pub async fn wait_for_spans(
        &self,
        at_least: usize,
        timeout: Duration,
        filter: impl Fn(&Span) -> bool,
    ) -> Result<Vec<Span>> {
        let settle = 5;
        let mut last_count = usize::MAX;
        let mut stable_polls = 0;
        let filter = &filter;
        let last_count = &mut last_count;
        let stable_polls = &mut stable_polls;
        wait_for(
            &format!("{at_least} spans in the collector's file exporter"),
            timeout,
            move || {
                let result = self
                    .spans()
                    .map(|all| all.into_iter().filter(|s| filter(s)).collect::<Vec<_>>());
                let verdict = match result {
                    Err(e) => Err(e.to_string()),
                    Ok(spans) if spans.len() < at_least => {
                        *last_count = spans.len();
                        Err(format!("{} of {at_least} spans so far", spans.len()))
                    }
                    Ok(spans) => {
                        if spans.len() == *last_count {
                            *stable_polls += 1;
                        } else {
                            *stable_polls = 0;
                            *last_count = spans.len();
                        }
                        if *stable_polls >= settle {
                            Ok(spans)
                        } else {
                            Err(format!(
                                "{} spans, waiting for the count to settle",
                                spans.len()
                            ))
                        }
                    }
                };
                async move {
                    if verdict.is_err() {
                        // Poll at the flush cadence, not faster.
                        tokio::time::sleep(Duration::from_millis(FLUSH_INTERVAL_MS)).await;
                    }
                    verdict
                }
            },
        )
        .await
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.process.kill();
        if std::thread::panicking() || process::panics_observed() > self.panics_at_start {
            eprintln!(
                "ferrotel-e2e: test failed; collector files kept in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Where a collector's file exporters write (OTLP/JSON, one export request
/// per line); a signal without a file is not received.
#[derive(Clone, Debug)]
pub struct FileOutputs {
    pub traces: PathBuf,
    pub metrics: Option<PathBuf>,
    pub logs: Option<PathBuf>,
    pub profiles: Option<PathBuf>,
}

/// An OTLP receiver on `host` (gRPC, and HTTP if given) and one file
/// exporter per signal of `outputs`, flushed every 100 ms. No batch
/// processor: data is written as soon as it is received.
fn file_exporter_config(host: &str, grpc: u16, http: Option<u16>, outputs: &FileOutputs) -> String {
    let mut receivers = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: {host}:{grpc}\n"
    );
    if let Some(http) = http {
        receivers.push_str(&format!("      http:\n        endpoint: {host}:{http}\n"));
    }
    let signals = [
        ("traces", Some(outputs.traces.as_path())),
        ("metrics", outputs.metrics.as_deref()),
        ("logs", outputs.logs.as_deref()),
        ("profiles", outputs.profiles.as_deref()),
    ];
    let mut exporters = String::from("exporters:\n");
    let mut pipelines =
        String::from("service:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n");
    for (signal, path) in signals {
        let Some(path) = path else { continue };
        exporters.push_str(&format!(
            "  file/{signal}:\n    path: {}\n    flush_interval: {FLUSH_INTERVAL_MS}ms\n",
            path.display()
        ));
        pipelines.push_str(&format!(
            "    {signal}:\n      receivers: [otlp]\n      exporters: [file/{signal}]\n"
        ));
    }
    format!("{receivers}{exporters}{pipelines}")
}

fn new_dir() -> Result<PathBuf> {
    tempfile::Builder::new()
        .prefix("ferrotel-otelcol-")
        .tempdir()
        .map(|d| d.keep())
        .map_err(|source| Error::Io {
            path: std::env::temp_dir(),
            source,
        })
}

/// The operator's command line for the collector config `config_yaml`
/// stored at `path` ([`CollectorConfig::command_args`]). A text that is not
/// even a TelemetryCollector config (the API server would refuse it) needs
/// no gate: the collector judges it as it is.
fn command_args(config_yaml: &str, path: &Path) -> Vec<String> {
    serde_yaml::from_str::<CollectorConfig>(config_yaml)
        .unwrap_or_default()
        .command_args(&path.display().to_string())
}

/// Runs `otelcol validate` on a configuration, with the command line the
/// operator would run it with (feature gates included); `Err` carries its
/// complaint.
pub fn validate_config(config_yaml: &str) -> std::result::Result<(), String> {
    let otelcol = try_tool_path("otelcol").map_err(|e| e.to_string())?;
    let file = tempfile::Builder::new()
        .prefix("ferrotel-otelcol-validate-")
        .suffix(".yaml")
        .tempfile()
        .map_err(|e| format!("cannot create a temporary file: {e}"))?;
    std::fs::write(file.path(), config_yaml)
        .map_err(|e| format!("cannot write {}: {e}", file.path().display()))?;
    let out = Command::new(otelcol)
        .arg("validate")
        .args(command_args(config_yaml, file.path()))
        .output()
        .map_err(|e| format!("cannot run otelcol validate: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )
        .trim()
        .to_string())
    }
}

/// An OTLP attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// `stringValue`
    Str(String),
    /// `intValue`
    Int(i64),
    /// `doubleValue`
    Double(f64),
    /// `boolValue`
    Bool(bool),
    /// `bytesValue` (base64 text as written)
    Bytes(String),
    /// `arrayValue`
    Array(Vec<AttrValue>),
    /// `kvlistValue`
    Map(BTreeMap<String, AttrValue>),
    /// An empty value.
    Empty,
}

impl AttrValue {
    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an int value.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    fn from_json(v: &Value) -> AttrValue {
        let Some(obj) = v.as_object() else {
            return AttrValue::Empty;
        };
        if let Some(s) = obj.get("stringValue").and_then(Value::as_str) {
            AttrValue::Str(s.to_string())
        } else if let Some(i) = obj.get("intValue") {
            AttrValue::Int(json_i64(i))
        } else if let Some(d) = obj.get("doubleValue") {
            AttrValue::Double(json_f64(d))
        } else if let Some(b) = obj.get("boolValue").and_then(Value::as_bool) {
            AttrValue::Bool(b)
        } else if let Some(b) = obj.get("bytesValue").and_then(Value::as_str) {
            AttrValue::Bytes(b.to_string())
        } else if let Some(a) = obj.get("arrayValue") {
            AttrValue::Array(
                a.get("values")
                    .and_then(Value::as_array)
                    .map(|vs| vs.iter().map(AttrValue::from_json).collect())
                    .unwrap_or_default(),
            )
        } else if let Some(kv) = obj.get("kvlistValue") {
            AttrValue::Map(attributes(kv.get("values")))
        } else {
            AttrValue::Empty
        }
    }
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Str(s) | AttrValue::Bytes(s) => f.write_str(s),
            AttrValue::Int(i) => write!(f, "{i}"),
            AttrValue::Double(d) => write!(f, "{d}"),
            AttrValue::Bool(b) => write!(f, "{b}"),
            AttrValue::Array(a) => {
                let items: Vec<String> = a.iter().map(ToString::to_string).collect();
                write!(f, "[{}]", items.join(","))
            }
            AttrValue::Map(m) => {
                let items: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "{{{}}}", items.join(","))
            }
            AttrValue::Empty => Ok(()),
        }
    }
}

/// One span as exported, flattened with its resource and scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Span name.
    pub name: String,
    /// OTLP `SpanKind` number: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i64,
    /// Hex trace id (32 chars).
    pub trace_id: String,
    /// Hex span id (16 chars).
    pub span_id: String,
    /// Hex parent span id, empty for a root span.
    pub parent_span_id: String,
    /// Span attributes.
    pub attributes: BTreeMap<String, AttrValue>,
    /// Resource attributes (`service.name`, `k8s.pod.name`, ...).
    pub resource: BTreeMap<String, AttrValue>,
    /// Instrumentation scope name.
    pub scope: String,
    /// Start time, ns since the epoch.
    pub start_ns: u64,
    /// End time, ns since the epoch.
    pub end_ns: u64,
    /// Status code: 0 unset, 1 ok, 2 error.
    pub status_code: i64,
    /// Status message.
    pub status_message: String,
}

impl Span {
    /// A string span attribute.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(AttrValue::as_str)
    }

    /// An integer span attribute.
    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        self.attributes.get(key).and_then(AttrValue::as_i64)
    }

    /// A string resource attribute.
    pub fn resource_str(&self, key: &str) -> Option<&str> {
        self.resource.get(key).and_then(AttrValue::as_str)
    }

    /// `service.name` of the resource.
    pub fn service_name(&self) -> Option<&str> {
        self.resource_str("service.name")
    }
}

/// One sample of an exported profile (OTLP `v1development`), with its stack
/// resolved through the request's dictionary.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileSample {
    /// Function names of the stack, leaf first (every line of a location:
    /// inlined calls first), as OTLP orders them.
    pub functions: Vec<String>,
    /// The sample's count (its first value).
    pub count: u64,
    /// Hex span id of the sample's link, if any.
    pub span_id: Option<String>,
    /// Hex trace id of the sample's link, if any.
    pub trace_id: Option<String>,
    /// Resource attributes of its `ResourceProfiles`.
    pub resource: BTreeMap<String, AttrValue>,
}

impl ProfileSample {
    /// `service.name` of the resource.
    pub fn service_name(&self) -> Option<&str> {
        self.resource
            .get("service.name")
            .and_then(AttrValue::as_str)
    }
}

/// Reads every profile sample of a profiles file written by the `file`
/// exporter (one `ExportProfilesServiceRequest` per line). A missing file
/// reads as no samples.
pub fn read_profile_samples(path: &Path) -> Result<Vec<ProfileSample>> {
    let mut out = Vec::new();
    for request in read_lines(path)? {
        let dict = request.get("dictionary").unwrap_or(&Value::Null);
        let table = |name: &str| array(dict, name).collect::<Vec<_>>();
        let (links, stacks, locations, functions, strings) = (
            table("linkTable"),
            table("stackTable"),
            table("locationTable"),
            table("functionTable"),
            table("stringTable"),
        );
        // Index 0 of every table is the empty entry, and 0 is omitted in JSON.
        let index = |v: Option<&Value>| v.map(json_u64).unwrap_or(0) as usize;
        let function_name = |line: &Value| {
            functions
                .get(index(line.get("functionIndex")))
                .and_then(|f| strings.get(index(f.get("nameStrindex"))))
                .and_then(|s| s.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        // The collector writes a profile's resource with its keys and
        // string values in the request's string table.
        let string_at = |v: Option<&Value>| {
            strings
                .get(index(v))
                .and_then(|s| s.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let resource_of = |rp: &Value| -> BTreeMap<String, AttrValue> {
            array(rp.get("resource").unwrap_or(&Value::Null), "attributes")
                .map(|kv| {
                    let key = kv
                        .get("key")
                        .and_then(Value::as_str)
                        .map_or_else(|| string_at(kv.get("keyStrindex")), str::to_owned);
                    let value = kv.get("value").map_or(AttrValue::Empty, |v| {
                        match v.get("stringValueStrindex") {
                            Some(i) => AttrValue::Str(string_at(Some(i))),
                            None => AttrValue::from_json(v),
                        }
                    });
                    (key, value)
                })
                .collect()
        };
        for rp in array(&request, "resourceProfiles") {
            let resource = resource_of(rp);
            for sp in array(rp, "scopeProfiles") {
                for profile in array(sp, "profiles") {
                    for sample in array(profile, "samples") {
                        let link = match index(sample.get("linkIndex")) {
                            0 => None,
                            i => links.get(i).copied(),
                        };
                        let stack = stacks.get(index(sample.get("stackIndex"))).copied();
                        let functions = stack
                            .into_iter()
                            .flat_map(|s| array(s, "locationIndices"))
                            .filter_map(|l| locations.get(index(Some(l))).copied())
                            .flat_map(|l| array(l, "lines"))
                            .map(function_name)
                            .collect();
                        out.push(ProfileSample {
                            functions,
                            count: sample
                                .get("values")
                                .and_then(|v| v.get(0))
                                .map(json_u64)
                                .unwrap_or(0),
                            span_id: link.map(|l| string(l, "spanId")),
                            trace_id: link.map(|l| string(l, "traceId")),
                            resource: resource.clone(),
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// One metric data point as exported, flattened with its metric, resource and scope.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    /// Metric name.
    pub name: String,
    /// Unit.
    pub unit: String,
    /// `sum`, `gauge`, `histogram`, `exponentialHistogram` or `summary`.
    pub kind: String,
    /// Data point attributes.
    pub attributes: BTreeMap<String, AttrValue>,
    /// Resource attributes.
    pub resource: BTreeMap<String, AttrValue>,
    /// Instrumentation scope name.
    pub scope: String,
    /// Start time, ns since the epoch (0 if absent).
    pub start_ns: u64,
    /// Time, ns since the epoch.
    pub time_ns: u64,
    /// Value of a sum or gauge point (`asInt` converted), else `None`.
    pub value: Option<f64>,
    /// Count of a histogram or summary point.
    pub count: Option<u64>,
    /// Sum of a histogram or summary point.
    pub sum: Option<f64>,
    /// Histogram bucket counts.
    pub bucket_counts: Vec<u64>,
    /// Histogram explicit bounds.
    pub explicit_bounds: Vec<f64>,
}

impl MetricPoint {
    /// A string data-point attribute.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(AttrValue::as_str)
    }
}

/// Reads every line of an OTLP/JSON traces file written by the `file` exporter.
/// A missing file means nothing was written yet (no spans). A torn last line
/// (being flushed) is ignored.
pub fn read_spans(path: &Path) -> Result<Vec<Span>> {
    let mut spans = Vec::new();
    for request in read_lines(path)? {
        for rs in array(&request, "resourceSpans") {
            let resource = attributes(rs.get("resource").and_then(|r| r.get("attributes")));
            for ss in array(rs, "scopeSpans") {
                let scope = scope_name(ss);
                for s in array(ss, "spans") {
                    spans.push(Span {
                        name: string(s, "name"),
                        kind: s.get("kind").map(json_i64).unwrap_or(0),
                        trace_id: string(s, "traceId"),
                        span_id: string(s, "spanId"),
                        parent_span_id: string(s, "parentSpanId"),
                        attributes: attributes(s.get("attributes")),
                        resource: resource.clone(),
                        scope: scope.clone(),
                        start_ns: s.get("startTimeUnixNano").map(json_u64).unwrap_or(0),
                        end_ns: s.get("endTimeUnixNano").map(json_u64).unwrap_or(0),
                        status_code: s
                            .get("status")
                            .and_then(|st| st.get("code"))
                            .map(json_i64)
                            .unwrap_or(0),
                        status_message: s
                            .get("status")
                            .map(|st| string(st, "message"))
                            .unwrap_or_default(),
                    });
                }
            }
        }
    }
    Ok(spans)
}

/// Reads every data point of an OTLP/JSON metrics file written by the `file` exporter.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricPoint>> {
    let mut points = Vec::new();
    for request in read_lines(path)? {
        for rm in array(&request, "resourceMetrics") {
            let resource = attributes(rm.get("resource").and_then(|r| r.get("attributes")));
            for sm in array(rm, "scopeMetrics") {
                let scope = scope_name(sm);
                for m in array(sm, "metrics") {
                    for kind in [
                        "sum",
                        "gauge",
                        "histogram",
                        "exponentialHistogram",
                        "summary",
                    ] {
                        let Some(data) = m.get(kind) else { continue };
                        for dp in array(data, "dataPoints") {
                            let value = dp
                                .get("asDouble")
                                .map(json_f64)
                                .or_else(|| dp.get("asInt").map(|v| json_i64(v) as f64));
                            points.push(MetricPoint {
                                name: string(m, "name"),
                                unit: string(m, "unit"),
                                kind: kind.to_string(),
                                attributes: attributes(dp.get("attributes")),
                                resource: resource.clone(),
                                scope: scope.clone(),
                                start_ns: dp.get("startTimeUnixNano").map(json_u64).unwrap_or(0),
                                time_ns: dp.get("timeUnixNano").map(json_u64).unwrap_or(0),
                                value,
                                count: dp.get("count").map(json_u64),
                                sum: dp.get("sum").map(json_f64),
                                bucket_counts: dp
                                    .get("bucketCounts")
                                    .and_then(Value::as_array)
                                    .map(|a| a.iter().map(json_u64).collect())
                                    .unwrap_or_default(),
                                explicit_bounds: dp
                                    .get("explicitBounds")
                                    .and_then(Value::as_array)
                                    .map(|a| a.iter().map(json_f64).collect())
                                    .unwrap_or_default(),
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(points)
}

fn read_lines(path: &Path) -> Result<Vec<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let complete = match text.rfind('\n') {
        Some(i) => &text[..i],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| {
                Error::Collector(format!("bad OTLP/JSON line in {}: {e}", path.display()))
            })
        })
        .collect()
}

fn array<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter())
        .into_iter()
        .flatten()
}

fn string(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn scope_name(v: &Value) -> String {
    v.get("scope")
        .map(|s| string(s, "name"))
        .unwrap_or_default()
}

fn attributes(list: Option<&Value>) -> BTreeMap<String, AttrValue> {
    list.and_then(Value::as_array)
        .map(|kvs| {
            kvs.iter()
                .filter_map(|kv| {
                    let key = kv.get("key")?.as_str()?.to_string();
                    let value = kv
                        .get("value")
                        .map(AttrValue::from_json)
                        .unwrap_or(AttrValue::Empty);
                    Some((key, value))
                })
                .collect()
        })
        .unwrap_or_default()
}

// OTLP/JSON writes 64-bit integers as strings.
fn json_i64(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

fn json_u64(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

fn json_f64(v: &Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_json_lines_become_spans_with_resource_and_typed_attributes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("traces.json");
        let line = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},"scopeSpans":[{"scope":{"name":"ferrotel"},"spans":[{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","parentSpanId":"","name":"GET /users/{id}","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000000001000","attributes":[{"key":"http.response.status_code","value":{"intValue":"200"}},{"key":"http.route","value":{"stringValue":"/users/{id}"}}],"status":{"code":2,"message":"boom"}}]}]}]}"#;
        // The second, torn line is being flushed and must be ignored.
        std::fs::write(&path, format!("{line}\n{line}\n{{\"resourceSp")).expect("write");
        let spans = read_spans(&path).expect("parse");
        assert_eq!(spans.len(), 2, "two complete lines, one span each");
        let s = &spans[0];
        assert_eq!(s.name, "GET /users/{id}");
        assert_eq!(s.kind, 2);
        assert_eq!(s.service_name(), Some("shop"));
        assert_eq!(s.attr_i64("http.response.status_code"), Some(200));
        assert_eq!(s.attr_str("http.route"), Some("/users/{id}"));
        assert_eq!(s.end_ns - s.start_ns, 1000);
        assert_eq!(s.status_code, 2);
        assert_eq!(s.scope, "ferrotel");
    }

    #[test]
    fn otlp_json_metrics_become_points_for_sums_and_histograms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("metrics.json");
        let line = r#"{"resourceMetrics":[{"resource":{"attributes":[]},"scopeMetrics":[{"scope":{"name":"s"},"metrics":[{"name":"requests","unit":"1","sum":{"dataPoints":[{"asInt":"7","timeUnixNano":"5"}],"aggregationTemporality":2,"isMonotonic":true}},{"name":"http.server.request.duration","unit":"s","histogram":{"dataPoints":[{"count":"3","sum":0.5,"bucketCounts":["1","2"],"explicitBounds":[0.1],"attributes":[{"key":"http.route","value":{"stringValue":"/"}}]}]}}]}]}]}"#;
        std::fs::write(&path, format!("{line}\n")).expect("write");
        let points = read_metrics(&path).expect("parse");
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].value, Some(7.0));
        assert_eq!(points[1].kind, "histogram");
        assert_eq!(points[1].count, Some(3));
        assert_eq!(points[1].bucket_counts, vec![1, 2]);
        assert_eq!(points[1].attr_str("http.route"), Some("/"));
    }

    #[test]
    fn a_missing_output_file_means_no_spans_yet() {
        let spans = read_spans(Path::new("/nonexistent/ferrotel/traces.json")).expect("ok");
        assert!(spans.is_empty());
    }
}
