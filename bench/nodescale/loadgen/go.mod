// The node-scale benchmark's load generator: a steady (open-loop) request
// rate spread over many targets, which wrk (closed loop, one host) cannot do.
module ferrotel.bench/loadgen

go 1.26.0
