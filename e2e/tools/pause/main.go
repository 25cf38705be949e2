// pause holds a pod's namespaces open: it sleeps until SIGINT or SIGTERM
// and, as PID 1 of a pod that shares its PID namespace, reaps orphans.
// The same job as Kubernetes' pause.c, in Go so it builds statically with
// the toolchain the test bed already has.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
