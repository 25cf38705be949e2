//! The bodies of the probe's fuzz targets: one function per parser that
//! reads bytes a workload controls. Each takes the fuzzer's raw input,
//! shapes it into what the parser sees in production (segments of a
//! socket stream, ring-buffer records, sections of a binary, `/proc`
//! text), runs the parser and checks the invariants that must hold for any
//! input. A panic, a hang or an allocation beyond libFuzzer's limit is a
//! finding.
//!
//! The fuzz targets (`fuzz_targets/*.rs`, nightly, libFuzzer) call these;
//! so does `probe/tests/fuzz_corpus.rs` on stable, replaying the committed
//! seeds and every past crash.

use std::path::Path;

use ferrotel_parse::go::binary::{GoBinary, go_build_id, symbols};
use ferrotel_parse::go::buildinfo::{BuildInfo, parse_go_version};
use ferrotel_parse::go::dwarf::field_offsets_in;
use ferrotel_parse::go::offsets::{ALL_FIELDS, OffsetsTable};
use ferrotel_parse::go::{events as go_events, pclntab};
use ferrotel_parse::http1::{MessageParser, Parsed, SegmentMeta, Side};
use ferrotel_parse::process_events;
use ferrotel_parse::procfs::{cgroup, maps, net_tcp};
use ferrotel_parse::record::RequestRecord;
use ferrotel_parse::sampling::{Sampler, SpanStarter};
use ferrotel_parse::sockets::Tracker;
use ferrotel_parse::sockets::events::{self as socket_events, Direction, KernelEvent, RoleHint};
use ferrotel_parse::trace_context::parse_traceparent;
use ferrotel_parse::url::{self, RoutePattern};
use ferrotel_probe_ebpf::Wire;
use ferrotel_probe_ebpf::go::GoRequestEvent;

/// A fuzz target's body.
pub type Body = fn(&[u8]);

/// Every target, by name: the fuzz target binaries and the corpus replay
/// use this one list.
pub const TARGETS: &[(&str, Body)] = &[
    ("http1", http1),
    ("socket_tracker", socket_tracker),
    ("ring_records", ring_records),
    ("go_event", go_event),
    ("pclntab", pclntab),
    ("buildinfo", buildinfo),
    ("dwarf", dwarf),
    ("go_binary", go_binary),
    ("proc_cgroup", proc_cgroup),
    ("proc_mountinfo", proc_mountinfo),
    ("proc_net_tcp", proc_net_tcp),
    ("proc_maps", proc_maps),
    ("url_text", url_text),
];

/// Reads little chunks off the front of the input.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// HTTP/1.x framing of one direction of a connection, fed as syscall
/// segments: each `[captured length, gap]` header is followed by the
/// captured bytes; `gap * 61` uncaptured bytes follow them (the kernel
/// copies a prefix of each read/write).
pub fn http1(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte();
    let side = if flags & 1 == 0 {
        Side::Request
    } else {
        Side::Response
    };
    let mut parser = MessageParser::new(side);
    for i in 0..(flags >> 1) & 7 {
        parser.expect_response_to(flags >> 4 & (1 << (i % 4)) != 0);
    }
    let mut out = Vec::new();
    let mut tick = 0u64;
    while !input.is_empty() {
        let len = usize::from(input.byte());
        let gap = usize::from(input.byte()) * 61;
        let captured = input.bytes(len);
        // Occasionally a syscall that moved fewer bytes than were copied
        // (the kernel never does this; the parser must still cope).
        let total = if gap == 61 * 255 {
            captured.len() / 2
        } else {
            captured.len() + gap
        };
        tick += 1;
        let meta = SegmentMeta {
            enter_ns: tick,
            exit_ns: tick + 1,
            tid: 1,
        };
        let before = out.len();
        let was_off = parser.is_off();
        parser.feed(captured, total, meta, &mut out);
        if was_off {
            assert_eq!(
                out.len(),
                before,
                "a stream turned off reports nothing more"
            );
        }
        if out[before..].contains(&Parsed::NotHttp) {
            assert!(parser.is_off(), "NotHttp turns the stream off");
            assert_eq!(
                out.last(),
                Some(&Parsed::NotHttp),
                "NotHttp is the last word"
            );
        }
    }
    let _ = parser.finish();
}

