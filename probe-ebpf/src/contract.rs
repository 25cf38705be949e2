// The kernel contract: the names user space looks up in the compiled
// objects (maps, `volatile const` globals, programs, the tracepoints each
// program expects) and the default value of every knob.
//
// One declaration for both sides. `build.rs` reads this file (it is plain
// `const`s for that reason: no crate paths, no inner attributes) to write
// the C side's defaults into the generated `ft_contract.h`, and after
// compiling each object it checks that the object defines every map,
// global and program declared here for it: a name changed on one side only
// fails the build, not a probe at load time. The probe takes every name it
// passes to aya from here.

/// Maps, by the name of their C variable.
pub mod maps {
    /// The ring buffer every program set writes its records to
    /// (`common/ringbuf.h`); its size is the `ringBufferBytes` knob.
    pub const EVENTS: &str = "events";
    /// Per-CPU counts of lost events, indexed by `enum ft_drop_reason`
    /// (`common/drops.h`).
    pub const DROP_COUNTERS: &str = "drop_counters";
    /// Processes a set traces, with `CLAIM_*` flags (`common/claimed.h`).
    pub const CLAIMED_TGIDS: &str = "claimed_tgids";
    /// One bit per tgid that user space may have claimed, in words of 64
    /// (`common/claimed.h`); sized to the node's pid_max at load.
    pub const CLAIMED_HINT_USER: &str = "claimed_hint_user";
    /// The same for tgids the fork hook claimed; written by the kernel only.
    pub const CLAIMED_HINT_KERNEL: &str = "claimed_hint_kernel";
    /// Struct offsets of each traced Go process, keyed by tgid (`go/maps.h`).
    pub const GO_OFFSETS: &str = "go_offsets";
    /// Socket traffic per watched cgroup, per CPU (`podnet.bpf.c`); user
    /// space inserts the cgroups to count.
    pub const CGROUP_TRAFFIC: &str = "cgroup_traffic";
    /// Cgroups whose TCP health is kept (`tcphealth.bpf.c`).
    pub const WATCHED_CGROUPS: &str = "watched_cgroups";
    /// TCP health per (cgroup, peer address, role) (`tcphealth.bpf.c`).
    pub const TCP_PEERS: &str = "tcp_peers";
    /// What each profiled process runs and where its language keeps the
    /// frames the kernel adds, keyed by tgid (`profile.bpf.c`).
    pub const PROFILE_PROCS: &str = "profile_procs";
    /// The socket-level set's syscalls between entry and exit
    /// (`sockets/inflight.h`).
    pub const INFLIGHT: &str = "inflight";
    /// What each thread is working for, for the sk_msg program
    /// (`propagation/context.h`).
    pub const PROP_THREADS: &str = "prop_threads";
    /// Go client spans handed to the goroutine that writes their request
    /// (`propagation/context.h`).
    pub const PROP_GOROUTINES: &str = "prop_goroutines";
    /// tracestate and baggage carried from a request to its calls.
    pub const PROP_CARRY: &str = "prop_carry";
    /// Where a carry is built (per CPU).
    pub const PROP_CARRY_SCRATCH: &str = "prop_carry_scratch";
    /// Per-CPU counts of outgoing heads by outcome and server requests by
    /// origin.
    pub const PROP_COUNTERS: &str = "prop_counters";
    /// Per-CPU head-scan results (`propagation/http.h`).
    pub const PROP_HEADS: &str = "prop_heads";
    /// Contexts published for same-node joins; pinned node-wide when
    /// joining is on.
    pub const PROP_JOINS: &str = "ferrotel_prop_joins";
    /// Go requests between `(*persistConn).roundTrip` and `(*Request).write`
    /// (`propagation/go.h`).
    pub const GO_PROP_REQUESTS: &str = "go_prop_requests";
    /// Client sockets of traced containers, for the sk_msg program
    /// (`propagation/inject.h`).
    pub const PROP_SOCKS: &str = "prop_socks";
}

