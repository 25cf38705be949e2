// httpclient is a net/http client test target: it sends -n sequential GET
// requests and prints how many got each status.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"

	"ferrotel.test/goapps/internal/common"
)

func main() {
	url := flag.String("url", "", "URL to GET")
	n := flag.Int("n", 1, "number of requests")
	traceparent := flag.String("traceparent", "", "traceparent header to send")
	wait := flag.Bool("wait", false, "wait for a line on stdin before sending")
	h2 := flag.Bool("h2", false, "HTTP/2 over TLS (with -tls-ca)")
	secure := common.TLSFlags()
	flag.Parse()
	if *wait {
		common.WaitForStdin()
	}
	client := secure.HTTPClient(*h2)
	counts := map[int]int{}
	protocols := map[string]int{}
	for i := 0; i < *n; i++ {
		req, err := http.NewRequest(http.MethodGet, *url, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if *traceparent != "" {
			req.Header.Set("traceparent", *traceparent)
		}
		resp, err := client.Do(req)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		counts[resp.StatusCode]++
		protocols[resp.Proto]++
	}
	fmt.Println("STATUS", counts)
	fmt.Println("PROTO", protocols)
}
