//! The pprof format (`perftools.profiles.Profile`, profile.proto of
//! google/pprof): the messages, written out with prost's derive (the proto
//! is small and stable), and the conversion from and to [`Profile`].
//!
//! One sample type, `cpu`/`nanoseconds`, with `period` nanoseconds per
//! sample; span links become string labels `trace_id` and `span_id`
//! (lowercase hex), as Go's pprof labels would carry them. Output is
//! uncompressed protobuf, which `go tool pprof` reads as is.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;

use super::model::{Frame, FrameKind, Profile, SpanLink};
use crate::telemetry::resource::ProcessResource;

#[derive(Clone, PartialEq, Message)]
pub struct PprofProfile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    /// Leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Self::default();
        s.get(""); // index 0 is the empty string
        s
    }
    fn get(&mut self, value: &str) -> i64 {
        if let Some(&i) = self.index.get(value) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(value.to_owned());
        self.index.insert(value.to_owned(), i);
        i
    }
}

/// Kind markers kept in the function's system name, so that decoding a
/// profile we wrote gives back the same frames.
fn kind_tag(kind: FrameKind) -> &'static str {
    match kind {
        FrameKind::Python => "[python]",
        FrameKind::Go => "[go]",
        FrameKind::GoInlined => "[go-inlined]",
        FrameKind::Native => "[native]",
        FrameKind::Kernel => "[kernel]",
    }
}

/// Encodes `profile` as pprof protobuf bytes.
pub fn encode(profile: &Profile) -> Vec<u8> {
    let mut strings = Strings::new();
    let cpu = strings.get("cpu");
    let ns = strings.get("nanoseconds");
    let functions: Vec<Function> = profile
        .frames()
        .iter()
        .enumerate()
        .map(|(i, f)| Function {
            id: i as u64 + 1,
            name: strings.get(&f.function),
            system_name: strings.get(kind_tag(f.kind)),
            filename: strings.get(f.file.as_deref().unwrap_or("")),
            start_line: 0,
        })
        .collect();
    // One location per frame: a frame is already (function, line).
    let locations: Vec<Location> = profile
        .frames()
        .iter()
        .enumerate()
        .map(|(i, f)| Location {
            id: i as u64 + 1,
            mapping_id: 0,
            address: 0,
            line: vec![Line {
                function_id: i as u64 + 1,
                line: i64::from(f.line),
            }],
        })
        .collect();
    let trace_key = strings.get("trace_id");
    let span_key = strings.get("span_id");
    let samples = profile
        .samples()
        .map(|(stack, link, count)| Sample {
            location_id: stack.iter().rev().map(|&i| u64::from(i) + 1).collect(),
            value: vec![count as i64 * profile.period_ns as i64],
            label: link
                .map(|l| {
                    vec![
                        Label {
                            key: trace_key,
                            str: strings.get(&hex::encode(l.trace_id)),
                            num: 0,
                        },
                        Label {
                            key: span_key,
                            str: strings.get(&hex::encode(l.span_id)),
                            num: 0,
                        },
                    ]
                })
                .unwrap_or_default(),
        })
        .collect();
    let comment = vec![strings.get(&format!(
        "ferrotel pid {} service {}",
        profile.pid,
        profile.resource.service_name()
    ))];
    PprofProfile {
        sample_type: vec![ValueType {
            r#type: cpu,
            unit: ns,
        }],
        sample: samples,
        mapping: Vec::new(),
        location: locations,
        function: functions,
        time_nanos: profile.start_unix_ns as i64,
        duration_nanos: profile.end_unix_ns.saturating_sub(profile.start_unix_ns) as i64,
        period_type: Some(ValueType {
            r#type: cpu,
            unit: ns,
        }),
        period: profile.period_ns as i64,
        comment,
        string_table: strings.table,
    }
    .encode_to_vec()
}

/// Why pprof bytes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a pprof profile (protobuf): {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("gzip-compressed pprof is not supported; gunzip it first")]
    Gzip,
    #[error("pprof profile references a missing {0}")]
    Dangling(&'static str),
}

