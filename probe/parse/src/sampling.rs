//! Head sampling, decided when a request starts so that a trace is kept or
//! dropped as a whole (like an OpenTelemetry SDK does).
//!
//! # Span identity is assigned at request *start*
//!
//! A client call made while a server request is being handled must become a
//! child of that server span, and the client call usually completes *before*
//! the server request does. So a front-end cannot wait for the server
//! record to learn its ids: it asks a [`SpanStarter`] for a [`SpanContext`]
//! when it sees the request begin (e.g. when the request head is read),
//! remembers it per thread/goroutine/task, and when it sees a client call on
//! the same thread it calls [`SpanStarter::start_client`] with that context
//! as the parent.
//!
//! ```
//! use ferrotel_parse::sampling::{Sampler, SpanStarter};
//! use ferrotel_parse::trace_context::parse_traceparent;
//!
//! let starter = SpanStarter::new(Sampler::default());
//! // Request head read; it carried a `traceparent` header.
//! let incoming = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
//! let server = starter.start_server(incoming.as_ref());
//! // The same thread later connects out: a child client span.
//! let client = starter.start_client(Some(&server));
//! assert_eq!(client.trace_id, server.trace_id);
//! assert_eq!(client.parent_span_id, Some(server.span_id));
//! ```

use std::sync::Arc;

use super::trace_context::{IncomingTraceContext, ParentKind, SpanContext, SpanId, TraceId};

/// Hands out span ids and takes the sampling decision, at request start.
/// Cheap to clone; one per probe, shared by every front-end task.
#[derive(Clone, Debug)]
pub struct SpanStarter {
    sampler: Arc<Sampler>,
}

impl SpanStarter {
    pub fn new(sampler: Sampler) -> Self {
        Self {
            sampler: Arc::new(sampler),
        }
    }

    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// Starts a server span: continues `incoming` if the request carried a
    /// valid `traceparent`, else starts a new trace.
    pub fn start_server(&self, incoming: Option<&IncomingTraceContext>) -> SpanContext {
        match incoming {
            Some(remote) => {
                let sampled = self.sampler.should_sample(
                    remote.trace_id,
                    Some((ParentKind::Remote, remote.sampled())),
                );
                SpanContext {
                    trace_id: remote.trace_id,
                    span_id: SpanId::random(),
                    parent_span_id: Some(remote.parent_span_id),
                    parent_kind: ParentKind::Remote,
                    sampled,
                    flags: (remote.flags & !0x01) | u8::from(sampled),
                }
            }
            None => self.start_root(),
        }
    }

    /// Starts a client span: a child of the in-process `parent` (the server
    /// span active on the calling thread/goroutine/task), or a new trace.
    pub fn start_client(&self, parent: Option<&SpanContext>) -> SpanContext {
        match parent {
            Some(parent) => {
                let sampled = self
                    .sampler
                    .should_sample(parent.trace_id, Some((ParentKind::Local, parent.sampled)));
                SpanContext {
                    trace_id: parent.trace_id,
                    span_id: SpanId::random(),
                    parent_span_id: Some(parent.span_id),
                    parent_kind: ParentKind::Local,
                    sampled,
                    flags: (parent.flags & !0x01) | u8::from(sampled),
                }
            }
            None => self.start_root(),
        }
    }

    fn start_root(&self) -> SpanContext {
        let trace_id = TraceId::random();
        let sampled = self.sampler.should_sample(trace_id, None);
        SpanContext {
            trace_id,
            span_id: SpanId::random(),
            parent_span_id: None,
            parent_kind: ParentKind::Root,
            sampled,
            flags: u8::from(sampled),
        }
    }
}

