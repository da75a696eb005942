// Command nsn-logger is the small logger process containerd's runc shim
// runs for each task: `nsn-logger shim-logger CONFIG` (the form the shim's
// binary:// log URI gives), the task's stdout on fd 3, stderr on fd 4. It
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
	if len(os.Args) != 3 || os.Args[1] != logs.ShimLoggerCommand {
		fmt.Fprintf(os.Stderr, "usage: %s %s CONFIG (started by containerd's shim, not by hand)\n", os.Args[0], logs.ShimLoggerCommand)
		os.Exit(2)
	}
	if err := logs.RunShimLogger(os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "nsn-logger:", err)
		os.Exit(1)
	}
}
