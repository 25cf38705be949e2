// middle is the Go tier of the service-graph test: for every request it
// calls the Python backend and an uninstrumented peer. Standard library
// only, so it builds offline.
//
// GET /api/{id} and /api/{id}/fail call GET <backend>/{id}[/fail] and,
// when --peer is given, GET <peer>/{id}; the answer is 200 when the backend
// answered 200, else 502.
package main

import (
	"flag"
	"io"
	"log"
	"net/http"
	"time"
)

func main() {
	addr := flag.String("addr", "0.0.0.0:8080", "listen address")
	backend := flag.String("backend", "", "base URL of the backend, e.g. http://10.200.0.3:8080/item")
	peer := flag.String("peer", "", "base URL of the uninstrumented peer")
	flag.Parse()
	client := &http.Client{Timeout: 10 * time.Second}
	call := func(url string) int {
		resp, err := client.Get(url)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	handle := func(w http.ResponseWriter, r *http.Request, suffix string) {
		id := r.PathValue("id")
		status := call(*backend + "/" + id + suffix)
		if *peer != "" {
			call(*peer + "/" + id)
		}
		if status != http.StatusOK {
			http.Error(w, "backend failed", http.StatusBadGateway)
			return
		}
		w.Write([]byte("ok " + id + "\n"))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/{id}", func(w http.ResponseWriter, r *http.Request) { handle(w, r, "") })
	mux.HandleFunc("GET /api/{id}/fail", func(w http.ResponseWriter, r *http.Request) { handle(w, r, "/fail") })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	log.Printf("middle listening on %s, backend %s, peer %s", *addr, *backend, *peer)
	log.Fatal(http.ListenAndServe(*addr, mux))
}