/// `volatile const` globals, set when an object is loaded.
pub mod globals {
    /// Pending ring-buffer bytes above which a submit wakes the reader
    /// (`__u64`, `common/ringbuf.h`).
    pub const WAKEUP_BYTES: &str = "wakeup_bytes";
    /// Bytes copied from a traced process per read: the head of each
    /// socket read/write, or each string of a Go request (`__u32`,
    /// `common/payload.h`).
    pub const MAX_PAYLOAD_BYTES: &str = "max_payload_bytes";
    /// Report the execs of every process (1) or of claimed ones only (0)
    /// (`__u32`, `common/proc.h`).
    pub const REPORT_EXECS: &str = "report_execs";
    /// Also record the kernel stack of a sample (`__u32` 0/1,
    /// `profile.bpf.c`): the `kernelStacks` knob.
    pub const KERNEL_STACKS: &str = "kernel_stacks";
    /// Walk Python frames in the kernel (`__u32` 0/1, `profile.bpf.c`);
    /// 0 only for the measurement that compared it with user space.
    pub const PYTHON_FRAMES: &str = "python_frames";
    /// Write context headers into outgoing HTTP/1 requests (`__u32`,
    /// `propagation/context.h`).
    pub const PROP_INJECT: &str = "prop_inject";
    /// Publish and adopt contexts for same-node joins (`__u32`).
    pub const PROP_JOIN: &str = "prop_join";
    /// Trace-context formats read and written, a `propagation::format` bit
    /// set (`__u32`).
    pub const PROP_FORMATS: &str = "prop_formats";
    /// Head sampling of traces started in the kernel: root rule (0 never,
    /// 1 always, 2 ratio), parent-based (0/1), ratio threshold (`__u32`,
    /// `__u32`, `__u64`).
    pub const PROP_SAMPLE_ROOT: &str = "prop_sample_root";
    pub const PROP_SAMPLE_PARENT_BASED: &str = "prop_sample_parent_based";
    pub const PROP_SAMPLE_THRESHOLD: &str = "prop_sample_threshold";
    /// The sk_msg program assigns client spans (socket-level set, 1) or
    /// takes the Go probe's (0) (`__u32`, `propagation/inject.h`).
    pub const PROP_SENDER_ASSIGNS_SPAN: &str = "prop_sender_assigns_span";
    /// The served set has an `inflight` map to read fds from (`__u32`).
    pub const PROP_SYSCALL_INFLIGHT: &str = "prop_syscall_inflight";
}

/// The default of every knob. The C initialisers come from here (through
/// the generated `ft_contract.h`), and so do the probe config's defaults.
pub mod defaults {
    /// `ringBufferBytes`: a power of two, at least one page.
    pub const RING_BUFFER_BYTES: u32 = 4 << 20;
    /// `wakeup_bytes`: waking the reader per event was the dominant cost
    /// of syscall tracing measured on this platform (PLATFORM.md).
    pub const WAKEUP_BYTES: u64 = 64 << 10;
    /// `maxPayloadBytes`.
    pub const MAX_PAYLOAD_BYTES: u32 = 512;
    /// The smallest `maxPayloadBytes` accepted: a request line and its
    /// first header fit.
    pub const MAX_PAYLOAD_BYTES_MIN: u32 = 64;
    /// The largest `maxPayloadBytes` accepted: the capacity of a socket
    /// data event's payload (`FT_SOCK_PAYLOAD_CAP`).
    pub const MAX_PAYLOAD_BYTES_MAX: u32 = 4096;
    /// `report_execs`: claimed processes only; discovery asks for all.
    pub const REPORT_EXECS: u32 = 0;
    /// `kernel_stacks`: on (`profiling.kernelStacks`).
    pub const KERNEL_STACKS: u32 = 1;
    /// `python_frames`: walked in the kernel.
    pub const PYTHON_FRAMES: u32 = 1;
    /// The profiling set's ring: a sample is 2,480 bytes, so 2 MiB hold
    /// ~840 samples, 4 s of two busy CPUs at 99 Hz, against a reader that
    /// polls every 100 ms.
    pub const PROFILE_RING_BUFFER_BYTES: u32 = 2 << 20;
}

/// Programs shared by every set that tracks process lifecycles
/// (`common/proc.h`).
pub mod process {
    /// `tp_btf/sched_process_fork`: children of claimed processes are claimed.
    pub const FORK: &str = "ft_proc_fork";
    /// `tp_btf/sched_process_exit`: a claimed process left.
    pub const EXIT: &str = "ft_proc_exit";
    /// `tp_btf/sched_process_exec`.
    pub const EXEC: &str = "ft_proc_exec";
    /// `(program, tp_btf event)`: BTF tracepoints need no tracefs.
    pub const BTF_TRACEPOINTS: [(&str, &str); 3] = [
        (FORK, "sched_process_fork"),
        (EXIT, "sched_process_exit"),
        (EXEC, "sched_process_exec"),
    ];
}

