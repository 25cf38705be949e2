// Loads a BPF object and attaches every program in it the way libbpf's
// section names say (raw and BTF tracepoints need no tracefs), prints
// "READY", and holds the links until stdin closes; exiting detaches them.
// The benchmark uses it for objects that are not the probe's (the floor).
//
//   attach_object OBJECT.bpf.o
#include <bpf/libbpf.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OBJECT.bpf.o\n", argv[0]);
        return 2;
    }
    struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
    if (!obj || bpf_object__load(obj)) {
        fprintf(stderr, "loading %s failed\n", argv[1]);
        return 1;
    }
    struct bpf_program *prog;
    bpf_object__for_each_program(prog, obj)
    {
        if (!bpf_program__attach(prog)) {
            fprintf(stderr, "attaching %s failed\n", bpf_program__name(prog));
            return 1;
        }
    }
    printf("READY\n");
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
    return 0;
}
