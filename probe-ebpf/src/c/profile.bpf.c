/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The profiling program set: CPU-clock sampling of the processes the probe
 * traces.
 *
 * One perf_event program runs on every CPU at the configured frequency (the
 * software CPU clock: there may be no hardware PMU). It fires for whatever
 * runs on that CPU, so the first thing it does is the claimed_tgids lookup;
 * an untraced process costs that lookup and nothing else. For a claimed one
 * it reserves one fixed-size sample in the ring buffer and fills it in place:
 *  - the user stack by frame pointers (bpf_get_stack: Go always keeps them;
 *    for other code the first frames are the useful ones);
 *  - the kernel stack, when the sample interrupted the kernel;
 *  - Go: the running goroutine's id, read through the thread pointer
 *    (g sits at a fixed offset from FS), so user space can link the sample
 *    to the span active on that goroutine;
 *  - Python: the interpreter's own frame chain (code object + instruction
 *    per frame), walked here because by the time user space could read the
 *    process's memory the thread has moved on (docs/probe-profiling.md has
 *    the measurement). User space turns code objects into names and lines.
 *
 * The process lifecycle is common/proc.h's, as in every set: children of a
 * claimed process are claimed at fork, a claim ends at exit, and an exec of a
 * claimed process is reported (user space then re-reads what it runs). A
 * profile_procs entry outliving its process is harmless: nothing samples an
 * unclaimed pid, and user space removes it when it reads the exit.
 */
#include "common/types.h"
#include "common/sizes.h"
#include "wire.h"
#include "common/claimed.h"
#include "common/drops.h"
#include "common/ringbuf.h"
#include "common/proc.h"
#include "profile/wire.h"

char LICENSE[] SEC("license") = "GPL";

/* Load-time knobs (defaults from the kernel contract). */
volatile const __u32 kernel_stacks = FT_DEFAULT_KERNEL_STACKS; /* also record kernel stacks */
volatile const __u32 python_frames = FT_DEFAULT_PYTHON_FRAMES; /* walk interpreter frames (0: user space does, for the measurement) */

/* Threads of one interpreter searched for the current one before giving up. */
#define FT_PY_MAX_THREADS 64

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FT_MAX_CLAIMED_TGIDS);
    __type(key, __u32);
    __type(value, struct ft_prof_proc);
} profile_procs SEC(".maps");

/* pid_tgid -> PyThreadState*: found once per thread by walking the
 * interpreter's thread list, re-validated on every sample. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, __u64);
    __type(value, __u64);
} py_tstates SEC(".maps");

/* One interpreter frame's first bytes, read at once. */
struct ft_py_frame_buf {
    __u8 bytes[FT_PY_FRAME_READ];
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct ft_py_frame_buf);
} py_frame_scratch SEC(".maps");

static __always_inline __u64 ft_read_u64(__u64 addr)
{
    __u64 value = 0;
    bpf_probe_read_user(&value, sizeof(value), (void *)addr);
    return value;
}

/* A u64 field at a (bounded) offset of the frame buffer. */
static __always_inline __u64 ft_buf_u64(const struct ft_py_frame_buf *buf, __u32 off)
{
    __u64 value = 0;
    if (off > FT_PY_FRAME_READ - sizeof(value))
        return 0; /* also the verifier's bound */
    __builtin_memcpy(&value, &buf->bytes[off], sizeof(value));
    return value;
}

/* What identifies the running thread in PyThreadState: the kernel tid, or
 * (3.10) pthread_self(), which is the thread pointer. */
static __always_inline __u64 ft_thread_pointer(void)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    return BPF_CORE_READ(task, thread.fsbase);
}

/* State of one thread-list search, for bpf_loop. */
struct ft_py_thread_search {
    const struct ft_py_offsets *o;
    __u64 key;
    __u64 tstate;
    __u64 found;
};

static long ft_py_thread_step(__u64 index, void *arg)
{
    struct ft_py_thread_search *c = arg;
    if (!c->tstate)
        return 1;
    if (ft_read_u64(c->tstate + c->o->tstate_thread_key) == c->key) {
        c->found = c->tstate;
        return 1;
    }
    c->tstate = ft_read_u64(c->tstate + c->o->tstate_next);
    return 0;
}

static __always_inline __u64 ft_py_tstate(const struct ft_py_offsets *o, __u64 pid_tgid)
{
    __u64 key = (o->flags & FT_PY_KEY_PTHREAD) ? ft_thread_pointer() : (__u32)pid_tgid;
    __u64 *cached = bpf_map_lookup_elem(&py_tstates, &pid_tgid);
    if (cached) {
        __u64 tstate = *cached;
        if (tstate && ft_read_u64(tstate + o->tstate_thread_key) == key)
            return tstate;
    }
    __u64 interp = ft_read_u64(o->interp_head);
    if (!interp)
        return 0;
    struct ft_py_thread_search c = {
        .o = o,
        .key = key,
        .tstate = ft_read_u64(interp + o->interp_threads_head),
        .found = 0,
    };
    /* bpf_loop: the verifier checks the body once, not once per iteration. */
    bpf_loop(FT_PY_MAX_THREADS, ft_py_thread_step, &c, 0);
    if (c.found)
        bpf_map_update_elem(&py_tstates, &pid_tgid, &c.found, BPF_ANY);
    return c.found;
}

