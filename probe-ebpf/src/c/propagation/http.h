/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * An HTTP/1.x request head scanner for BPF, over bytes already copied into a
 * map buffer: where the request line ends (where headers may be inserted),
 * where the head ends, the body framing (Content-Length, chunked, Upgrade,
 * CONNECT), and where the trace-context headers are.
 *
 * Strict where a mistake could corrupt a request: bare LF line ends,
 * conflicting Content-Lengths, a Transfer-Encoding, an Upgrade or a CONNECT
 * all make the caller stop touching the connection after this head. It
 * scans with bpf_loop, eight bytes per step (a SWAR test for '\n'), and
 * looks at header names only at line starts.
 */
#ifndef FT_PROP_HTTP_H
#define FT_PROP_HTTP_H

#include "common/types.h"

/* The longest head examined; a power of two. Buffers hold twice this, so
 * that 8-byte loads near the end stay inside them. */
#define FT_HTTP_WINDOW 4096
#define FT_HTTP_MAX_LINES 64

/* ft_http_head.flags */
#define FT_HTTP_DONE 0x1u          /* the blank line ending the head was found */
#define FT_HTTP_BAD 0x2u           /* not an HTTP/1.x request head, or malformed */
#define FT_HTTP_UNFRAMED 0x4u      /* chunked, Upgrade or CONNECT: the end of the body is not known */
#define FT_HTTP_HAS_LENGTH 0x8u    /* a Content-Length was given */
#define FT_HTTP_APP_CONTEXT 0x10u  /* the request carries trace context of its own */

/* A header value: [off, off + len) in the buffer; len 0 = absent. */
struct ft_http_value {
    __u16 off;
    __u16 len;
};

struct ft_http_head {
    __u32 flags;         /* FT_HTTP_* */
    __u32 line_end;      /* offset just after the request line's CRLF */
    __u32 head_len;      /* offset just after the blank line (if DONE) */
    __u32 lines;
    __u64 content_length;
    __u32 line_start;    /* scanning cursor */
    __u32 pad;
    struct ft_http_value traceparent;
    struct ft_http_value tracestate;
    struct ft_http_value baggage;
    struct ft_http_value b3;
    struct ft_http_value b3_trace_id;
    struct ft_http_value b3_span_id;
    struct ft_http_value b3_sampled;
    struct ft_http_value b3_flags;
};

/* What the bpf_loop steps share: constant for the whole scan. Everything
 * that changes lives in `head`, which must be map memory (not the stack):
 * the verifier then need not follow the cursor's exact value from step to
 * step, and checks the step once instead of once per possible value. */
struct ft_http_scan {
    const __u8 *buf; /* FT_HTTP_WINDOW * 2 bytes */
    struct ft_http_head *head;
    __u32 len;       /* valid bytes, <= FT_HTTP_WINDOW */
    __u32 pad;
};

#define FT_HTTP_MASK (FT_HTTP_WINDOW - 1)

/* Per-CPU head results: [0] for the sk_msg program, [1] for the server
 * side (they may run nested on one CPU). */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, struct ft_http_head);
} prop_heads SEC(".maps");

static __always_inline struct ft_http_head *ft_http_head_slot(__u32 slot)
{
    return bpf_map_lookup_elem(&prop_heads, &slot);
}

static __always_inline __u64 ft_http_word(const __u8 *buf, __u32 off)
{
    __u64 w;
    __builtin_memcpy(&w, buf + (off & FT_HTTP_MASK), 8);
    return w;
}

/* Does the (case-insensitive) header name at `off` equal `name` (lowercase,
 * including its ':')? `n` <= 24. Letters are compared with bit 0x20 set on
 * both sides, other bytes exactly. */
static __always_inline int ft_http_name_is(const __u8 *buf, __u32 off, const char *name, int n)
{
    for (int i = 0; i < 24; i++) {
        if (i >= n)
            return 1;
        __u8 want = name[i];
        __u8 got = buf[(off + i) & FT_HTTP_MASK];
        if (want >= 'a' && want <= 'z')
            got |= 0x20;
        if (got != want)
            return 0;
    }
    return 1;
}

/* The value of the header line [start, end) (end at its CR) whose name is
 * `name_len` bytes long (with the colon): optional whitespace trimmed. */
