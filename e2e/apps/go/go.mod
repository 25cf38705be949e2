// Test targets for the Go probe. Kept buildable by the oldest Go in
// the test matrix (Debian's golang-1.23): the `go` line and every dependency
// pin must stay at or below it.
module ferrotel.test/goapps

go 1.22

require (
	github.com/go-chi/chi/v5 v5.1.0
	google.golang.org/grpc v1.68.1
)

require (
	golang.org/x/net v0.29.0 // indirect
	golang.org/x/sys v0.25.0 // indirect
	golang.org/x/text v0.18.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20240903143218-8af14fe29dc1 // indirect
	google.golang.org/protobuf v1.34.2 // indirect
)
