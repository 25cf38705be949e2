"""CPU-bound target of the profiler tests: `hot` runs three times the
iterations of `cold` (same loop body), so whatever the scheduling, `hot`
should get about 75 % of the process's CPU samples, almost all on the line
marked HOT. Prints READY once running. Optional argument: run that many
threads (each does the same), to exercise thread-state lookup; or
`--for SECONDS`: print READY, wait for a line on stdin, burn rounds that
long and print ROUNDS <n> (the profiling benchmark)."""
import sys
import threading
import time


def hot():
    n = 0
    for i in range(30000):
        n = (n * 31 + i) % 1000003  # HOT
    return n


def cold():
    n = 0
    for i in range(10000):
        n = (n * 31 + i) % 1000003  # COLD
    return n


def cycle_forever():
    while True:
        hot()
        cold()


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--for":
        # Start on the harness's word, so a profiler can attach first.
        print("READY", flush=True)
        sys.stdin.readline()
        end = time.monotonic() + float(sys.argv[2])
        rounds = 0
        while time.monotonic() < end:
            hot()
            cold()
            rounds += 1
        print(f"ROUNDS {rounds}", flush=True)
        return
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    for _ in range(threads - 1):
        threading.Thread(target=cycle_forever, daemon=True).start()
    print("READY", flush=True)
    cycle_forever()


if __name__ == "__main__":
    main()
