package common

import (
	"bufio"
	"os"
)

// WaitForStdin blocks until a line (or EOF) arrives on stdin, so a test can
// attach the probe to a client process before it sends anything.
func WaitForStdin() {
	bufio.NewReader(os.Stdin).ReadString('\n')
}
