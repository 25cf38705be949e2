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
	flag.Parse()
	if *wait {
		common.WaitForStdin()
	}
	client := &http.Client{}
	counts := map[int]int{}
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
	}
	fmt.Println("STATUS", counts)
}
