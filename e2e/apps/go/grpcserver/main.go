// grpcserver is a gRPC test target. It serves the standard health service
// (generated code that ships with grpc-go, so no protoc is needed) with
// behaviour chosen by the requested service name:
//
//	""/"ok"      -> SERVING
//	"notfound"   -> codes.NotFound
//	"downstream" -> one Check to -downstream from the handler's goroutine and
//	                one from a spawned goroutine, then SERVING
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"ferrotel.test/goapps/internal/common"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

type server struct {
	healthpb.UnimplementedHealthServer
	downstream healthpb.HealthClient
}

func (s *server) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	switch req.Service {
	case "", "ok":
	case "notfound":
		return nil, status.Error(codes.NotFound, "unknown service")
	case "deep":
		common.Deep(2000)
	case "downstream":
		if s.downstream == nil {
			return nil, status.Error(codes.FailedPrecondition, "no -downstream configured")
		}
		if _, err := s.downstream.Check(ctx, &healthpb.HealthCheckRequest{Service: "ok"}); err != nil {
			return nil, err
		}
		errs := make(chan error)
		go func() {
			_, err := s.downstream.Check(ctx, &healthpb.HealthCheckRequest{Service: "ok"})
			errs <- err
		}()
		if err := <-errs; err != nil {
			return nil, err
		}
	default:
		return nil, status.Errorf(codes.InvalidArgument, "service %q", req.Service)
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	downstream := flag.String("downstream", "", "host:port that service \"downstream\" calls")
	secure := common.TLSFlags()
	flag.Parse()
	s := &server{}
	if *downstream != "" {
		conn, err := grpc.NewClient(*downstream, grpc.WithTransportCredentials(clientCredentials(secure)))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		s.downstream = healthpb.NewHealthClient(conn)
	}
	var options []grpc.ServerOption
	if config := secure.ServerConfig(); config != nil {
		options = append(options, grpc.Creds(credentials.NewTLS(config)))
	}
	gs := grpc.NewServer(options...)
	healthpb.RegisterHealthServer(gs, s)
	ln := common.Listen(*addr)
	if err := gs.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// clientCredentials trusts -tls-ca, or is insecure without it.
func clientCredentials(secure common.TLS) credentials.TransportCredentials {
	if config := secure.ClientConfig(); config != nil {
		return credentials.NewTLS(config)
	}
	return insecure.NewCredentials()
}
