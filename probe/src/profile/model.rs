//! The aggregated profile of one process over one window: distinct stacks
//! (root first) with sample counts and the span each sample was taken in.
//! Every output format (pprof, OTLP profiles, folded stacks) is rendered
//! from it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::telemetry::resource::ProcessResource;

/// What kind of code a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameKind {
    Python,
    Go,
    /// A Go function the compiler inlined into its caller (the next frame).
    GoInlined,
    Native,
    Kernel,
}

impl FrameKind {
    /// The frame type attribute of OTLP profiles (`profile.frame.type`).
    pub fn otel_name(self) -> &'static str {
        match self {
            FrameKind::Python => "cpython",
            FrameKind::Go | FrameKind::GoInlined => "go",
            FrameKind::Native => "native",
            FrameKind::Kernel => "kernel",
        }
    }
}

/// One symbolized frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    pub kind: FrameKind,
    pub function: Arc<str>,
    /// Source file (Go, Python), or the binary (native frames without
    /// source), if known.
    pub file: Option<Arc<str>>,
    /// Source line; 0 when unknown.
    pub line: u32,
}

impl Frame {
    pub fn new(kind: FrameKind, function: &str, file: Option<&str>, line: u32) -> Self {
        Self {
            kind,
            function: function.into(),
            file: file.map(Into::into),
            line,
        }
    }

    /// The label in folded stacks and flame graphs: Python frames carry
    /// their file's base name and line (`handle (app.py:42)`; pprof and
    /// OTLP keep the full path), kernel frames the `_[k]`
    /// suffix flame graph palettes know, inlined Go frames ` (inlined)`.
    pub fn label(&self) -> String {
        let mut s = String::new();
        match self.kind {
            FrameKind::Python => {
                let _ = write!(
                    s,
                    "{} ({}:{})",
                    self.function,
                    self.file
                        .as_deref()
                        .map_or("?", |f| f.rsplit('/').next().unwrap_or(f)),
                    self.line
                );
            }
            FrameKind::Kernel => {
                let _ = write!(s, "{}_[k]", self.function);
            }
            FrameKind::GoInlined => {
                let _ = write!(s, "{} (inlined)", self.function);
            }
            FrameKind::Go | FrameKind::Native => s.push_str(&self.function),
        }
        // ';' separates frames in the folded format.
        s.replace(';', ":")
    }
}

/// The span active on the sampled thread (or goroutine) when the sample
/// fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanLink {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

/// A stack of frame indices, root first.
pub type StackKey = Box<[u32]>;

/// Distinct stacks of one process over one window.
#[derive(Clone, Debug)]
pub struct Profile {
    pub pid: u32,
    pub resource: Arc<ProcessResource>,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    /// Nanoseconds of CPU time one sample stands for (1 s / frequency).
    pub period_ns: u64,
    frames: Vec<Frame>,
    frame_index: HashMap<Frame, u32>,
    samples: HashMap<(StackKey, Option<SpanLink>), u64>,
    /// Samples not kept because the window had too many distinct stacks.
    pub dropped: u64,
    max_stacks: usize,
}

impl Profile {
    pub fn new(
        pid: u32,
        resource: Arc<ProcessResource>,
        start_unix_ns: u64,
        period_ns: u64,
        max_stacks: usize,
    ) -> Self {
        Self {
            pid,
            resource,
            start_unix_ns,
            end_unix_ns: start_unix_ns,
            period_ns,
            frames: Vec::new(),
            frame_index: HashMap::new(),
            samples: HashMap::new(),
            dropped: 0,
            max_stacks,
        }
    }

    /// The index of `frame`, added if new.
    pub fn intern(&mut self, frame: &Frame) -> u32 {
        if let Some(&i) = self.frame_index.get(frame) {
            return i;
        }
        let i = self.frames.len() as u32;
        self.frames.push(frame.clone());
        self.frame_index.insert(frame.clone(), i);
        i
    }

    /// Adds `count` samples of the stack of interned frames `stack` (root
    /// first). Returns `false` (and counts a drop) when the window already
    /// holds its cap of distinct stacks and this one is new.
    pub fn add(&mut self, stack: &[u32], link: Option<SpanLink>, count: u64) -> bool {
        let key = (Box::from(stack), link);
        if let Some(n) = self.samples.get_mut(&key) {
            *n += count;
            return true;
        }
        if self.samples.len() >= self.max_stacks {
            self.dropped += count;
            return false;
        }
        self.samples.insert(key, count);
        true
    }

    /// Adds a stack of frames (root first).
    pub fn add_frames(&mut self, frames: &[Frame], link: Option<SpanLink>, count: u64) -> bool {
        let ids: Vec<u32> = frames.iter().map(|f| self.intern(f)).collect();
        self.add(&ids, link, count)
    }

