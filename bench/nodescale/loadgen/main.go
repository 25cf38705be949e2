// Sends GET requests to every URL given, each at the same fixed rate, for a
// fixed time, over keep-alive connections, and prints what it did as one
// JSON object on stdout. Open loop: requests are due on a fixed schedule
// per target; a target that falls behind sends its late requests at once
// (they are counted as late), so the total sent stays the rate asked for
// unless the machine cannot hold it, which then shows as `late` and a
// `sent` short of `due`.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

type result struct {
	Due      int     `json:"due"`
	Sent     int     `json:"sent"`
	OK       int     `json:"ok"`
	Errors   int     `json:"errors"`
	Late     int     `json:"late"`
	Seconds  float64 `json:"seconds"`
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
	FirstErr string  `json:"first_error,omitempty"`
	// Requests answered, per target, in the order of -urls.
	PerTargetOK []int `json:"per_target_ok"`
}

func main() {
	urls := flag.String("urls", "", "comma-separated URLs, one per target")
	rate := flag.Float64("rate", 10, "requests per second to each target")
	seconds := flag.Float64("seconds", 10, "how long to send")
	flag.Parse()
	targets := strings.Split(*urls, ",")
	if *urls == "" || *rate <= 0 {
		fmt.Fprintln(os.Stderr, "give -urls and a positive -rate")
		os.Exit(2)
	}
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true},
	}
	interval := time.Duration(float64(time.Second) / *rate)
	duration := time.Duration(*seconds * float64(time.Second))
	start := time.Now()
	end := start.Add(duration)

	var mu sync.Mutex
	var res result
	var latencies []time.Duration
	var wg sync.WaitGroup
	res.PerTargetOK = make([]int, len(targets))
	for i, url := range targets {
		wg.Add(1)
		go func(i int, url string) {
			defer wg.Done()
			// Targets start spread over one interval, so that the total
			// rate is steady rather than 50 requests at once.
			next := start.Add(interval * time.Duration(i) / time.Duration(len(targets)))
			var local []time.Duration
			sent, ok, errs, late := 0, 0, 0, 0
			firstErr := ""
			for next.Before(end) {
				if wait := time.Until(next); wait > 0 {
					time.Sleep(wait)
				} else if -wait > interval {
					late++
				}
				t0 := time.Now()
				resp, err := client.Get(url)
				sent++
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode >= 400 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					errs++
					if firstErr == "" {
						firstErr = err.Error()
					}
				} else {
					ok++
					local = append(local, time.Since(t0))
				}
				next = next.Add(interval)
			}
			mu.Lock()
			res.Sent += sent
			res.OK += ok
			res.Errors += errs
			res.Late += late
			res.PerTargetOK[i] = ok
			if res.FirstErr == "" {
				res.FirstErr = firstErr
			}
			latencies = append(latencies, local...)
			mu.Unlock()
		}(i, url)
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.Due = int(float64(len(targets)) * *rate * duration.Seconds())
	sort.Slice(latencies, func(a, b int) bool { return latencies[a] < latencies[b] })
	if n := len(latencies); n > 0 {
		res.P50Ms = float64(latencies[n/2]) / 1e6
		res.P99Ms = float64(latencies[n*99/100]) / 1e6
	}
	json.NewEncoder(os.Stdout).Encode(res)
}