/// The socket-level program set (`sockets.bpf.c`).
pub mod sockets {
    /// Each program and the `syscalls` tracepoints it is attached to. The
    /// enter programs differ per syscall (their arguments do); one exit
    /// program serves every data syscall.
    pub const TRACEPOINTS: [(&str, &[&str]); 14] = [
        ("ft_sock_enter_read", &["sys_enter_read"]),
        ("ft_sock_enter_recvfrom", &["sys_enter_recvfrom"]),
        ("ft_sock_enter_readv", &["sys_enter_readv"]),
        ("ft_sock_enter_recvmsg", &["sys_enter_recvmsg"]),
        ("ft_sock_enter_write", &["sys_enter_write"]),
        ("ft_sock_enter_sendto", &["sys_enter_sendto"]),
        ("ft_sock_enter_writev", &["sys_enter_writev"]),
        ("ft_sock_enter_sendmsg", &["sys_enter_sendmsg"]),
        ("ft_sock_enter_connect", &["sys_enter_connect"]),
        ("ft_sock_enter_close", &["sys_enter_close"]),
        (
            "ft_sock_exit_io",
            &[
                "sys_exit_read",
                "sys_exit_recvfrom",
                "sys_exit_readv",
                "sys_exit_recvmsg",
                "sys_exit_write",
                "sys_exit_sendto",
                "sys_exit_writev",
                "sys_exit_sendmsg",
            ],
        ),
        (
            "ft_sock_exit_accept",
            &["sys_exit_accept4", "sys_exit_accept"],
        ),
        ("ft_sock_exit_connect", &["sys_exit_connect"]),
        (super::tls::EXEC_MAP, &["sys_enter_mmap"]),
    ];
}

/// TLS in the socket-level set (`sockets/tls_probes.h`): uprobes on
/// OpenSSL, attached once per library file that a claimed process maps.
pub mod tls {
    pub const READ_ENTER: &str = "ft_tls_read_enter";
    pub const READ_EX_ENTER: &str = "ft_tls_read_ex_enter";
    pub const WRITE_ENTER: &str = "ft_tls_write_enter";
    pub const WRITE_EX_ENTER: &str = "ft_tls_write_ex_enter";
    pub const HANDSHAKE_ENTER: &str = "ft_tls_handshake_enter";
    pub const FREE: &str = "ft_tls_free";
    /// A uretprobe: one program for every function with a return probe.
    pub const RETURN: &str = "ft_tls_return";
    /// `syscalls/sys_enter_mmap`: a claimed process mapped a file
    /// executable (it may have loaded a TLS library).
    pub const EXEC_MAP: &str = "ft_tls_enter_mmap";

    /// `(OpenSSL function, entry program, whether it gets the return
    /// program)`: what is attached to each TLS library.
    pub const FUNCTIONS: [(&str, &str, bool); 6] = [
        ("SSL_read", READ_ENTER, true),
        ("SSL_read_ex", READ_EX_ENTER, true),
        ("SSL_write", WRITE_ENTER, true),
        ("SSL_write_ex", WRITE_EX_ENTER, true),
        ("SSL_do_handshake", HANDSHAKE_ENTER, true),
        ("SSL_free", FREE, false),
    ];

    /// Every uprobe program.
    pub const PROGRAMS: [&str; 7] = [
        READ_ENTER,
        READ_EX_ENTER,
        WRITE_ENTER,
        WRITE_EX_ENTER,
        HANDSHAKE_ENTER,
        FREE,
        RETURN,
    ];
}

