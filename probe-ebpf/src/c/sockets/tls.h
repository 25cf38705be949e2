/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * TLS on the socket-level path: what the syscall programs do with a
 * connection that carries TLS, and the maps the OpenSSL uprobes share with
 * them (the uprobe programs are in sockets/tls_probes.h).
 *
 * A connection's first data decides (ft_tls_sniff): a TLS record header
 * marks it FT_CONN_TLS. From then on its syscalls carry ciphertext: the
 * first FT_TLS_HELLO_EVENTS data events per direction still go to user
 * space (the ClientHello and ServerHello: SNI and protocol version), every
 * later one is suppressed here, so no request is seen twice; the plaintext
 * comes from SSL_read/SSL_write as FT_EV_TLS_DATA events on the same fd.
 *
 * Which fd an SSL object talks through is learnt without reading OpenSSL's
 * structs (their layout changes between versions):
 *  - NESTED: a socket syscall made while the thread is inside an SSL call
 *    belongs to that call's SSL (blocking sockets: http.server, gunicorn,
 *    requests, http.client);
 *  - GUESSED: with a memory BIO (asyncio's SSL protocol, so uvicorn) OpenSSL
 *    makes no syscall; the event loop reads the socket, then feeds the SSL
 *    object on the same thread, so the thread's last TLS socket is the one.
 *    A handshake call re-guesses (a client's first handshake call runs
 *    before any I/O on its new socket); a NESTED mapping is never replaced
 *    by a guess; SSL_free forgets the mapping (SSL pointers are reused).
 */
#ifndef FT_SOCKETS_TLS_H
#define FT_SOCKETS_TLS_H

#include "common/types.h"
#include "common/sizes.h"
#include "sockets/wire.h"
#include "sockets/conns.h"
#include "sockets/inflight.h"

/* Ciphertext data events reported per direction of a TLS connection: a
 * hello can take two reads (OpenSSL reads a record's 5-byte header, then
 * its body). */
#define FT_TLS_HELLO_EVENTS 2

enum ft_tls_call_kind {
    FT_TLS_CALL_READ = 1,      /* SSL_read, SSL_read_ex */
    FT_TLS_CALL_WRITE = 2,     /* SSL_write, SSL_write_ex */
    FT_TLS_CALL_HANDSHAKE = 3, /* SSL_do_handshake */
};

/* An OpenSSL call between its entry and its return, per thread. */
struct ft_tls_call {
    __u64 ssl;
    __u64 buf;
    __u64 len_ptr;  /* _ex variants: the size_t * that receives the byte count; else 0 */
    __u64 enter_ns;
    /* When the call's last ciphertext syscall began (0: none yet). The
     * response of a write call started leaving then: its plaintext event
     * ends there, not at the return probe, which a thread preempted on its
     * way back to user space reaches late. */
    __u64 io_ns;
    __s32 fd;       /* the socket the call did I/O on; -1 until one is seen */
    __u32 kind;     /* enum ft_tls_call_kind */
};

struct ft_tls_ssl_key {
    __u64 ssl;
    __u32 tgid;
    __u32 pad;
};

enum ft_tls_fd_source {
    FT_TLS_FD_NESTED = 1,
    FT_TLS_FD_GUESSED = 2,
};

struct ft_tls_fd {
    __s32 fd;
    __u32 source; /* enum ft_tls_fd_source */
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FT_MAX_INFLIGHT);
    __type(key, __u64); /* pid_tgid */
    __type(value, struct ft_tls_call);
} tls_calls SEC(".maps");

/* SSL object -> its socket. LRU: objects never freed (a process killed)
 * age out. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, FT_MAX_CONNS);
    __type(key, struct ft_tls_ssl_key);
    __type(value, struct ft_tls_fd);
} tls_fds SEC(".maps");

/* pid_tgid -> the last TLS socket the thread did I/O on (memory BIOs). */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, FT_MAX_INFLIGHT);
    __type(key, __u64);
    __type(value, __s32);
} tls_last_fd SEC(".maps");

