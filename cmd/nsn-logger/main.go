// Command nsn-logger is the small logger process containerd's runc shim
// runs for each task: `nsn-logger shim-logger CONFIG` (the form the shim's
// binary:// log URI gives), the task's stdout on fd 3, stderr on fd 4; and
// the one nsn-run's Docker backend starts for each task, `nsn-logger
// attach-logger CONFIG`, the container's attach stream on fd 3. It
// does what `nsn-run shim-logger` does, but links only the logs package, so
// each running task costs the host a few MiB less than with nsn-run itself
// as the logger. containerd.Config.LoggerBinary selects it; nsn-run uses it
// when it sits beside the nsn-run binary.
package main

import (
	"fmt"
	"os"

	"github.com/nsn-run/nsn-run/logs"
)

func main() {
	run := map[string]func(string) error{logs.ShimLoggerCommand: logs.RunShimLogger, logs.AttachLoggerCommand: logs.RunAttachLogger}
	var logger func(string) error
	if len(os.Args) == 3 {
		logger = run[os.Args[1]]
	}
	if logger == nil {
		fmt.Fprintf(os.Stderr, "usage: %s %s|%s CONFIG (started by containerd's shim or nsn-run's Docker backend, not by hand)\n", os.Args[0], logs.ShimLoggerCommand, logs.AttachLoggerCommand)
		os.Exit(2)
	}
	if err := logger(os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "nsn-logger:", err)
		os.Exit(1)
	}
}
