//! Structs and constants of trace-context propagation
//! (`src/c/propagation/wire.h`), mirrored against the objects' DWARF. The
//! sockops + sk_msg object is [`crate::PROPAGATION`]; the server half lives
//! in the language objects.

use crate::wire::{EventHeader, SockAddr};

/// `ft_event_header.kind` of propagation events.
pub mod kind {
    /// An outgoing request head passed the sk_msg program.
    pub const CLIENT: u32 = 80;
    /// A server request started with a kernel-assigned context.
    pub const SERVER: u32 = 81;
}

/// Trace-context formats: the `prop_formats` bit set.
pub mod format {
    pub const TRACECONTEXT: u32 = 1;
    pub const BAGGAGE: u32 = 2;
    pub const B3: u32 = 4;
}

/// `enum ft_prop_outcome`: what one outgoing request head came to, and its
/// index in `prop_counters`.
pub mod outcome {
    pub const INJECTED: u32 = 0;
    pub const PUBLISHED: u32 = 1;
    pub const APP_CONTEXT: u32 = 2;
    pub const NO_CONTEXT: u32 = 3;
    pub const HEAD_TOO_LARGE: u32 = 4;
    pub const NOT_HTTP1: u32 = 5;
    pub const UNFRAMED: u32 = 6;
    pub const PUSH_FAILED: u32 = 7;
    pub const NOT_TRACED: u32 = 8;
    /// Number of outcomes (`FT_PROP_OUTCOMES`): server origins follow them
    /// in `prop_counters`.
    pub const COUNT: u32 = 9;

    /// Metric label of an outcome.
    pub fn name(outcome: u32) -> &'static str {
        match outcome {
            INJECTED => "injected",
            PUBLISHED => "published",
            APP_CONTEXT => "app_context",
            NO_CONTEXT => "no_context",
            HEAD_TOO_LARGE => "head_too_large",
            NOT_HTTP1 => "not_http1",
            UNFRAMED => "unframed",
            PUSH_FAILED => "push_failed",
            NOT_TRACED => "not_traced",
            _ => "other",
        }
    }
}

/// `enum ft_prop_origin`: where a server span's parent came from.
pub mod origin {
    pub const NONE: u32 = 0;
    pub const TRACEPARENT: u32 = 1;
    pub const B3: u32 = 2;
    pub const JOINED: u32 = 3;
    /// Number of origins.
    pub const COUNT: u32 = 4;

    /// Metric label of an origin.
    pub fn name(origin: u32) -> &'static str {
        match origin {
            NONE => "new_trace",
            TRACEPARENT => "traceparent",
            B3 => "b3",
            JOINED => "joined",
            _ => "other",
        }
    }
}

/// Slots of the per-CPU `prop_counters` array: outcomes, then origins.
pub const COUNTERS: u32 = 16;
const _: () = assert!(outcome::COUNT + origin::COUNT <= COUNTERS);

/// `FT_PROP_CARRY_CAP`: the longest tracestate or baggage carried on.
pub const CARRY_CAP: usize = 256;

/// `struct ft_prop_client_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PropClientEvent {
    pub header: EventHeader,
    pub cookie: u64,
    pub enter_ns: u64,
    pub fd: i32,
    pub outcome: u32,
    pub local: SockAddr,
    pub peer: SockAddr,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_id: [u8; 8],
    pub flags: u32,
    pub pad: u32,
}
crate::mirrors!(
    PropClientEvent = ft_prop_client_event {
        header,
        cookie,
        enter_ns,
        fd,
        outcome,
        local,
        peer,
        trace_id,
        span_id,
        parent_id,
        flags,
        pad
    }
);

/// `struct ft_prop_server_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PropServerEvent {
    pub header: EventHeader,
    pub enter_ns: u64,
    pub fd: i32,
    pub origin: u32,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_id: [u8; 8],
    pub flags: u32,
    pub pad: u32,
}
crate::mirrors!(
    PropServerEvent = ft_prop_server_event {
        header,
        enter_ns,
        fd,
        origin,
        trace_id,
        span_id,
        parent_id,
        flags,
        pad
    }
);

// SAFETY: repr(C), integers and integer arrays only, sizes asserted
// against the -Wpadded C definitions.
unsafe impl crate::Wire for PropClientEvent {}
// SAFETY: as above.
unsafe impl crate::Wire for PropServerEvent {}
