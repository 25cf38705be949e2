// The cost of one syscall to a process, without Python or HTTP in the way.
//
//   syscall_loop MODE WINDOWS     MODE: rw | nop
//
// rw: a TCP loopback pair inside the process; a 64-byte write on one end,
//     the matching read on the other (two socket syscalls per iteration).
// nop: getppid(), a syscall no program of the probe looks at.
//
// Prints "READY <pid>", waits for a line on stdin (so a probe can claim it
// first), then prints the mean ns per syscall of each 0.25 s window,
// WINDOWS times, and exits.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "rw") && strcmp(argv[1], "nop"))) {
        fprintf(stderr, "usage: %s rw|nop WINDOWS\n", argv[0]);
        return 2;
    }
    int rw = strcmp(argv[1], "rw") == 0;
    int windows = atoi(argv[2]);
    int c = -1, s = -1;
    if (rw) {
        int l = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t n = sizeof a;
        if (bind(l, (void *)&a, n) || listen(l, 1) || getsockname(l, (void *)&a, &n))
            return 1;
        c = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c, (void *)&a, n))
            return 1;
        s = accept(l, 0, 0);
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    char buf[64] = {'G', 'E', 'T', ' ', '/'};
    printf("READY %d\n", getpid());
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 1;
    for (int w = 0; w < windows; w++) {
        double t0 = now();
        long calls = 0;
        while (now() - t0 < 2.5e8) {
            for (int k = 0; k < 100; k++) {
                if (rw) {
                    if (write(c, buf, 64) != 64 || read(s, buf, 64) != 64)
                        return 1;
                } else {
                    getppid();
                    getppid();
                }
            }
            calls += 200;
        }
        printf("%.1f\n", (now() - t0) / calls);
        fflush(stdout);
    }
    return 0;
}
