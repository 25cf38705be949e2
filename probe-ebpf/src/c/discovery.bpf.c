/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The discovery program set, loaded by the probe's Kubernetes discovery (not
 * by a language front-end): only the shared process-lifecycle programs of
 * common/proc.h, so that new processes are examined when they exec instead
 * of on the next /proc scan.
 *
 * Here `claimed_tgids` means "container processes discovery keeps track of"
 * (user space inserts them with FT_CLAIM_FOLLOW_FORKS), which makes the
 * kernel report their forks and exits; execs are reported for every process
 * (`report_execs` = 1), because a process becomes a container's only when
 * the runtime execs the entrypoint inside the container's cgroup.
 */
#include "common/types.h"
#include "common/sizes.h"
#include "wire.h"
#include "common/claimed.h"
#include "common/drops.h"
#include "common/ringbuf.h"
#include "common/proc.h"

char LICENSE[] SEC("license") = "GPL";