/* State of one frame-chain walk, for bpf_loop. */
struct ft_py_walk_state {
    struct ft_profile_sample *s;
    const struct ft_py_offsets *o;
    struct ft_py_frame_buf *buf;
    __u64 frame;
    __u32 n;
    __u32 flags;
};

static long ft_py_walk_step(__u64 index, void *arg)
{
    struct ft_py_walk_state *w = arg;
    if (!w->frame)
        return 1;
    if (w->n >= FT_PROF_PY_MAX) {
        w->flags |= FT_PROF_PY_TRUNCATED;
        return 1;
    }
    if (bpf_probe_read_user(w->buf->bytes, sizeof(w->buf->bytes), (void *)w->frame) != 0) {
        w->flags |= FT_PROF_PY_READ_FAILED;
        return 1;
    }
    const struct ft_py_offsets *o = w->o;
    __u64 code = ft_buf_u64(w->buf, o->frame_code);
    __u64 instr = ft_buf_u64(w->buf, o->frame_instr);
    if (o->flags & FT_PY_LASTI_INT)
        instr &= 0xffffffffu;
    /* 3.12+: frames owned by the C stack are shims between two evaluation
     * loops, not Python code. */
    int shim = o->frame_owner != FT_PROF_NO_OFFSET && (ft_buf_u64(w->buf, o->frame_owner) & 0xff) == 3;
    if (!shim && code) {
        __u32 i = w->n & (FT_PROF_PY_MAX - 1);
        w->s->py[i].code = code;
        w->s->py[i].instr = instr;
        w->n++;
    }
    w->frame = ft_buf_u64(w->buf, o->frame_previous);
    return 0;
}

static __always_inline void ft_py_walk(struct ft_profile_sample *s, const struct ft_py_offsets *o, __u64 pid_tgid)
{
    __u64 tstate = ft_py_tstate(o, pid_tgid);
    s->py_tstate = tstate;
    if (!tstate) {
        s->flags |= FT_PROF_PY_NO_THREAD;
        return;
    }
    if (!python_frames)
        return;
    __u64 frame = ft_read_u64(tstate + o->tstate_frame);
    if (frame && o->cframe_current != FT_PROF_NO_OFFSET)
        frame = ft_read_u64(frame + o->cframe_current);
    __u32 zero = 0;
    struct ft_py_frame_buf *buf = bpf_map_lookup_elem(&py_frame_scratch, &zero);
    if (!buf)
        return;
    struct ft_py_walk_state w = {.s = s, .o = o, .buf = buf, .frame = frame, .n = 0, .flags = 0};
    /* Shims are skipped, so allow a few more steps than frames kept. */
    bpf_loop(FT_PROF_PY_MAX + 8, ft_py_walk_step, &w, 0);
    s->py_len = w.n;
    s->flags |= w.flags;
}

/* The running goroutine: g is at a fixed offset from the thread pointer. */
static __always_inline __u64 ft_go_goid(const struct ft_prof_proc *proc)
{
    __u64 fsbase = ft_thread_pointer();
    if (!fsbase)
        return 0;
    __u64 g = ft_read_u64(fsbase + proc->go_tls_g);
    if (!g)
        return 0;
    return ft_read_u64(g + proc->go_goid);
}

SEC("perf_event")
int ft_profile_tick(struct bpf_perf_event_data *ctx)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    if (tgid == 0 || !ft_is_claimed(tgid))
        return 0;
    struct ft_profile_sample *s = ft_reserve(sizeof(*s));
    if (!s)
        return 0;
    ft_fill_header(&s->header, FT_EV_PROFILE_SAMPLE, pid_tgid);
    s->goid = 0;
    s->py_tstate = 0;
    s->flags = 0;
    s->py_len = 0;
    long n = bpf_get_stack(ctx, s->user, sizeof(s->user), BPF_F_USER_STACK);
    if (n < 0) {
        s->flags |= FT_PROF_USER_FAILED;
        n = 0;
    }
    s->user_len = n / sizeof(__u64);
    s->kernel_len = 0;
    if (kernel_stacks) {
        n = bpf_get_stack(ctx, s->kernel, sizeof(s->kernel), 0);
        s->kernel_len = n > 0 ? n / sizeof(__u64) : 0;
    }
    const struct ft_prof_proc *proc = bpf_map_lookup_elem(&profile_procs, &tgid);
    if (proc) {
        if (proc->kind == FT_PROF_GO)
            s->goid = ft_go_goid(proc);
        else if (proc->kind == FT_PROF_PYTHON)
            ft_py_walk(s, &proc->py, pid_tgid);
    }
    ft_submit(s);
    return 0;
}