static __always_inline struct ft_http_value ft_http_value_of(const __u8 *buf, __u32 start, __u32 end, __u32 name_len)
{
    __u32 v = start + name_len;
    for (int i = 0; i < 8; i++) {
        if (v < end && (buf[v & FT_HTTP_MASK] == ' ' || buf[v & FT_HTTP_MASK] == '\t'))
            v++;
    }
    __u32 e = end;
    for (int i = 0; i < 8; i++) {
        if (e > v && (buf[(e - 1) & FT_HTTP_MASK] == ' ' || buf[(e - 1) & FT_HTTP_MASK] == '\t'))
            e--;
    }
    struct ft_http_value value = {.off = (__u16)v, .len = (__u16)(e - v)};
    return value;
}

/* Decimal Content-Length; UNFRAMED|BAD on anything else. */
static __always_inline void ft_http_content_length(const __u8 *buf, struct ft_http_value value, struct ft_http_head *h)
{
    if (value.len == 0 || value.len > 18) {
        h->flags |= FT_HTTP_BAD;
        return;
    }
    __u64 n = 0;
    for (int i = 0; i < 18; i++) {
        if (i >= value.len)
            break;
        __u8 c = buf[(value.off + i) & FT_HTTP_MASK];
        if (c < '0' || c > '9') {
            h->flags |= FT_HTTP_BAD;
            return;
        }
        n = n * 10 + (c - '0');
    }
    if ((h->flags & FT_HTTP_HAS_LENGTH) && h->content_length != n)
        h->flags |= FT_HTTP_BAD; /* conflicting lengths: the server must refuse it */
    h->flags |= FT_HTTP_HAS_LENGTH;
    h->content_length = n;
}

/* The request line [0, end): METHOD SP target SP HTTP/1.x */
static __always_inline void ft_http_request_line(const __u8 *buf, __u32 end, struct ft_http_head *h)
{
    /* A method is an uppercase token followed by a space. */
    __u32 sp = 0;
    for (int i = 0; i < 16; i++) {
        __u8 c = buf[i];
        if (c == ' ') {
            sp = i;
            break;
        }
        if (c < 'A' || c > 'Z') {
            h->flags |= FT_HTTP_BAD;
            return;
        }
    }
    if (sp == 0 || end < sp + 11) {
        h->flags |= FT_HTTP_BAD;
        return;
    }
    /* ... ending in " HTTP/1.0" or " HTTP/1.1". */
    __u32 v = end - 9;
    if (buf[v & FT_HTTP_MASK] != ' ' || buf[(v + 1) & FT_HTTP_MASK] != 'H' || buf[(v + 2) & FT_HTTP_MASK] != 'T' ||
        buf[(v + 3) & FT_HTTP_MASK] != 'T' || buf[(v + 4) & FT_HTTP_MASK] != 'P' ||
        buf[(v + 5) & FT_HTTP_MASK] != '/' || buf[(v + 6) & FT_HTTP_MASK] != '1' ||
        buf[(v + 7) & FT_HTTP_MASK] != '.' ||
        (buf[(v + 8) & FT_HTTP_MASK] != '0' && buf[(v + 8) & FT_HTTP_MASK] != '1')) {
        h->flags |= FT_HTTP_BAD;
        return;
    }
    if (sp == 7 && buf[0] == 'C' && buf[1] == 'O' && buf[2] == 'N' && buf[3] == 'N' && buf[4] == 'E' &&
        buf[5] == 'C' && buf[6] == 'T')
        h->flags |= FT_HTTP_UNFRAMED; /* a tunnel follows */
}

/* The buffer a head is scanned in, as a type: global functions take
 * pointers to sized things only. */
struct ft_http_buf {
    __u8 b[FT_HTTP_WINDOW * 2];
};

/* One header line [start, end) (end at its CR). A global function: the
 * verifier checks it once, with any start and end, instead of once per
 * path through the scan. */
