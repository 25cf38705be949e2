// grpcclient is a gRPC client test target: unary health Checks, -calls
// "service=count,..." in order, printing how many ended with each code; then
// -watch server-streaming Watch calls, each read until it ends, printing
// their codes. With -traceparent, the first -traced unary calls send it as
// request metadata (as an instrumented caller would).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"ferrotel.test/goapps/internal/common"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func main() {
	addr := flag.String("addr", "", "server host:port")
	calls := flag.String("calls", "ok=1", "comma-separated service=count pairs")
	wait := flag.Bool("wait", false, "wait for a line on stdin before calling")
	watch := flag.Int("watch", 0, "server-streaming Watch calls after the unary ones")
	traceparent := flag.String("traceparent", "", "W3C traceparent metadata for the first -traced unary calls")
	traced := flag.Int("traced", 0, "how many of the first unary calls send -traceparent")
	secure := common.TLSFlags()
	flag.Parse()
	if *wait {
		common.WaitForStdin()
	}
	creds := insecure.NewCredentials()
	if config := secure.ClientConfig(); config != nil {
		creds = credentials.NewTLS(config)
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	counts := map[string]int{}
	for _, pair := range strings.Split(*calls, ",") {
		service, count, _ := strings.Cut(pair, "=")
		n, err := strconv.Atoi(count)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bad -calls entry %q\n", pair)
			os.Exit(2)
		}
		for i := 0; i < n; i++ {
			ctx := context.Background()
			if *traced > 0 && *traceparent != "" {
				*traced--
				ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", *traceparent)
			}
			_, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
			counts[status.Code(err).String()]++
		}
	}
	fmt.Println("CODES", counts)
	watched := map[string]int{}
	for i := 0; i < *watch; i++ {
		stream, err := client.Watch(context.Background(), &healthpb.HealthCheckRequest{Service: "ok"})
		for err == nil {
			_, err = stream.Recv()
		}
		if err == io.EOF {
			err = nil
		}
		watched[status.Code(err).String()]++
	}
	fmt.Println("WATCH", watched)
}
