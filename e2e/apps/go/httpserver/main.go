// httpserver is a net/http test target: plain routes, an explicit status, a
// handler that calls downstream (inline and from spawned goroutines) and a
// handler that grows its stack deeply.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"

	"ferrotel.test/goapps/internal/common"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	downstream := flag.String("downstream", "", "base URL that /downstream calls")
	secure := common.TLSFlags()
	flag.Parse()

	client := secure.HTTPClient(false)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello\n")
	})
	mux.HandleFunc("GET /status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.PathValue("code"))
		if err != nil || code < 200 || code > 599 {
			code = http.StatusBadRequest
		}
		w.WriteHeader(code)
	})
	mux.HandleFunc("GET /users/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"id": r.PathValue("id")})
	})
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, r.Body)
	})
	mux.HandleFunc("GET /deep", func(w http.ResponseWriter, r *http.Request) {
		depth, _ := strconv.Atoi(r.URL.Query().Get("depth"))
		if depth <= 0 {
			depth = 2000
		}
		fmt.Fprintf(w, "%d\n", common.Deep(depth))
	})
	// Exactly two client calls per request: one in the handler's goroutine and
	// one from a goroutine spawned by a goroutine the handler spawned.
	mux.HandleFunc("GET /downstream", func(w http.ResponseWriter, r *http.Request) {
		if *downstream == "" {
			http.Error(w, "no -downstream configured", http.StatusInternalServerError)
			return
		}
		status := call(client, *downstream+"/hello")
		var wg sync.WaitGroup
		var nested int
		wg.Add(1)
		go func() {
			defer wg.Done()
			var inner sync.WaitGroup
			inner.Add(1)
			go func() {
				defer inner.Done()
				nested = call(client, *downstream+"/users/7")
			}()
			inner.Wait()
		}()
		wg.Wait()
		if status != http.StatusOK || nested != http.StatusOK {
			w.WriteHeader(http.StatusBadGateway)
		}
		fmt.Fprintf(w, "%d %d\n", status, nested)
	})

	ln := common.Listen(*addr)
	server := &http.Server{Handler: mux}
	var err error
	if secure.Serving() {
		// ServeTLS: what ListenAndServeTLS does on its listener (HTTP/2 by ALPN too).
		err = server.ServeTLS(ln, secure.CertFile(), secure.KeyFile())
	} else {
		err = server.Serve(ln)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func call(client *http.Client, url string) int {
	resp, err := client.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}
