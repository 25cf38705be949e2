//! The probe's user-space cost per span, without the kernel and the network:
//! records of the Go benchmark's minimal request go through the pipeline
//! (RED metrics, service graph, span conversion) and are encoded as OTLP
//! export requests of 512 spans, on one thread. Prints the thread's CPU time
//! and the heap allocations per span.
//!
//! ```text
//! cargo run --release -p ferrotel-probe --example span_path_cost [-- SPANS]
//! ```
//!
//! What it leaves out, and the Go benchmark (`bench/go`) includes: reading the
//! ring buffer, decoding the kernel event into a record, the channel to the
//! pipeline task, and the gRPC client.

#![allow(clippy::print_stdout)] // a measurement: what it prints is the result

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrotel_api::probe_config::RoutesConfig;
use ferrotel_parse::record::{HttpInfo, Protocol, RequestRecord, SpanKind};
use ferrotel_parse::sampling::{Sampler, SpanStarter};
use ferrotel_probe::export::BatchItem;
use ferrotel_probe::health::Health;
use ferrotel_probe::telemetry::clock::{ClockOffsets, KernelClock};
use ferrotel_probe::telemetry::metrics::RedMetrics;
use ferrotel_probe::telemetry::pipeline::{Pipeline, QueuedSpan, SpanQueue};
use ferrotel_probe::telemetry::resource::{BaseResource, ResourceRegistry};
use ferrotel_probe::telemetry::servicegraph::{NoPeers, ServiceGraphMetrics};

/// Counts every allocation the process makes.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call forwards to the system allocator with the caller's own
// layout and pointer; the counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through `alloc`/`realloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as in `dealloc`; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The exporter's queue, as a plain vector.
#[derive(Debug, Default)]
struct Collect(Mutex<Vec<QueuedSpan>>);

impl SpanQueue for Collect {
    fn push(&self, span: QueuedSpan) {
        self.0.lock().expect("queue lock").push(span);
    }
    fn close(&self) {}
}

/// What the Go probe makes of `GET /users/1` on the benchmark's app.
fn record(starter: &SpanStarter, i: u64) -> RequestRecord {
    RequestRecord {
        kind: SpanKind::Server,
        pid: std::process::id(),
        tid: 7,
        start_ns: 1_000_000_000 + i * 50_000,
        end_ns: 1_000_040_000 + i * 50_000,
        clock: KernelClock::Monotonic,
        span: starter.start_server(None),
        protocol: Protocol::Http(HttpInfo {
            method: "GET".into(),
            path: "/users/1".into(),
            status: Some(200),
            route: Some("GET /users/{id}".into()),
            host: Some("127.0.0.1:8080".into()),
            protocol_version: Some("1.1".into()),
            request_body_size: Some(0),
            ..Default::default()
        }),
        local: Some("127.0.0.1:8080".parse().expect("address")),
        peer: Some(
            format!("127.0.0.1:{}", 40_000 + i % 16)
                .parse()
                .expect("address"),
        ),
        error: None,
    }
}

fn thread_cpu() -> Duration {
    let stat =
        std::fs::read_to_string("/proc/thread-self/stat").expect("read /proc/thread-self/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_secs_f64(ticks as f64 / 100.0)
}

fn main() {
    let spans: u64 = std::env::args()
        .nth(1)
        .map_or(2_000_000, |n| n.parse().expect("SPANS: a number"));
    let queue = Arc::new(Collect::default());
    let health = Health::new();
    let mut pipeline = Pipeline::new(
        &RoutesConfig::default(),
        ResourceRegistry::new(BaseResource::default()),
        RedMetrics::with_health(health.clone()),
        queue.clone(),
        ClockOffsets::measure(),
        health,
    )
    .with_service_graph(Some((ServiceGraphMetrics::new(2000), Arc::new(NoPeers))));
    let starter = SpanStarter::new(Sampler::default());
    let records: Vec<RequestRecord> = (0..4096).map(|i| record(&starter, i)).collect();

    let run = |pipeline: &mut Pipeline, n: u64| {
        let mut bytes = 0usize;
        for i in 0..n {
            pipeline.process(&records[(i % 4096) as usize]);
            if (i + 1) % 512 == 0 {
                let batch = std::mem::take(&mut *queue.0.lock().expect("queue lock"));
                bytes += QueuedSpan::encode(batch).len();
            }
        }
        bytes
    };
    run(&mut pipeline, 100_000); // warm: resources, series, route cache
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    let cpu = thread_cpu();
    let bytes = run(&mut pipeline, spans);
    let cpu = thread_cpu() - cpu;
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations;
    println!(
        "{spans} spans: {:.2} µs CPU per span, {:.1} allocations per span, {:.0} OTLP bytes per span",
        cpu.as_secs_f64() * 1e6 / spans as f64,
        allocations as f64 / spans as f64,
        bytes as f64 / spans as f64
    );
}
