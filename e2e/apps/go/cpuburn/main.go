// cpuburn is the profiler's Go test target. hot runs three times the
// iterations of cold (same loop body), so hot should get about 75 % of the
// CPU samples, whatever the scheduling. mix is small enough to be inlined
// into both: a profile must show it as an inlined frame of its caller.
// GET /burn does one round per request (spans to link samples to); with
// -spin a background goroutine burns rounds without requests; with -for D
// it prints READY, waits for a line on stdin, burns rounds for D and prints
// how many (the profiling benchmark).
package main

import (
	"flag"
	"fmt"
	"net/http"
	"time"

	"ferrotel.test/goapps/internal/common"
)

const unit = 100000

func mix(n, i uint64) uint64 {
	return (n*31 + i) % 1000003 // MIX
}

//go:noinline
func hot() uint64 {
	var n uint64
	for i := uint64(0); i < 3*unit; i++ {
		n = mix(n, i) // HOT
	}
	return n
}

//go:noinline
func cold() uint64 {
	var n uint64
	for i := uint64(0); i < unit; i++ {
		n = mix(n, i) // COLD
	}
	return n
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	spin := flag.Bool("spin", false, "burn CPU in a background goroutine")
	burnFor := flag.Duration("for", 0, "only burn rounds for this long, print ROUNDS <n> and exit (benchmarks)")
	flag.Parse()
	if *burnFor > 0 {
		// Start on the harness's word, so a profiler can attach first.
		fmt.Println("READY")
		fmt.Scanln()
		rounds := 0
		for end := time.Now().Add(*burnFor); time.Now().Before(end); rounds++ {
			hot()
			cold()
		}
		fmt.Printf("ROUNDS %d\n", rounds)
		return
	}
	if *spin {
		go func() {
			for {
				hot()
				cold()
			}
		}()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /burn", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d\n", hot()+cold())
	})
	ln := common.Listen(*addr)
	if err := http.Serve(ln, mux); err != nil {
		panic(err)
	}
}
