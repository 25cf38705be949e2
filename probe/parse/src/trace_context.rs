//! Trace identity: W3C trace and span ids, the `traceparent` a request
//! carries in, and the [`SpanContext`] every span is given when its request
//! starts (see [`super::sampling::SpanStarter`]).

use std::fmt;

/// A W3C trace id (16 bytes, never all zero when valid).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

/// A W3C span id (8 bytes, never all zero when valid).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A fresh random, non-zero trace id.
    pub fn random() -> Self {
        loop {
            let id: [u8; 16] = rand::random();
            if id != [0; 16] {
                return TraceId(id);
            }
        }
    }
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 16]
    }
    /// The low 8 bytes as a big-endian number; the ratio sampler compares
    /// this with its threshold, so a trace's decision is the same wherever
    /// it is taken.
    pub fn low_u64(&self) -> u64 {
        u64::from_be_bytes(self.0[8..].try_into().expect("8 bytes"))
    }
}

impl SpanId {
    /// A fresh random, non-zero span id.
    pub fn random() -> Self {
        loop {
            let id: [u8; 8] = rand::random();
            if id != [0; 8] {
                return SpanId(id);
            }
        }
    }
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 8]
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({})", hex::encode(self.0))
    }
}
impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({})", hex::encode(self.0))
    }
}
impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// The trace context a request carried in from another process (W3C
/// `traceparent`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncomingTraceContext {
    pub trace_id: TraceId,
    /// The caller's span: the parent of our server span.
    pub parent_span_id: SpanId,
    /// W3C trace flags; bit 0 = sampled.
    pub flags: u8,
}

impl IncomingTraceContext {
    pub fn sampled(&self) -> bool {
        self.flags & 0x01 != 0
    }
}

/// Parses a W3C `traceparent` header value
/// (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`).
///
/// Returns `None` for anything invalid (wrong lengths, non-hex, all-zero ids,
/// version `ff`), in which case the request starts a new trace, as the W3C
/// spec asks. Future versions (> 00) are accepted if their first four fields
/// parse, also per the spec.
pub fn parse_traceparent(value: &str) -> Option<IncomingTraceContext> {
    let value = value.trim();
    let mut parts = value.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let rest = parts.next();
    if version.len() != 2 || trace.len() != 32 || parent.len() != 16 || flags.len() != 2 {
        return None;
    }
    let version = u8::from_str_radix(version, 16).ok()?;
    if version == 0xff || (version == 0 && rest.is_some()) {
        return None;
    }
    // Uppercase hex is invalid per the spec.
    let is_lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !is_lower_hex(trace) || !is_lower_hex(parent) || !is_lower_hex(flags) {
        return None;
    }
    let mut trace_id = [0u8; 16];
    hex::decode_to_slice(trace, &mut trace_id).ok()?;
    let mut span_id = [0u8; 8];
    hex::decode_to_slice(parent, &mut span_id).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let ctx = IncomingTraceContext {
        trace_id: TraceId(trace_id),
        parent_span_id: SpanId(span_id),
        flags,
    };
    (ctx.trace_id.is_valid() && ctx.parent_span_id.is_valid()).then_some(ctx)
}

/// Formats a `traceparent` value for a span (what a downstream service would
/// receive if the probe could inject it).
pub fn format_traceparent(ctx: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        ctx.trace_id,
        ctx.span_id,
        u8::from(ctx.sampled)
    )
}

/// Who the parent of a span is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParentKind {
    /// No parent: the span starts a trace.
    Root,
    /// The parent lives in another process (from an incoming `traceparent`).
    Remote,
    /// The parent is a span of the same process (e.g. the server span that
    /// was active on the thread that made this client call).
    Local,
}

/// The identity of a span, fixed when the request starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub parent_kind: ParentKind,
    /// The head-sampling decision; unsampled spans still feed RED metrics
    /// but are not exported as spans.
    pub sampled: bool,
    /// Trace flags to report on the span (bit 0 = sampled).
    pub flags: u8,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::{Sampler, SamplerKind, SpanStarter};

    #[test]
    fn valid_traceparent_is_parsed_into_ids_and_flags() {
        let ctx = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("the W3C example traceparent must parse");
        assert_eq!(
            ctx.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "trace id"
        );
        assert_eq!(
            ctx.parent_span_id.to_string(),
            "00f067aa0ba902b7",
            "parent span id"
        );
        assert!(ctx.sampled(), "flags 01 means sampled");
    }

    #[test]
    fn invalid_traceparents_are_rejected() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?} must be rejected");
        }
    }

    #[test]
    fn future_traceparent_versions_with_extra_fields_are_accepted() {
        let ctx = parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more");
        assert!(
            ctx.is_some(),
            "a version 01 header with extra fields must still parse"
        );
        assert!(!ctx.unwrap().sampled(), "flags 00 means not sampled");
    }

    #[test]
    fn traceparent_round_trips_through_format() {
        let starter = SpanStarter::new(Sampler::new(SamplerKind::AlwaysOn, 1.0));
        let span = starter.start_server(None);
        let parsed =
            parse_traceparent(&format_traceparent(&span)).expect("formatted traceparent parses");
        assert_eq!(parsed.trace_id, span.trace_id);
        assert_eq!(parsed.parent_span_id, span.span_id);
        assert!(parsed.sampled());
    }
}
