//! OTLP profiles (`opentelemetry.proto.profiles.v1development`, proto
//! v1.10): one request per export, one `ResourceProfiles` per process
//! (its resource is the spans' resource, so backends can join them), one
//! dictionary shared by the whole request. Samples count CPU-clock ticks
//! (`samples`/`count`, period `cpu`/`nanoseconds`); a sample taken inside a
//! span references it through the link table.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::profiles::v1development::{
    Function, KeyValueAndUnit, Line, Link, Location, Mapping, Profile as OtlpProfile,
    ProfilesDictionary, ResourceProfiles, Sample, ScopeProfiles, Stack, ValueType,
};

use super::model::{Frame, FrameKind, Profile, SpanLink};
use crate::export::resource_proto;
use crate::telemetry::metrics::scope;

/// Builds the dictionary while profiles are converted; index 0 of every
/// table is the zero value the spec requires.
struct Dictionary {
    strings: Vec<String>,
    string_index: HashMap<String, i32>,
    functions: Vec<Function>,
    function_index: HashMap<(i32, i32, i32), i32>,
    locations: Vec<Location>,
    location_index: HashMap<(FrameKind, i32, i64), i32>,
    stacks: Vec<Stack>,
    stack_index: HashMap<Vec<i32>, i32>,
    links: Vec<Link>,
    link_index: HashMap<SpanLink, i32>,
    attributes: Vec<KeyValueAndUnit>,
    frame_type_attr: HashMap<FrameKind, i32>,
}

impl Dictionary {
    fn new() -> Self {
        let mut d = Self {
            strings: Vec::new(),
            string_index: HashMap::new(),
            functions: vec![Function::default()],
            function_index: HashMap::new(),
            locations: vec![Location::default()],
            location_index: HashMap::new(),
            stacks: vec![Stack::default()],
            stack_index: HashMap::new(),
            links: vec![Link::default()],
            link_index: HashMap::new(),
            attributes: vec![KeyValueAndUnit::default()],
            frame_type_attr: HashMap::new(),
        };
        d.string("");
        d
    }

    fn string(&mut self, s: &str) -> i32 {
        if let Some(&i) = self.string_index.get(s) {
            return i;
        }
        let i = self.strings.len() as i32;
        self.strings.push(s.to_owned());
        self.string_index.insert(s.to_owned(), i);
        i
    }

    fn frame_type(&mut self, kind: FrameKind) -> i32 {
        if let Some(&i) = self.frame_type_attr.get(&kind) {
            return i;
        }
        let key = self.string("profile.frame.type");
        let i = self.attributes.len() as i32;
        self.attributes.push(KeyValueAndUnit {
            key_strindex: key,
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(kind.otel_name().to_owned())),
            }),
            unit_strindex: 0,
        });
        self.frame_type_attr.insert(kind, i);
        i
    }

    fn location(&mut self, frame: &Frame) -> i32 {
        let name = self.string(&frame.function);
        let file = self.string(frame.file.as_deref().unwrap_or(""));
        let function = *self
            .function_index
            .entry((name, name, file))
            .or_insert_with(|| {
                self.functions.push(Function {
                    name_strindex: name,
                    system_name_strindex: name,
                    filename_strindex: file,
                    start_line: 0,
                });
                self.functions.len() as i32 - 1
            });
        let key = (frame.kind, function, i64::from(frame.line));
        if let Some(&i) = self.location_index.get(&key) {
            return i;
        }
        let attr = self.frame_type(frame.kind);
        let i = self.locations.len() as i32;
        self.locations.push(Location {
            mapping_index: 0,
            address: 0,
            lines: vec![Line {
                function_index: function,
                line: i64::from(frame.line),
                column: 0,
            }],
            attribute_indices: vec![attr],
        });
        self.location_index.insert(key, i);
        i
    }

    fn stack(&mut self, leaf_first: Vec<i32>) -> i32 {
        if let Some(&i) = self.stack_index.get(&leaf_first) {
            return i;
        }
        let i = self.stacks.len() as i32;
        self.stacks.push(Stack {
            location_indices: leaf_first.clone(),
        });
        self.stack_index.insert(leaf_first, i);
        i
    }

    fn link(&mut self, link: Option<&SpanLink>) -> i32 {
        let Some(link) = link else { return 0 };
        *self.link_index.entry(*link).or_insert_with(|| {
            self.links.push(Link {
                trace_id: link.trace_id.to_vec(),
                span_id: link.span_id.to_vec(),
            });
            self.links.len() as i32 - 1
        })
    }

    fn finish(self) -> ProfilesDictionary {
        ProfilesDictionary {
            mapping_table: vec![Mapping::default()],
            location_table: self.locations,
            function_table: self.functions,
            link_table: self.links,
            string_table: self.strings,
            attribute_table: self.attributes,
            stack_table: self.stacks,
        }
    }
}