/// Socket events of a few processes and descriptors, in any order, through
/// the HTTP/1 tracker.
pub fn socket_tracker(data: &[u8]) {
    let _ = socket_tracker_records(data);
}

/// The requests [`socket_tracker`] completes: the stable corpus replay
/// (`probe/tests/fuzz_corpus.rs`) maps them to spans and metric
/// attributes, which live in `ferrotel-probe` and so outside the fuzz build.
pub fn socket_tracker_records(data: &[u8]) -> Vec<RequestRecord> {
    let mut input = Input(data);
    let mut tracker = Tracker::new(SpanStarter::new(Sampler::default()));
    let mut records = Vec::new();
    let mut tick = 0u64;
    while !input.is_empty() {
        let op = input.byte();
        let pid = u32::from(op >> 6) + 1;
        let fd = i32::from(op >> 3 & 7);
        tick += 1;
        let event = match op & 7 {
            0 => KernelEvent::Open {
                pid,
                tid: pid,
                ts_ns: tick,
                fd,
                role: match input.byte() % 3 {
                    0 => RoleHint::Server,
                    1 => RoleHint::Client,
                    _ => RoleHint::Unknown,
                },
                local: None,
                peer: Some(([10, 0, 0, op], 4000 + u16::from(op)).into()),
            },
            1 => KernelEvent::Close {
                pid,
                tid: pid,
                ts_ns: tick,
                fd,
            },
            2 => KernelEvent::ProcExit { pid },
            _ => {
                let len = usize::from(input.byte());
                let payload = input.bytes(len);
                let gap = usize::from(input.byte() & 0x0f) * 97;
                KernelEvent::Data {
                    pid,
                    tid: pid + u32::from(op & 1),
                    enter_ns: tick,
                    exit_ns: tick + 1,
                    fd,
                    direction: if op & 4 == 0 {
                        Direction::Ingress
                    } else {
                        Direction::Egress
                    },
                    total_len: payload.len() + gap,
                    payload,
                }
            }
        };
        tracker.on_event(&event, &mut records);
        assert!(
            tracker.connections() <= 4 * 8,
            "connections are keyed by (pid, fd)"
        );
    }
    for record in &records {
        assert!(record.end_ns >= record.start_ns, "no negative durations");
    }
    records
}

/// One ring-buffer record, as every decoder sees it.
pub fn ring_records(data: &[u8]) {
    if let Ok(KernelEvent::Data {
        payload, total_len, ..
    }) = socket_events::decode(data)
    {
        assert!(
            payload.len() <= data.len(),
            "a payload lies inside its record"
        );
        let _ = total_len;
    }
    let _ = go_events::decode(data, &Sampler::default());
    let _ = process_events::decode(data);
}

/// A Go request event with any contents (lengths, kinds, text, status),
/// decoded into a request record.
pub fn go_event(data: &[u8]) {
    let _ = go_event_record(data);
}

/// The request record [`go_event`] decodes, if any (mapped to a span by the
/// stable corpus replay, like [`socket_tracker_records`]).
pub fn go_event_record(data: &[u8]) -> Option<RequestRecord> {
    let mut record = vec![0u8; size_of::<GoRequestEvent>()];
    let n = data.len().min(record.len());
    record[..n].copy_from_slice(&data[..n]);
    let event = GoRequestEvent::read(&record).expect("sized to the struct");
    go_events::to_record(&event, &Sampler::default()).ok()
}

/// A `.gopclntab` section.
pub fn pclntab(data: &[u8]) {
    let wanted: Vec<&str> = symbols::located().chain(["main.main", "main.a"]).collect();
    if let Ok(found) = pclntab::find_functions(data, 0x40_1000, &wanted) {
        for (name, range) in &found {
            assert!(
                wanted.contains(&name.as_str()),
                "only wanted names come back"
            );
            assert!(range.start < range.end, "{name}: ranges are not empty");
        }
    }
}