__noinline int ft_http_header_line(const struct ft_http_buf *hb, __u32 start, __u32 end, struct ft_http_head *h)
{
    if (!hb || !h)
        return 0;
    const __u8 *buf = hb->b;
    start &= FT_HTTP_MASK;
    end &= FT_HTTP_MASK;
    __u8 first = buf[start] | 0x20;
#define FT_NAME(lit) ft_http_name_is(buf, start, lit, sizeof(lit) - 1)
#define FT_VALUE(lit) ft_http_value_of(buf, start, end, sizeof(lit) - 1)
    switch (first) {
    case 'c':
        if (FT_NAME("content-length:"))
            ft_http_content_length(buf, FT_VALUE("content-length:"), h);
        break;
    case 't':
        if (FT_NAME("transfer-encoding:"))
            h->flags |= FT_HTTP_UNFRAMED;
        else if (FT_NAME("traceparent:"))
            h->traceparent = FT_VALUE("traceparent:");
        else if (FT_NAME("tracestate:"))
            h->tracestate = FT_VALUE("tracestate:");
        break;
    case 'b':
        if (FT_NAME("baggage:"))
            h->baggage = FT_VALUE("baggage:");
        else if (FT_NAME("b3:"))
            h->b3 = FT_VALUE("b3:");
        break;
    case 'x':
        if (FT_NAME("x-b3-traceid:"))
            h->b3_trace_id = FT_VALUE("x-b3-traceid:");
        else if (FT_NAME("x-b3-spanid:"))
            h->b3_span_id = FT_VALUE("x-b3-spanid:");
        else if (FT_NAME("x-b3-sampled:"))
            h->b3_sampled = FT_VALUE("x-b3-sampled:");
        else if (FT_NAME("x-b3-flags:"))
            h->b3_flags = FT_VALUE("x-b3-flags:");
        break;
    case 'u':
        if (FT_NAME("upgrade:"))
            h->flags |= FT_HTTP_UNFRAMED;
        break;
    default:
        break;
    }
#undef FT_NAME
#undef FT_VALUE
    return 0;
}

/* A '\n' at `nl`: the line [line_start, nl) ends. Returns 1 to stop. */
static __always_inline long ft_http_line_end(struct ft_http_scan *s, __u32 nl)
{
    struct ft_http_head *h = s->head;
    const __u8 *buf = s->buf;
    __u32 start = h->line_start;
    h->line_start = nl + 1;
    /* Lines end in CRLF; a bare LF is refused. */
    if (nl == 0 || nl <= start || buf[(nl - 1) & FT_HTTP_MASK] != '\r') {
        h->flags |= FT_HTTP_BAD;
        return 1;
    }
    __u32 end = nl - 1; /* the CR */
    h->lines++;
    if (h->lines > FT_HTTP_MAX_LINES) {
        h->flags |= FT_HTTP_BAD;
        return 1;
    }
    if (h->lines == 1) {
        ft_http_request_line(buf, end, h);
        h->line_end = nl + 1;
        return (h->flags & FT_HTTP_BAD) ? 1 : 0;
    }
    if (end == start) {
        h->flags |= FT_HTTP_DONE;
        h->head_len = nl + 1;
        return 1;
    }
    /* Obsolete line folding (a line starting with whitespace): refused. */
    __u8 c = buf[start & FT_HTTP_MASK];
    if (c == ' ' || c == '\t') {
        h->flags |= FT_HTTP_BAD;
        return 1;
    }
    ft_http_header_line((const struct ft_http_buf *)buf, start, end, h);
    return (h->flags & FT_HTTP_BAD) ? 1 : 0;
}

/* bpf_loop step: the 8 bytes at i * 8. */
static long ft_http_step(__u64 i, void *ctx)
{
    struct ft_http_scan *s = ctx;
    __u32 base = (__u32)i * 8;
    if (base >= s->len)
        return 1;
    __u64 w = ft_http_word(s->buf, base);
    __u64 x = w ^ 0x0a0a0a0a0a0a0a0aULL;
    if (((x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL) == 0)
        return 0; /* no '\n' here */
    for (int k = 0; k < 8; k++) {
        if (base + k >= s->len)
            return 1;
        if (((w >> (8 * k)) & 0xff) == '\n' && ft_http_line_end(s, base + k))
            return 1;
    }
    return 0;
}

/* Scans the head at the start of buf[0, len) into h (map memory). */
static __always_inline void ft_http_scan_head(const __u8 *buf, __u32 len, struct ft_http_head *h)
{
    __builtin_memset(h, 0, sizeof(*h));
    if (len > FT_HTTP_WINDOW)
        len = FT_HTTP_WINDOW;
    struct ft_http_scan s = {.buf = buf, .head = h, .len = len, .pad = 0};
    bpf_loop((len + 7) / 8, ft_http_step, &s, 0);
    if (h->traceparent.len || h->b3.len || h->b3_trace_id.len)
        h->flags |= FT_HTTP_APP_CONTEXT;
}

#endif
