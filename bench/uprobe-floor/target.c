/* The floor a uprobe puts under every probed call on this machine: the same
 * trivial function called in a loop, probed at an instruction the kernel
 * emulates (a NOP, a PUSH) or at one it must single-step (LEA). The thread's
 * CPU time per call is printed; run.sh attaches the probes and subtracts. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

__attribute__((noinline)) int at_nop(int x)
{
    __asm__ volatile(".byte 0x0f, 0x1f, 0x44, 0x00, 0x00"); /* nopl 0(%rax,%rax,1) */
    return x + 1;
}

__attribute__((noinline)) int at_push(int x)
{
    __asm__ volatile("push %%rbp; pop %%rbp" ::: "memory");
    return x + 1;
}

__attribute__((noinline)) int at_lea(int x)
{
    __asm__ volatile("lea 1(%%rdi), %%eax" ::: "eax");
    return x + 1;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s nop|push|lea CALLS\n", argv[0]);
        return 2;
    }
    int (*f)(int) = argv[1][0] == 'n' ? at_nop : argv[1][0] == 'p' ? at_push : at_lea;
    long calls = atol(argv[2]);
    int acc = 0;
    struct timespec a, b;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    for (long i = 0; i < calls; i++)
        acc = f(acc);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("%.1f\n", ns / calls + (acc < 0)); /* acc keeps the loop */
    return 0;
}
