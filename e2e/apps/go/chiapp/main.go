// chiapp is a go-chi test target: routes with path parameters behind chi's
// router (which wraps net/http, so the same probes see it).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"

	"ferrotel.test/goapps/internal/common"
	"github.com/go-chi/chi/v5"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	downstream := flag.String("downstream", "", "base URL that /downstream calls")
	flag.Parse()

	r := chi.NewRouter()
	r.Get("/hello", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello\n")
	})
	r.Get("/users/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"id": chi.URLParam(r, "id")})
	})
	r.Post("/users", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
	})
	r.Get("/missing", func(w http.ResponseWriter, r *http.Request) {
		http.NotFound(w, r)
	})
	r.Get("/downstream", func(w http.ResponseWriter, r *http.Request) {
		done := make(chan int)
		go func() {
			resp, err := http.Get(*downstream + "/hello")
			if err != nil {
				done <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			done <- resp.StatusCode
		}()
		fmt.Fprintf(w, "%d\n", <-done)
	})

	ln := common.Listen(*addr)
	if err := http.Serve(ln, r); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
