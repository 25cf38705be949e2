//! `ferrotel-operator`: reconciles `TelemetryCollector` and `Instrumentation`.
#![forbid(unsafe_code)]

fn main() {
    // Replaced by the operator runtime (issue 3).
    eprintln!("ferrotel-operator: not yet wired");
    std::process::exit(2);
}