    /// Adds every sample of `other` (same process, a later window).
    pub fn merge(&mut self, other: &Profile) {
        let remap: Vec<u32> = other.frames.iter().map(|f| self.intern(f)).collect();
        for ((stack, link), count) in &other.samples {
            let ids: Vec<u32> = stack.iter().map(|&i| remap[i as usize]).collect();
            self.add(&ids, *link, *count);
        }
        self.dropped += other.dropped;
        self.start_unix_ns = self.start_unix_ns.min(other.start_unix_ns);
        self.end_unix_ns = self.end_unix_ns.max(other.end_unix_ns);
    }

    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// `(stack, span link, count)` of every distinct stack.
    pub fn samples(&self) -> impl Iterator<Item = (&[u32], Option<&SpanLink>, u64)> {
        self.samples
            .iter()
            .map(|((s, l), n)| (&**s, l.as_ref(), *n))
    }

    pub fn total(&self) -> u64 {
        self.samples.values().sum()
    }

    /// The window's size, estimated from above for both what it holds in
    /// memory and what it encodes to (what bounds the export queue and its
    /// requests): per distinct stack its key, span link, count and
    /// hash-table slot plus 4 bytes a frame; per distinct frame its entries
    /// plus its name and file (in memory they are shared with the symbol
    /// caches; on the wire each request carries them); the resource.
    pub fn approx_bytes(&self) -> usize {
        const STACK: usize = 96;
        const FRAME: usize = 128;
        const ATTRIBUTE: usize = 32;
        let stacks: usize = self
            .samples
            .keys()
            .map(|(stack, _)| STACK + 4 * stack.len())
            .sum();
        let frames: usize = self
            .frames
            .iter()
            .map(|f| FRAME + f.function.len() + f.file.as_deref().map_or(0, str::len))
            .sum();
        let resource: usize = self
            .resource
            .attributes
            .iter()
            .map(|(k, v)| ATTRIBUTE + k.len() + v.len())
            .sum();
        std::mem::size_of::<Self>() + stacks + frames + resource
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Folded stacks (`root;...;leaf count` per line, sorted), the input
    /// of flame graph tools; span links are merged away.
    pub fn folded(&self) -> String {
        let mut lines: HashMap<String, u64> = HashMap::new();
        for (stack, _, count) in self.samples() {
            let line = stack
                .iter()
                .map(|&i| self.frames[i as usize].label())
                .collect::<Vec<_>>()
                .join(";");
            *lines.entry(line).or_default() += count;
        }
        let mut lines: Vec<_> = lines.into_iter().collect();
        lines.sort();
        let mut out = String::new();
        for (line, count) in lines {
            let _ = writeln!(out, "{line} {count}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::resource::ResourceRegistry;

    fn profile(max: usize) -> Profile {
        let registry = ResourceRegistry::new(Default::default());
        Profile::new(7, registry.get(7), 1000, 52_631_578, max)
    }

    #[test]
    fn equal_stacks_aggregate_and_merge_remaps_frames() {
        let main = Frame::new(FrameKind::Go, "main.main", Some("main.go"), 10);
        let hot = Frame::new(FrameKind::Go, "main.hot", Some("main.go"), 20);
        let read = Frame::new(FrameKind::Kernel, "ksys_read", None, 0);
        let mut a = profile(100);
        a.add_frames(&[main.clone(), hot.clone()], None, 3);
        a.add_frames(&[main.clone(), hot.clone()], None, 2);
        let mut b = profile(100);
        b.add_frames(&[main.clone(), read.clone()], None, 1);
        b.add_frames(&[main.clone(), hot.clone()], None, 4);
        a.merge(&b);
        assert_eq!(a.total(), 10);
        assert_eq!(
            a.folded(),
            "main.main;ksys_read_[k] 1\nmain.main;main.hot 9\n"
        );
    }

    #[test]
    fn a_window_over_its_stack_cap_counts_the_samples_it_drops() {
        let mut p = profile(2);
        for i in 0..5 {
            let f = Frame::new(FrameKind::Native, &format!("f{i}"), None, 0);
            p.add_frames(&[f], None, 1);
        }
        p.add_frames(&[Frame::new(FrameKind::Native, "f0", None, 0)], None, 1);
        assert_eq!(p.total(), 3, "known stacks still count");
        assert_eq!(p.dropped, 3);
    }

    #[test]
    fn python_labels_carry_file_and_line_and_semicolons_never_split_frames() {
        let f = Frame::new(
            FrameKind::Python,
            "Handler.do_GET",
            Some("/app/srv;1.py"),
            42,
        );
        assert_eq!(f.label(), "Handler.do_GET (srv:1.py:42)");
    }
}