/// Decodes pprof bytes (any producer: ours, Go's runtime/pprof, ...) into
/// a [`Profile`]; the first sample value is the count, divided by the
/// period when the period type matches the sample type.
pub fn decode(bytes: &[u8], resource: Arc<ProcessResource>) -> Result<Profile, DecodeError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return Err(DecodeError::Gzip);
    }
    let p = PprofProfile::decode(bytes)?;
    let s = |i: i64| {
        p.string_table
            .get(i as usize)
            .map(String::as_str)
            .unwrap_or("")
    };
    let functions: HashMap<u64, &Function> = p.function.iter().map(|f| (f.id, f)).collect();
    let locations: HashMap<u64, &Location> = p.location.iter().map(|l| (l.id, l)).collect();
    let period = p.period.max(1) as u64;
    let divide = p
        .period_type
        .as_ref()
        .zip(p.sample_type.first())
        .is_some_and(|(pt, st)| s(pt.unit) == s(st.unit) && s(pt.unit) == "nanoseconds");
    let mut profile = Profile::new(
        0,
        resource,
        p.time_nanos.max(0) as u64,
        if divide { period } else { 1 },
        usize::MAX,
    );
    profile.end_unix_ns = profile.start_unix_ns + p.duration_nanos.max(0) as u64;
    for sample in &p.sample {
        let mut frames: Vec<Frame> = Vec::new();
        for id in &sample.location_id {
            let location = locations.get(id).ok_or(DecodeError::Dangling("location"))?;
            // A location's lines are innermost first (inlining).
            for line in &location.line {
                let f = functions
                    .get(&line.function_id)
                    .ok_or(DecodeError::Dangling("function"))?;
                let kind = match s(f.system_name) {
                    "[python]" => FrameKind::Python,
                    "[go-inlined]" => FrameKind::GoInlined,
                    "[native]" => FrameKind::Native,
                    "[kernel]" => FrameKind::Kernel,
                    _ => FrameKind::Go,
                };
                let file = s(f.filename);
                frames.push(Frame::new(
                    kind,
                    s(f.name),
                    (!file.is_empty()).then_some(file),
                    line.line.max(0) as u32,
                ));
            }
        }
        frames.reverse();
        let value = sample.value.first().copied().unwrap_or(0).max(0) as u64;
        let count = if divide { value / period } else { value };
        let mut link = SpanLink {
            trace_id: [0; 16],
            span_id: [0; 8],
        };
        let mut linked = 0;
        for label in &sample.label {
            match s(label.key) {
                "trace_id" if hex::decode_to_slice(s(label.str), &mut link.trace_id).is_ok() => {
                    linked += 1
                }
                "span_id" if hex::decode_to_slice(s(label.str), &mut link.span_id).is_ok() => {
                    linked += 1
                }
                _ => {}
            }
        }
        profile.add_frames(&frames, (linked == 2).then_some(link), count);
    }
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::resource::ResourceRegistry;

    #[test]
    fn a_profile_survives_a_pprof_round_trip_with_its_links() {
        let registry = ResourceRegistry::new(Default::default());
        let mut p = Profile::new(1, registry.get(1), 1_000, 10, 100);
        let main = Frame::new(FrameKind::Python, "<module>", Some("app.py"), 3);
        let hot = Frame::new(FrameKind::Python, "hot", Some("app.py"), 9);
        let link = SpanLink {
            trace_id: [0xab; 16],
            span_id: [0xcd; 8],
        };
        p.add_frames(&[main.clone(), hot.clone()], Some(link), 5);
        p.add_frames(std::slice::from_ref(&main), None, 2);
        p.end_unix_ns = 5_000;
        let back = decode(&encode(&p), registry.get(1)).expect("our pprof decodes");
        assert_eq!(back.total(), 7);
        assert_eq!(back.folded(), p.folded());
        let linked: Vec<_> = back
            .samples()
            .filter_map(|(_, l, n)| l.map(|l| (*l, n)))
            .collect();
        assert_eq!(linked, vec![(link, 5)]);
        assert_eq!(back.end_unix_ns - back.start_unix_ns, 4_000);
    }
}