/// The Go program set (`go.bpf.c`): uprobes, attached per process.
pub mod go {
    pub const HTTP_SERVER_START: &str = "ft_go_http_server_start";
    pub const HTTP_SERVER_END: &str = "ft_go_http_server_end";
    pub const HTTP_CLIENT_START: &str = "ft_go_http_client_start";
    pub const HTTP_CLIENT_END: &str = "ft_go_http_client_end";
    pub const GRPC_SERVER_START: &str = "ft_go_grpc_server_start";
    pub const GRPC_SERVER_STATUS: &str = "ft_go_grpc_server_status";
    pub const GRPC_SERVER_END: &str = "ft_go_grpc_server_end";
    pub const GRPC_SERVER_HEADERS: &str = "ft_go_grpc_server_headers";
    pub const GRPC_CLIENT_START: &str = "ft_go_grpc_client_start";
    pub const GRPC_CLIENT_END: &str = "ft_go_grpc_client_end";
    pub const GRPC_STREAM_START: &str = "ft_go_grpc_stream_start";
    pub const GRPC_STREAM_OPENED: &str = "ft_go_grpc_stream_opened";
    pub const GRPC_STREAM_END: &str = "ft_go_grpc_stream_end";
    pub const NEWPROC_START: &str = "ft_go_newproc_start";
    pub const NEWPROC_END: &str = "ft_go_newproc_end";
    /// `net/http.(*persistConn).roundTrip` entry: the request's connection
    /// (and, with propagation on, its note for the writing thread).
    pub const HTTP_CLIENT_CONN: &str = "ft_go_http_client_conn";
    /// `transport.(*http2Client).createHeaderFields` entry: a gRPC call's
    /// connection (and, with joining on, its note for the stream's writer).
    pub const GRPC_CLIENT_CONN: &str = "ft_go_grpc_client_conn";
    pub const NEWPROC_SPAWN: &str = "ft_go_newproc_spawn";
    /// Forgets a traced process's per-goroutine entries when it exits (a
    /// BTF tracepoint, attached with the set, not per process).
    pub const EXIT: &str = "ft_go_exit";
    pub const EXIT_TRACEPOINT: &str = "sched_process_exit";

    /// Every program of the set (propagation's three are attached only when
    /// it is on).
    pub const PROGRAMS: [&str; 21] = [
        HTTP_SERVER_START,
        HTTP_SERVER_END,
        HTTP_CLIENT_START,
        HTTP_CLIENT_END,
        GRPC_SERVER_START,
        GRPC_SERVER_STATUS,
        GRPC_SERVER_END,
        GRPC_SERVER_HEADERS,
        GRPC_CLIENT_START,
        GRPC_CLIENT_END,
        GRPC_STREAM_START,
        GRPC_STREAM_OPENED,
        GRPC_STREAM_END,
        NEWPROC_START,
        NEWPROC_END,
        NEWPROC_SPAWN,
        HTTP_CLIENT_CONN,
        super::propagation::GO_REQUEST_WRITE,
        GRPC_CLIENT_CONN,
        super::propagation::GO_GRPC_FIELDS_END,
        super::propagation::GO_GRPC_HEADER,
    ];
}

/// Trace-context propagation: the sockops + sk_msg object
/// (`propagation.bpf.c`) and the language sets' halves.
pub mod propagation {
    use super::{globals, maps};

    /// `sockops`, attached to the cgroups of traced containers.
    pub const SOCKOPS: &str = "ft_prop_sockops";
    /// `sk_msg`, attached to [`maps::PROP_SOCKS`].
    pub const MSG: &str = "ft_prop_msg";
    /// Go: `net/http.(*Request).write` entry.
    pub const GO_REQUEST_WRITE: &str = "ft_go_prop_request_write";
    /// Go, gRPC joins: `transport.(*http2Client).createHeaderFields` RETs.
    pub const GO_GRPC_FIELDS_END: &str = "ft_go_prop_grpc_fields_end";
    /// Go, gRPC joins: `transport.(*loopyWriter).headerHandler` entry.
    pub const GO_GRPC_HEADER: &str = "ft_go_prop_grpc_header";

    /// Maps the propagation object takes from the language set it serves
    /// (the loader makes it reuse them). [`maps::INFLIGHT`] too, where the
    /// set has it.
    pub const SHARED_MAPS: [&str; 8] = [
        maps::EVENTS,
        maps::DROP_COUNTERS,
        maps::CLAIMED_TGIDS,
        maps::CLAIMED_HINT_USER,
        maps::CLAIMED_HINT_KERNEL,
        maps::PROP_THREADS,
        maps::PROP_CARRY,
        maps::PROP_COUNTERS,
    ];

    /// Maps a language set holds for propagation, shrunk to one entry when
    /// it is off (LRU maps are preallocated).
    pub const LANGUAGE_MAPS: [&str; 6] = [
        maps::PROP_THREADS,
        maps::PROP_GOROUTINES,
        maps::PROP_CARRY,
        maps::PROP_JOINS,
        maps::PROP_CARRY_SCRATCH,
        maps::PROP_HEADS,
    ];