/// A `.go.buildinfo` section.
pub fn buildinfo(data: &[u8]) {
    if let Ok(info) = BuildInfo::parse(data) {
        let _ = parse_go_version(&info.go_version);
        let _ = info.go_minor();
        let _ = OffsetsTable::builtin().lookup(&info);
    }
}

/// `.debug_info`, `.debug_abbrev` and `.debug_str`, split from the input by
/// two 16-bit lengths.
pub fn dwarf(data: &[u8]) {
    let mut input = Input(data);
    let info_len = usize::from(u16::from_le_bytes([input.byte(), input.byte()]));
    let abbrev_len = usize::from(u16::from_le_bytes([input.byte(), input.byte()]));
    let info = input.bytes(info_len);
    let abbrev = input.bytes(abbrev_len);
    let strings = input.0;
    let Ok(sections) = gimli::DwarfSections::load(|id| {
        Ok::<_, ()>(match id {
            gimli::SectionId::DebugInfo => info,
            gimli::SectionId::DebugAbbrev => abbrev,
            gimli::SectionId::DebugStr => strings,
            _ => &[][..],
        })
    }) else {
        return;
    };
    let _ = field_offsets_in(&sections, ALL_FIELDS);
}

/// A whole executable.
pub fn go_binary(data: &[u8]) {
    let _ = go_build_id(data);
    let _ = GoBinary::analyze_bytes(Path::new("fuzz"), data, 0, 0, OffsetsTable::builtin());
}

fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// `/proc/<pid>/cgroup`, and container IDs as a pod status gives them.
pub fn proc_cgroup(data: &[u8]) {
    let text = text(data);
    let identity = cgroup::parse_proc_cgroup(&text);
    if let Some(id) = &identity.container_id {
        assert_eq!(id.as_str().len(), 64, "container ids are 64 hex digits");
    }
    let _ = cgroup::ContainerId::from_status(&text);
}

/// `/proc/self/mountinfo`.
pub fn proc_mountinfo(data: &[u8]) {
    let _ = cgroup::parse_mountinfo(&text(data));
}

/// `/proc/<pid>/net/tcp` and `tcp6`.
pub fn proc_net_tcp(data: &[u8]) {
    let inodes = net_tcp::parse_listening_inodes(&text(data), &[80, 8080, 0x1f90]);
    assert!(!inodes.contains(&0), "inode 0 is never a socket");
}

/// `/proc/<pid>/maps` and executable names.
pub fn proc_maps(data: &[u8]) {
    let text = text(data);
    let whole = maps::maps_load_libpython(&text);
    let streamed = maps::maps_lines_load_libpython(data);
    // Line by line sees what the whole text shows (lines over 4 KiB aside).
    if data.split(|b| *b == b'\n').all(|l| l.len() < 4096) && text.len() == data.len() {
        assert_eq!(whole, streamed, "streamed and whole-text maps agree");
    }
    let _ = maps::is_python_executable_name(Path::new(text.as_ref()));
}

/// Request targets, query strings, Host values, traceparent headers and
/// route patterns as traffic carries them.
pub fn url_text(data: &[u8]) {
    let text = text(data);
    let _ = parse_traceparent(&text);
    let _ = url::split_host(&text);
    let template = url::heuristic_route(&text);
    assert!(template.starts_with('/'), "a route template is a path");
    let (path, query) = text.split_once('?').unwrap_or((&text, ""));
    let redacted = url::redact_query_values(query, |key| {
        url::percent_decode(key).len().is_multiple_of(2)
    });
    assert_eq!(
        redacted.split('&').count(),
        query.split('&').count(),
        "redaction keeps every pair"
    );
    for pattern in ["/users/{id}", "/files/{rest...}", "/a/*/b", path] {
        let _ = RoutePattern::parse(pattern).matches(path);
    }
}
