// backend is the demo's Go service: a small catalogue API with realistic
// latency spread and a few errors, so that the RED summary has something to
// show. Standard library only: it builds offline.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

func main() {
	addr := flag.String("addr", "0.0.0.0:8080", "listen address")
	errorRate := flag.Float64("error-rate", 0.03, "fraction of /api/items requests that fail with 500")
	flag.Parse()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/items/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(r.PathValue("id"))
		if err != nil {
			http.Error(w, "bad id", http.StatusBadRequest)
			return
		}
		// Mostly fast, with a tail: what p50/p90/p99 are for.
		delay := time.Duration(rand.ExpFloat64()*3*float64(time.Millisecond)) + time.Millisecond
		time.Sleep(delay)
		if rand.Float64() < *errorRate {
			http.Error(w, "inventory unavailable", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"id": id, "name": "item-" + strconv.Itoa(id), "stock": id % 7})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	log.Printf("backend listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, mux))
}
