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
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// instrument wraps the handler and the backend client with otelhttp and
// installs the SDK with a batching OTLP/gRPC exporter (endpoint from
// OTEL_EXPORTER_OTLP_ENDPOINT).
func instrument(h http.Handler) (http.Handler, http.RoundTripper, func()) {
	exporter, err := otlptracegrpc.New(context.Background(), otlptracegrpc.WithInsecure())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	provider := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter))
	otel.SetTracerProvider(provider)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	return otelhttp.NewHandler(h, "server"), otelhttp.NewTransport(http.DefaultTransport),
		func() { provider.Shutdown(context.Background()) }
}