/// One export request for `profiles`.
pub fn request(profiles: &[Arc<Profile>]) -> ExportProfilesServiceRequest {
    let mut dict = Dictionary::new();
    let samples_type = ValueType {
        type_strindex: dict.string("samples"),
        unit_strindex: dict.string("count"),
    };
    let period_type = ValueType {
        type_strindex: dict.string("cpu"),
        unit_strindex: dict.string("nanoseconds"),
    };
    let mut resource_profiles = Vec::new();
    for profile in profiles {
        let locations: Vec<i32> = profile.frames().iter().map(|f| dict.location(f)).collect();
        let samples = profile
            .samples()
            .map(|(stack, link, count)| Sample {
                stack_index: dict
                    .stack(stack.iter().rev().map(|&i| locations[i as usize]).collect()),
                attribute_indices: Vec::new(),
                link_index: dict.link(link),
                values: vec![count as i64],
                timestamps_unix_nano: Vec::new(),
            })
            .collect();
        let mut profile_id = [0u8; 16];
        profile_id.copy_from_slice(&rand::random::<[u8; 16]>());
        resource_profiles.push(ResourceProfiles {
            resource: Some(resource_proto(&profile.resource)),
            scope_profiles: vec![ScopeProfiles {
                scope: Some(scope()),
                profiles: vec![OtlpProfile {
                    sample_type: Some(samples_type),
                    samples,
                    time_unix_nano: profile.start_unix_ns,
                    duration_nano: profile.end_unix_ns.saturating_sub(profile.start_unix_ns),
                    period_type: Some(period_type),
                    period: profile.period_ns as i64,
                    profile_id: profile_id.to_vec(),
                    dropped_attributes_count: 0,
                    original_payload_format: String::new(),
                    original_payload: Vec::new(),
                    attribute_indices: Vec::new(),
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        });
    }
    ExportProfilesServiceRequest {
        resource_profiles,
        dictionary: Some(dict.finish()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::resource::ResourceRegistry;

    #[test]
    fn dictionaries_start_with_zero_values_and_links_are_shared() {
        let registry = ResourceRegistry::new(Default::default());
        let mut p = Profile::new(1, registry.get(1), 10, 52_631_578, 100);
        let link = SpanLink {
            trace_id: [1; 16],
            span_id: [2; 8],
        };
        let a = Frame::new(FrameKind::Go, "main.main", Some("main.go"), 5);
        let b = Frame::new(FrameKind::Go, "main.hot", Some("main.go"), 9);
        p.add_frames(&[a.clone(), b.clone()], Some(link), 3);
        p.add_frames(std::slice::from_ref(&a), Some(link), 1);
        p.add_frames(&[a], None, 1);
        let req = request(&[Arc::new(p)]);
        let dict = req.dictionary.expect("a dictionary");
        assert_eq!(dict.string_table[0], "");
        assert_eq!(dict.link_table.len(), 2, "zero link + one shared link");
        assert_eq!(dict.stack_table[0], Stack::default());
        assert_eq!(dict.location_table[0], Location::default());
        let profile = &req.resource_profiles[0].scope_profiles[0].profiles[0];
        let total: i64 = profile.samples.iter().map(|s| s.values[0]).sum();
        assert_eq!(total, 5);
        let linked = profile.samples.iter().filter(|s| s.link_index == 1).count();
        assert_eq!(linked, 2);
        let leaf = &dict.stack_table[profile
            .samples
            .iter()
            .find(|s| s.values[0] == 3)
            .unwrap()
            .stack_index as usize];
        let leaf_fn = &dict.function_table[dict.location_table[leaf.location_indices[0] as usize]
            .lines[0]
            .function_index as usize];
        assert_eq!(
            dict.string_table[leaf_fn.name_strindex as usize], "main.hot",
            "leaf first"
        );
    }

    /// The export queue bounds requests by [`Profile::approx_bytes`]; the
    /// collector refuses gRPC messages over 4 MiB. A window where nothing
    /// is shared (every frame, name and link distinct, long names) must
    /// still encode to no more than its estimate.
    #[test]
    fn the_size_estimate_covers_the_encoded_request() {
        let mut attributes = std::collections::BTreeMap::new();
        for i in 0..12 {
            attributes.insert(format!("k8s.attribute.{i}"), "x".repeat(60));
        }
        let resource = Arc::new(crate::telemetry::resource::ProcessResource { attributes });
        let mut p = Profile::new(1, resource, 10, 52_631_578, 10_000);
        for s in 0..2_000u32 {
            let frames: Vec<Frame> = (0..40u32)
                .map(|d| {
                    Frame::new(
                        FrameKind::Python,
                        &format!("module.Class.method_{s}_{d}_{}", "n".repeat(150)),
                        Some(&format!("/usr/lib/python3.11/site-packages/pkg/{s}/{d}.py")),
                        d + 1,
                    )
                })
                .collect();
            let mut span_id = [0u8; 8];
            span_id[..4].copy_from_slice(&s.to_le_bytes());
            let link = SpanLink {
                trace_id: [0xab; 16],
                span_id,
            };
            p.add_frames(&frames, Some(link), u64::from(s) + 1_000_000);
        }
        let estimate = p.approx_bytes();
        let encoded = prost::Message::encoded_len(&request(&[Arc::new(p)]));
        assert!(
            encoded <= estimate,
            "encoded {encoded} bytes, estimated {estimate}"
        );
    }
}
