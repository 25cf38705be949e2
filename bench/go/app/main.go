// Command goapp is the benchmark service:
//
//	GET /users/{id}   the minimal handler: a small JSON document
//	GET /orders/{id}  the realistic one: a call to a backend over a
//	                  keep-alive connection, JSON decoding and encoding, an
//	                  html/template — a few hundred µs of work, like the
//	                  services we trace
//
// -backend names the backend (any server answering GET /users/{id} with
// JSON: another goapp).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"os"
	"time"
)

type user struct {
	ID    string   `json:"id"`
	Name  string   `json:"name"`
	Roles []string `json:"roles"`
}

type item struct {
	SKU   string  `json:"sku"`
	Qty   int     `json:"qty"`
	Price float64 `json:"price"`
}

var page = template.Must(template.New("order").Parse(`<html><body><h1>Order {{.ID}} for {{.User.Name}}</h1>
<table>{{range .Items}}
<tr><td>{{.SKU}}</td><td>{{.Qty}}</td><td>{{printf "%.2f" .Price}}</td></tr>{{end}}
</table><p>Total: {{printf "%.2f" .Total}}</p></body></html>`))

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	backend := flag.String("backend", "", "base URL of the backend for /orders/{id}")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /users/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(user{ID: r.PathValue("id"), Name: "Ada", Roles: []string{"admin", "dev"}})
	})
	handler, transport, shutdown := instrument(mux)
	defer shutdown()
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		order(w, r, client, *backend)
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("LISTENING %s\n", ln.Addr())
	if err := http.Serve(ln, handler); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func order(w http.ResponseWriter, r *http.Request, client *http.Client, backend string) {
	id := r.PathValue("id")
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, backend+"/users/"+id, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	resp, err := client.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	var u user
	err = json.NewDecoder(resp.Body).Decode(&u)
	resp.Body.Close()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	items := make([]item, 40)
	for i := range items {
		items[i] = item{SKU: fmt.Sprintf("sku-%s-%d", id, i), Qty: i%3 + 1, Price: 3.5 + float64(i)*1.25}
	}
	encoded, _ := json.Marshal(map[string]any{"user": u, "items": items})
	var decoded struct {
		User  user   `json:"user"`
		Items []item `json:"items"`
	}
	json.Unmarshal(encoded, &decoded)
	total := 0.0
	for _, it := range decoded.Items {
		total += float64(it.Qty) * it.Price
	}
	var html bytes.Buffer
	page.Execute(&html, map[string]any{"ID": id, "User": decoded.User, "Items": decoded.Items, "Total": total})
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"user": decoded.User.Name, "total": total, "page_bytes": html.Len()})
}
