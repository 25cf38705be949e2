// Package common holds what every test target shares: how it announces its
// listening address and how the deep-stack handler grows its stack.
package common

import (
	"fmt"
	"net"
	"os"
)

// Listen opens a TCP listener and prints "LISTENING <host:port>" on stdout so
// a test harness can learn the port without racing for a free one.
func Listen(addr string) net.Listener {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "listen %q: %v\n", addr, err)
		os.Exit(1)
	}
	fmt.Printf("LISTENING %s\n", ln.Addr().String())
	return ln
}

// Deep recurses with a large frame so the goroutine stack is copied several
// times while the request is in flight: the failure mode of uretprobes, whose
// rewritten return addresses make the Go runtime abort ("unknown caller pc").
//
//go:noinline
func Deep(depth int) int {
	var frame [512]byte
	frame[depth%len(frame)] = byte(depth)
	if depth <= 0 {
		return int(frame[0])
	}
	return Deep(depth-1) + int(frame[depth%len(frame)])
}
