/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Wire structs of the socket-level program set (sockets.bpf.c). Source of
 * truth; mirrored in probe-ebpf/src/sockets.rs.
 */
#ifndef FT_SOCKETS_WIRE_H
#define FT_SOCKETS_WIRE_H

#include "wire.h"

/* Capacity of a data event's payload; the runtime limit is the
 * `max_payload_bytes` knob (<= this). A power of two: the verifier bound. */
#define FT_SOCK_PAYLOAD_CAP 4096

enum ft_sock_role {
    FT_ROLE_UNKNOWN = 0, /* adopted: the socket existed before we saw it opened */
    FT_ROLE_SERVER = 1,  /* returned by accept/accept4 */
    FT_ROLE_CLIENT = 2,  /* passed to connect */
};

enum ft_sock_dir {
    FT_DIR_INGRESS = 1, /* read, readv, recvfrom, recvmsg */
    FT_DIR_EGRESS = 2,  /* write, writev, sendto, sendmsg */
};

/* A stream socket became traced: accepted, connected, or adopted on first use. 72 bytes. */
struct ft_sock_open_event {
    struct ft_event_header header;
    __s32 fd;
    __u32 role; /* enum ft_sock_role */
    struct ft_sock_addr local;
    struct ft_sock_addr peer;
};

/*
 * Bytes moved by one read- or write-family syscall on a traced socket,
 * followed by `captured_len` payload bytes (the first bytes of the call, at
 * most max_payload_bytes). The record is variable-length: the reader must
 * use captured_len, not FT_SOCK_PAYLOAD_CAP. 48-byte header.
 */
struct ft_sock_data_event {
    struct ft_event_header header; /* ts_ns: syscall exit */
    __u64 enter_ns;                /* syscall entry */
    __s32 fd;
    __u32 direction;    /* enum ft_sock_dir */
    __u32 total_len;    /* bytes the syscall moved (its return value) */
    __u32 captured_len; /* payload bytes that follow */
};

/* Full-capacity form, used as the per-CPU scratch the event is built in. */
struct ft_sock_data_scratch {
    struct ft_sock_data_event event;
    __u8 payload[FT_SOCK_PAYLOAD_CAP * 2];
};

/*
 * A claimed process mapped part of a file executable (mmap with PROT_EXEC
 * of an fd): it may have loaded a TLS library, which user space then looks
 * for in /proc/<pid>/maps. Emitted at syscall entry. 32 bytes.
 */
struct ft_exec_map_event {
    struct ft_event_header header;
    __s32 fd;
    __u32 prot;
};

/* A traced socket was closed by the process. 32 bytes. */
struct ft_sock_close_event {
    struct ft_event_header header;
    __s32 fd;
    __u32 role;
};

#endif
