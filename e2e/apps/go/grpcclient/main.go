// grpcclient is a gRPC client test target: -n unary health Checks of -service,
// printing how many ended with each code.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func main() {
	addr := flag.String("addr", "", "server host:port")
	n := flag.Int("n", 1, "number of calls")
	service := flag.String("service", "ok", "service name to check")
	flag.Parse()
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	counts := map[string]int{}
	for i := 0; i < *n; i++ {
		_, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{Service: *service})
		counts[status.Code(err).String()]++
	}
	fmt.Println("CODES", counts)
}