/// The OpenTelemetry SDK's samplers, as `OTEL_TRACES_SAMPLER` names them
/// (the probe config's `sampler.type` maps onto these one to one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SamplerKind {
    /// `always_on`
    AlwaysOn,
    /// `always_off`
    AlwaysOff,
    /// `traceidratio`
    TraceIdRatio,
    /// `parentbased_always_on`
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio`, the SDKs' default.
    #[default]
    ParentBasedTraceIdRatio,
}

/// Head sampler, with the OpenTelemetry SDK's semantics for
/// `OTEL_TRACES_SAMPLER` values.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampler {
    kind: SamplerKind,
    /// Traces whose id's low 64 bits are below this are kept (ratio samplers).
    threshold: u64,
    ratio: f64,
}

impl Default for Sampler {
    /// `parentbased_traceidratio` at 1.0: every new trace kept, callers'
    /// decisions followed.
    fn default() -> Self {
        Self::new(SamplerKind::default(), 1.0)
    }
}

impl Sampler {
    /// `ratio` is the fraction of new traces kept by the ratio samplers,
    /// clamped to 0.0..=1.0 (NaN keeps everything).
    pub fn new(kind: SamplerKind, ratio: f64) -> Self {
        let ratio = if ratio.is_nan() {
            1.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        // Compare in the u64 domain; ratio 1.0 must keep everything, so it
        // maps to u64::MAX and the test is `<=` minus the zero-ratio case.
        let threshold = if ratio >= 1.0 {
            u64::MAX
        } else {
            (ratio * (u64::MAX as f64)) as u64
        };
        Self {
            kind,
            threshold,
            ratio,
        }
    }

    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    fn ratio_keeps(&self, trace_id: TraceId) -> bool {
        if self.ratio <= 0.0 {
            return false;
        }
        trace_id.low_u64() <= self.threshold
    }

    /// The sampling decision for a span of `trace_id` whose parent is
    /// `parent` (`(kind, parent sampled)`), `None` for a root span.
    pub fn should_sample(&self, trace_id: TraceId, parent: Option<(ParentKind, bool)>) -> bool {
        let parent_sampled = parent.map(|(_, sampled)| sampled);
        match self.kind {
            SamplerKind::AlwaysOn => true,
            SamplerKind::AlwaysOff => false,
            SamplerKind::TraceIdRatio => self.ratio_keeps(trace_id),
            SamplerKind::ParentBasedAlwaysOn => parent_sampled.unwrap_or(true),
            SamplerKind::ParentBasedAlwaysOff => parent_sampled.unwrap_or(false),
            SamplerKind::ParentBasedTraceIdRatio => match parent_sampled {
                Some(sampled) => sampled,
                None => self.ratio_keeps(trace_id),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace_context::parse_traceparent;

    fn sampler(kind: SamplerKind, ratio: f64) -> SpanStarter {
        SpanStarter::new(Sampler::new(kind, ratio))
    }

    #[test]
    fn server_span_continues_the_incoming_trace() {
        let starter = sampler(SamplerKind::ParentBasedTraceIdRatio, 1.0);
        let incoming =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let server = starter.start_server(Some(&incoming));
        assert_eq!(
            server.trace_id, incoming.trace_id,
            "same trace as the caller"
        );
        assert_eq!(
            server.parent_span_id,
            Some(incoming.parent_span_id),
            "parent is the caller's span"
        );
        assert_eq!(server.parent_kind, ParentKind::Remote);
        assert_ne!(
            server.span_id, incoming.parent_span_id,
            "the server span gets its own id"
        );
    }

    #[test]
    fn client_call_becomes_a_child_of_the_active_server_span() {
        let starter = sampler(SamplerKind::ParentBasedTraceIdRatio, 1.0);
        let server = starter.start_server(None);
        let client = starter.start_client(Some(&server));
        assert_eq!(client.trace_id, server.trace_id, "same trace");
        assert_eq!(
            client.parent_span_id,
            Some(server.span_id),
            "parent is the server span"
        );
        assert_eq!(client.parent_kind, ParentKind::Local);
        let orphan = starter.start_client(None);
        assert_eq!(
            orphan.parent_kind,
            ParentKind::Root,
            "a client call outside any request starts a trace"
        );
        assert_eq!(orphan.parent_span_id, None);
    }

    #[test]
    fn parent_based_sampler_follows_the_caller_decision() {
        let starter = sampler(SamplerKind::ParentBasedTraceIdRatio, 1.0);
        let unsampled =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        let server = starter.start_server(Some(&unsampled));
        assert!(
            !server.sampled,
            "an unsampled caller keeps the trace unsampled even at ratio 1.0"
        );
        let child = starter.start_client(Some(&server));
        assert!(!child.sampled, "children follow their local parent");

        let starter = sampler(SamplerKind::ParentBasedAlwaysOff, 0.0);
        let sampled =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert!(
            starter.start_server(Some(&sampled)).sampled,
            "a sampled caller wins over always_off for roots"
        );
        assert!(
            !starter.start_server(None).sampled,
            "roots follow the root sampler"
        );
    }

    #[test]
    fn always_on_and_always_off_ignore_the_parent() {
        let unsampled =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(
            sampler(SamplerKind::AlwaysOn, 0.0)
                .start_server(Some(&unsampled))
                .sampled
        );
        let sampled = IncomingTraceContext {
            flags: 1,
            ..unsampled
        };
        assert!(
            !sampler(SamplerKind::AlwaysOff, 1.0)
                .start_server(Some(&sampled))
                .sampled
        );
    }

    #[test]
    fn ratio_sampler_keeps_about_the_ratio_and_is_deterministic_per_trace() {
        let starter = sampler(SamplerKind::TraceIdRatio, 0.25);
        let total = 20_000;
        let kept = (0..total)
            .filter(|_| starter.start_server(None).sampled)
            .count();
        let fraction = kept as f64 / total as f64;
        // 20k Bernoulli(0.25) trials: standard deviation ~0.003; 0.02 is > 6 sigma.
        assert!(
            (fraction - 0.25).abs() < 0.02,
            "kept fraction {fraction} should be close to 0.25"
        );

        let trace = TraceId::random();
        let first = starter.sampler().should_sample(trace, None);
        for _ in 0..10 {
            assert_eq!(
                starter.sampler().should_sample(trace, None),
                first,
                "same trace id, same decision"
            );
        }
    }

    #[test]
    fn ratio_zero_keeps_nothing_and_ratio_one_keeps_everything() {
        let none = Sampler::new(SamplerKind::TraceIdRatio, 0.0);
        let all = Sampler::new(SamplerKind::TraceIdRatio, 1.0);
        let max = TraceId([0xff; 16]);
        let min = TraceId([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert!(
            !none.should_sample(min, None),
            "ratio 0 must drop even the smallest id"
        );
        assert!(
            all.should_sample(max, None),
            "ratio 1 must keep even the largest id"
        );
    }
}