static __always_inline void ft_tls_map_fd(__u64 ssl, __u32 tgid, __s32 fd, __u32 source)
{
    struct ft_tls_ssl_key key = {.ssl = ssl, .tgid = tgid, .pad = 0};
    struct ft_tls_fd *known = bpf_map_lookup_elem(&tls_fds, &key);
    if (known && known->fd == fd && known->source == source)
        return;
    if (known && known->source == FT_TLS_FD_NESTED && source == FT_TLS_FD_GUESSED)
        return;
    struct ft_tls_fd value = {.fd = fd, .source = source};
    bpf_map_update_elem(&tls_fds, &key, &value, BPF_ANY);
}

/* The current thread moves ciphertext on TLS socket fd. */
static __always_inline void ft_tls_note_io(__u64 pid_tgid, __s32 fd)
{
    struct ft_tls_call *call = bpf_map_lookup_elem(&tls_calls, &pid_tgid);
    if (call) {
        call->fd = fd;
        call->io_ns = bpf_ktime_get_ns();
        ft_tls_map_fd(call->ssl, pid_tgid >> 32, fd, FT_TLS_FD_NESTED);
    }
    __s32 *last = bpf_map_lookup_elem(&tls_last_fd, &pid_tgid);
    if (!last || *last != fd)
        bpf_map_update_elem(&tls_last_fd, &pid_tgid, &fd, BPF_ANY);
}

/* A TLS record header: content type 20..23 (change_cipher_spec, alert,
 * handshake, application_data), protocol version 3.0..3.4. No HTTP/1
 * message starts with a byte below 0x20. */
static __always_inline int ft_tls_is_record(const __u8 *head)
{
    return head[0] >= 20 && head[0] <= 23 && head[1] == 3 && head[2] <= 4;
}

static __always_inline __u32 ft_tls_hello_shift(__u32 direction)
{
    return direction == FT_DIR_INGRESS ? FT_CONN_HELLO_IN_SHIFT : FT_CONN_HELLO_OUT_SHIFT;
}

/*
 * Before a read/write-family syscall on a claimed process's known socket.
 * Returns 1 if the syscall's data must not be reported (ciphertext past
 * the hellos); sets *io_flags for its exit.
 */
static __always_inline int ft_tls_on_io_enter(__u64 pid_tgid, __s32 fd, struct ft_conn *conn, __u32 direction,
                                              __u32 *io_flags)
{
    __u32 flags = conn->flags;
    *io_flags = 0;
    if (!(flags & FT_CONN_SEEN)) {
        *io_flags = FT_IO_SNIFF;
        return 0;
    }
    if (!(flags & FT_CONN_TLS))
        return 0; /* plaintext: the path costs one branch */
    ft_tls_note_io(pid_tgid, fd);
    if (((flags >> ft_tls_hello_shift(direction)) & 0xff) >= FT_TLS_HELLO_EVENTS)
        return 1;
    *io_flags = FT_IO_HELLO;
    return 0;
}

/* At the exit of a hello syscall that moved bytes: one fewer to report. */
static __always_inline void ft_tls_count_hello(__u64 pid_tgid, __s32 fd, __u32 direction)
{
    struct ft_conn_key key = {.tgid = pid_tgid >> 32, .fd = fd};
    struct ft_conn *conn = bpf_map_lookup_elem(&conns, &key);
    if (conn)
        conn->flags += 1u << ft_tls_hello_shift(direction);
}

/* At the exit of a connection's first data syscall: classify it by its
 * first bytes (captured >= 3). */
static __always_inline void ft_tls_sniff(__u64 pid_tgid, __s32 fd, __u32 direction, const __u8 *head, __u32 captured)
{
    struct ft_conn_key key = {.tgid = pid_tgid >> 32, .fd = fd};
    struct ft_conn *conn = bpf_map_lookup_elem(&conns, &key);
    if (!conn)
        return;
    __u32 flags = conn->flags | FT_CONN_SEEN;
    if (captured >= 3 && ft_tls_is_record(head)) {
        flags |= FT_CONN_TLS | (1u << ft_tls_hello_shift(direction));
        ft_tls_note_io(pid_tgid, fd);
    }
    conn->flags = flags;
}

#endif
