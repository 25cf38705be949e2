//! From completed requests to spans and metrics: the shared pipeline after
//! the language front-ends.
//!
//! Front-ends produce [`record::RequestRecord`]s and submit them to a
//! [`RecordSink`]; the pipeline task drains the sink, applies `http.route`
//! templating, records RED metrics for every request (sampled or not) and
//! turns sampled requests into OTLP spans for the exporter.

pub mod clock;
pub mod metrics;
pub mod pipeline;
pub mod redact;
pub mod resource;
pub mod route;
pub mod semconv;
pub mod servicegraph;

// What a front-end produces — the record, its span identity and sampling
// decision — is defined next to the parsers that produce it, in
// `ferrotel-parse` (the config's sampler: `crate::config::sampler`).
pub use ferrotel_parse::{record, sampling, trace_context};

use tokio::sync::mpsc;

use crate::health::Health;
pub use record::RequestRecord;

/// Where front-ends hand in completed requests. Cheap to clone.
///
/// Submitting never blocks: a front-end's event loop must keep draining its
/// ring buffer, so when the pipeline falls behind the record is dropped and
/// counted (`ferrotel_probe_records_dropped_total{reason="pipeline_full"}`).
#[derive(Clone, Debug)]
pub struct RecordSink {
    tx: mpsc::Sender<RequestRecord>,
    health: Health,
    /// The profiler's view of sampled spans (trace ↔ profile links).
    spans: Option<crate::profile::SpanTap>,
}

impl RecordSink {
    /// A sink holding up to `capacity` records not yet processed, and the
    /// receiving end for the pipeline.
    pub fn channel(capacity: usize, health: Health) -> (Self, mpsc::Receiver<RequestRecord>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                tx,
                health,
                spans: None,
            },
            rx,
        )
    }

    /// Also shows every sampled record's span to the profiler.
    pub fn with_span_tap(mut self, tap: crate::profile::SpanTap) -> Self {
        self.spans = Some(tap);
        self
    }

    /// Hands a record to the pipeline; returns `false` if it was dropped
    /// (pipeline full or shut down).
    pub fn submit(&self, record: RequestRecord) -> bool {
        if let Some(spans) = &self.spans {
            spans.observe(&record);
        }
        match self.tx.try_send(record) {
            Ok(()) => {
                self.health.record_submitted();
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.health.record_dropped("pipeline_full");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.health.record_dropped("shutdown");
                false
            }
        }
    }
}