    /// The knobs every object with a propagation half has.
    pub const GLOBALS: [&str; 6] = [
        globals::PROP_INJECT,
        globals::PROP_JOIN,
        globals::PROP_FORMATS,
        globals::PROP_SAMPLE_ROOT,
        globals::PROP_SAMPLE_PARENT_BASED,
        globals::PROP_SAMPLE_THRESHOLD,
    ];
}

/// The pod network program set (`podnet.bpf.c`): two `cgroup_skb`
/// programs attached at the cgroup2 root; counts aggregate in
/// [`maps::CGROUP_TRAFFIC`], no ring records.
pub mod podnet {
    pub const INGRESS: &str = "ft_podnet_ingress";
    pub const EGRESS: &str = "ft_podnet_egress";
}

/// The TCP health program set (`tcphealth.bpf.c`): BTF tracepoints only;
/// stats aggregate in [`maps::TCP_PEERS`], no ring records.
pub mod tcphealth {
    pub const RETRANSMIT: &str = "ft_tcp_retransmit";
    pub const RECEIVE_RESET: &str = "ft_tcp_receive_reset";
    pub const SEND_RESET: &str = "ft_tcp_send_reset";
    pub const STATE: &str = "ft_tcp_state";
    /// `(program, tp_btf event)`.
    pub const BTF_TRACEPOINTS: [(&str, &str); 4] = [
        (RETRANSMIT, "tcp_retransmit_skb"),
        (RECEIVE_RESET, "tcp_receive_reset"),
        (SEND_RESET, "tcp_send_reset"),
        (STATE, "inet_sock_set_state"),
    ];
}

/// The profiling program set (`profile.bpf.c`): a CPU-clock perf event
/// per CPU, and its own exit program (it also forgets `profile_procs`).
pub mod profile {
    /// `perf_event`: one sample of a claimed thread per tick. The process
    /// lifecycle is [`super::process`]'s.
    pub const TICK: &str = "ft_profile_tick";
}

/// What one compiled object must define, checked by `build.rs`.
#[derive(Clone, Copy, Debug)]
pub struct ObjectContract {
    /// `src/c/<object>.bpf.c`.
    pub object: &'static str,
    pub maps: &'static [&'static str],
    pub globals: &'static [&'static str],
    /// Programs attached to `syscalls` tracepoints, with those tracepoints.
    pub syscall_programs: &'static [(&'static str, &'static [&'static str])],
    /// Every other program.
    pub programs: &'static [&'static str],
}

/// The process-lifecycle programs of `common/proc.h`.
const PROCESS_PROGRAMS: &[&str] = &[process::FORK, process::EXIT, process::EXEC];

/// The socket-level set's programs besides its syscall tracepoints.
const SOCKET_PROGRAMS: &[&str] = &[
    process::FORK,
    process::EXIT,
    process::EXEC,
    tls::READ_ENTER,
    tls::READ_EX_ENTER,
    tls::WRITE_ENTER,
    tls::WRITE_EX_ENTER,
    tls::HANDSHAKE_ENTER,
    tls::FREE,
    tls::RETURN,
];

