/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The propagation program set: sockops + sk_msg (propagation/inject.h),
 * loaded next to a language set, whose maps it reuses, only when an
 * Instrumentation turns propagation on. Its own maps: the sockhash, the
 * per-socket framing state and scratch buffers.
 */
#include "common/types.h"
#include "common/sizes.h"
#include "wire.h"
#include "propagation/inject.h"

char LICENSE[] SEC("license") = "GPL";
