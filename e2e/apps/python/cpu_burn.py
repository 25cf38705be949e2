"""CPU-bound target of the profiler tests: `hot` runs three times the
iterations of `cold` (same loop body), so whatever the scheduling, `hot`
should get about 75 % of the process's CPU samples, almost all on the line
marked HOT. Prints READY once running. Optional argument: run that many
threads (each does the same), to exercise thread-state lookup."""
import sys
import threading


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
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    for _ in range(threads - 1):
        threading.Thread(target=cycle_forever, daemon=True).start()
    print("READY", flush=True)
    cycle_forever()


if __name__ == "__main__":
    main()
