// Package procstat reads what nsn-run needs from /proc/PID/stat.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strings"
)

// StartTime is process pid's start time in clock ticks since boot (field
// 22): with the pid, it names one process for as long as it lives, since a
// later process that reuses the pid starts later.
func StartTime(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// The fields after the command, which may hold spaces and parens.
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(fields) < 20 {
		return "", fmt.Errorf("/proc/%d/stat: too short", pid)
	}
	return fields[19], nil
}
