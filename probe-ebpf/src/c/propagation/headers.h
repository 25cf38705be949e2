/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Trace-context header values: parsing W3C traceparent and B3 (single and
 * multi), and writing them. Shared by every program set that reads or
 * writes context headers.
 */
#ifndef FT_PROP_HEADERS_H
#define FT_PROP_HEADERS_H

#include "common/types.h"

#define FT_TRACEPARENT_LEN 55

/* A remote parent: the caller's trace and span, and its flags (bit 0:
 * sampled). */
struct ft_traceparent {
    __u8 trace_id[16];
    __u8 parent_id[8];
    __u8 flags;
    __u8 pad[7];
};

static __always_inline int ft_hex(__u8 c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes "00-<32 hex>-<16 hex>-<2 hex>"; 0 on success. */
static __always_inline int ft_parse_traceparent(const __u8 *s, struct ft_traceparent *out)
{
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return -1;
    if (s[0] == 'f' && s[1] == 'f')
        return -1;
    __u8 any_trace = 0, any_parent = 0;
    for (int i = 0; i < 16; i++) {
        int hi = ft_hex(s[3 + 2 * i]), lo = ft_hex(s[4 + 2 * i]);
        if (hi < 0 || lo < 0)
            return -1;
        out->trace_id[i] = (__u8)(hi << 4 | lo);
        any_trace |= out->trace_id[i];
    }
    for (int i = 0; i < 8; i++) {
        int hi = ft_hex(s[36 + 2 * i]), lo = ft_hex(s[37 + 2 * i]);
        if (hi < 0 || lo < 0)
            return -1;
        out->parent_id[i] = (__u8)(hi << 4 | lo);
        any_parent |= out->parent_id[i];
    }
    int hi = ft_hex(s[53]), lo = ft_hex(s[54]);
    if (hi < 0 || lo < 0 || !any_trace || !any_parent)
        return -1;
    out->flags = (__u8)(hi << 4 | lo);
    return 0;
}

/* `n` (16 or 32) lowercase hex digits at s into a 16-byte trace id; 64-bit
 * ids are zero-padded on the left, as B3 asks. 0 on success. */
static __always_inline int ft_parse_b3_trace_id(const __u8 *s, int n, __u8 *out)
{
    if (n != 16 && n != 32)
        return -1;
    __builtin_memset(out, 0, 16);
    int skip = n == 16 ? 8 : 0;
    __u8 any = 0;
    for (int i = 0; i < 16; i++) {
        if (i >= n / 2)
            break;
        int hi = ft_hex(s[2 * i]), lo = ft_hex(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        __u8 b = (__u8)(hi << 4 | lo);
        out[(skip + i) & 15] = b;
        any |= b;
    }
    return any ? 0 : -1;
}

static __always_inline int ft_parse_span_id(const __u8 *s, __u8 *out)
{
    __u8 any = 0;
    for (int i = 0; i < 8; i++) {
        int hi = ft_hex(s[2 * i]), lo = ft_hex(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (__u8)(hi << 4 | lo);
        any |= out[i];
    }
    return any ? 0 : -1;
}

/* A B3 sampling state: "1", "d" (debug) or "true" sample; anything else
 * does not. */
static __always_inline __u8 ft_b3_sampled(const __u8 *s, int n)
{
    if (n == 1)
        return s[0] == '1' || s[0] == 'd';
    return n == 4 && s[0] == 't' && s[1] == 'r' && s[2] == 'u' && s[3] == 'e';
}

/* Decodes a B3 single header "<trace>-<span>[-<sampling>[-<parent>]]" (at
 * most 68 bytes at s, n of them valid); 0 on success. Without a sampling
 * state the context counts as sampled (the caller deferred the decision,
 * and we keep what we are given). */
static __always_inline int ft_parse_b3_single(const __u8 *s, int n, struct ft_traceparent *out)
{
    int tn = 0;
    if (n >= 33 && s[32] == '-')
        tn = 32;
    else if (n >= 17 && s[16] == '-')
        tn = 16;
    else
        return -1;
    if (ft_parse_b3_trace_id(s, tn, out->trace_id) != 0)
        return -1;
    int sp = tn + 1;
    if (n < sp + 16 || ft_parse_span_id(s + (sp & 63), out->parent_id) != 0)
        return -1;
    int rest = sp + 16;
    out->flags = 1;
    if (n > rest) {
        if (s[rest & 63] != '-' || n < rest + 2)
            return -1;
        __u8 c = s[(rest + 1) & 63];
        out->flags = (c == '1' || c == 'd') ? 1 : 0;
    }
    return 0;
}

static const char ft_hex_digits[16] = "0123456789abcdef";

static __always_inline void ft_put_hex(__u8 *dst, const __u8 *src, int n)
{
    for (int i = 0; i < n; i++) {
        dst[2 * i] = ft_hex_digits[(src[i] >> 4) & 0xf];
        dst[2 * i + 1] = ft_hex_digits[src[i] & 0xf];
    }
}

#define FT_TRACEPARENT_LINE 70 /* "traceparent: 00-<32>-<16>-<2>\r\n" */
#define FT_B3_LINE 57          /* "b3: <32>-<16>-<1>\r\n" */

static __always_inline void ft_put_traceparent_line(__u8 *dst, const __u8 *trace_id, const __u8 *span_id, __u32 sampled)
{
    __builtin_memcpy(dst, "traceparent: 00-", 16);
    ft_put_hex(dst + 16, trace_id, 16);
    dst[48] = '-';
    ft_put_hex(dst + 49, span_id, 8);
    dst[65] = '-';
    dst[66] = '0';
    dst[67] = sampled ? '1' : '0';
    dst[68] = '\r';
    dst[69] = '\n';
}

static __always_inline void ft_put_b3_line(__u8 *dst, const __u8 *trace_id, const __u8 *span_id, __u32 sampled)
{
    __builtin_memcpy(dst, "b3: ", 4);
    ft_put_hex(dst + 4, trace_id, 16);
    dst[36] = '-';
    ft_put_hex(dst + 37, span_id, 8);
    dst[53] = '-';
    dst[54] = sampled ? '1' : '0';
    dst[55] = '\r';
    dst[56] = '\n';
}

#endif