/// `programs` and then `last` (for the Go set: its uprobes and its exit
/// tracepoint, which is not attached as a uprobe).
const fn and_then<const N: usize, const M: usize>(
    programs: [&'static str; N],
    last: &'static str,
) -> [&'static str; M] {
    assert!(M == N + 1, "the result holds the programs and one more");
    let mut out = [""; M];
    let mut i = 0;
    while i < N {
        out[i] = programs[i];
        i += 1;
    }
    out[N] = last;
    out
}

/// The Go set's programs: the uprobes and the exit tracepoint.
const GO_OBJECT_PROGRAMS: [&str; go::PROGRAMS.len() + 1] = and_then(go::PROGRAMS, go::EXIT);

/// Every object and its contract.
pub const OBJECTS: [ObjectContract; 7] = [
    ObjectContract {
        object: "sockets",
        maps: &[
            maps::EVENTS,
            maps::DROP_COUNTERS,
            maps::CLAIMED_TGIDS,
            maps::CLAIMED_HINT_USER,
            maps::CLAIMED_HINT_KERNEL,
            maps::INFLIGHT,
            maps::PROP_THREADS,
            maps::PROP_GOROUTINES,
            maps::PROP_CARRY,
            maps::PROP_CARRY_SCRATCH,
            maps::PROP_COUNTERS,
            maps::PROP_HEADS,
            maps::PROP_JOINS,
        ],
        globals: &[
            globals::WAKEUP_BYTES,
            globals::MAX_PAYLOAD_BYTES,
            globals::REPORT_EXECS,
            globals::PROP_INJECT,
            globals::PROP_JOIN,
            globals::PROP_FORMATS,
            globals::PROP_SAMPLE_ROOT,
            globals::PROP_SAMPLE_PARENT_BASED,
            globals::PROP_SAMPLE_THRESHOLD,
        ],
        syscall_programs: &sockets::TRACEPOINTS,
        programs: SOCKET_PROGRAMS,
    },
    ObjectContract {
        object: "go",
        maps: &[
            maps::EVENTS,
            maps::DROP_COUNTERS,
            maps::GO_OFFSETS,
            maps::CLAIMED_TGIDS,
            maps::CLAIMED_HINT_USER,
            maps::CLAIMED_HINT_KERNEL,
            maps::PROP_THREADS,
            maps::PROP_GOROUTINES,
            maps::PROP_CARRY,
            maps::PROP_COUNTERS,
            maps::PROP_JOINS,
            maps::GO_PROP_REQUESTS,
        ],
        globals: &[
            globals::WAKEUP_BYTES,
            globals::MAX_PAYLOAD_BYTES,
            globals::PROP_INJECT,
            globals::PROP_JOIN,
            globals::PROP_FORMATS,
            globals::PROP_SAMPLE_ROOT,
            globals::PROP_SAMPLE_PARENT_BASED,
            globals::PROP_SAMPLE_THRESHOLD,
        ],
        syscall_programs: &[],
        programs: &GO_OBJECT_PROGRAMS,
    },
    ObjectContract {
        object: "profile",
        maps: &[
            maps::EVENTS,
            maps::DROP_COUNTERS,
            maps::CLAIMED_TGIDS,
            maps::CLAIMED_HINT_USER,
            maps::CLAIMED_HINT_KERNEL,
            maps::PROFILE_PROCS,
        ],
        globals: &[
            globals::WAKEUP_BYTES,
            globals::REPORT_EXECS,
            globals::KERNEL_STACKS,
            globals::PYTHON_FRAMES,
        ],
        syscall_programs: &[],
        programs: &[process::FORK, process::EXIT, process::EXEC, profile::TICK],
    },
    ObjectContract {
        object: "propagation",
        maps: &[
            maps::EVENTS,
            maps::DROP_COUNTERS,
            maps::CLAIMED_TGIDS,
            maps::CLAIMED_HINT_USER,
            maps::CLAIMED_HINT_KERNEL,
            maps::INFLIGHT,
            maps::PROP_THREADS,
            maps::PROP_GOROUTINES,
            maps::PROP_CARRY,
            maps::PROP_COUNTERS,
            maps::PROP_HEADS,
            maps::PROP_JOINS,
            maps::PROP_SOCKS,
        ],
        globals: &[
            globals::WAKEUP_BYTES,
            globals::PROP_INJECT,
            globals::PROP_JOIN,
            globals::PROP_FORMATS,
            globals::PROP_SAMPLE_ROOT,
            globals::PROP_SAMPLE_PARENT_BASED,
            globals::PROP_SAMPLE_THRESHOLD,
            globals::PROP_SENDER_ASSIGNS_SPAN,
            globals::PROP_SYSCALL_INFLIGHT,
        ],
        syscall_programs: &[],
        programs: &[propagation::SOCKOPS, propagation::MSG],
    },
    ObjectContract {
        object: "discovery",
        maps: &[
            maps::EVENTS,
            maps::DROP_COUNTERS,
            maps::CLAIMED_TGIDS,
            maps::CLAIMED_HINT_USER,
            maps::CLAIMED_HINT_KERNEL,
        ],
        globals: &[globals::WAKEUP_BYTES, globals::REPORT_EXECS],
        syscall_programs: &[],
        programs: PROCESS_PROGRAMS,
    },
    ObjectContract {
        object: "podnet",
        maps: &[maps::CGROUP_TRAFFIC],
        globals: &[],
        syscall_programs: &[],
        programs: &[podnet::INGRESS, podnet::EGRESS],
    },
    ObjectContract {
        object: "tcphealth",
        maps: &[maps::WATCHED_CGROUPS, maps::TCP_PEERS],
        globals: &[],
        syscall_programs: &[],
        programs: &[
            tcphealth::RETRANSMIT,
            tcphealth::RECEIVE_RESET,
            tcphealth::SEND_RESET,
            tcphealth::STATE,
        ],
    },
];
