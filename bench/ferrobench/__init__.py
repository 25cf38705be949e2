"""The benchmark harness every benchmark in bench/ shares.

    harness.Runner      paired, interleaved rounds of scenarios x variants
    harness.paired_rounds   the same discipline for micro-benchmarks
    collector.Collector the real collector, counting accepted spans
    probe.Probe         ferrotel-probe, standalone, with its /metrics
    bpf                 BPF statistics (run time per program), helper objects
    load.wrk            closed-loop HTTP load
    seq                 sequence-stamped load and loss accounting at the collector
    system              /proc readings: CPU, RSS, load average, machine
    report              Markdown tables
    cli                 the common command line and run header

See bench/README.md for how a benchmark uses it.
"""
