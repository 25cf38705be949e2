//go:build otel

package main

import (
	"context"
	"fmt"
	"net/http"
	"os"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// instrument wraps the handler with otelhttp and installs the SDK with a
// batching OTLP/gRPC exporter (endpoint from OTEL_EXPORTER_OTLP_ENDPOINT).
func instrument(h http.Handler) (http.Handler, func()) {
	exporter, err := otlptracegrpc.New(context.Background(), otlptracegrpc.WithInsecure())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	provider := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter))
	otel.SetTracerProvider(provider)
	return otelhttp.NewHandler(h, "users"), func() { provider.Shutdown(context.Background()) }
}
