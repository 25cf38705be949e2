//! `ferrotel-probe`: loads eBPF programs and exports OpenTelemetry spans.

fn main() {
    // Replaced by the probe runtime (issue 5).
    eprintln!("ferrotel-probe: not yet wired");
    std::process::exit(2);
}
