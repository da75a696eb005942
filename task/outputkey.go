package task

import (
	"crypto/rand"
	"encoding/hex"
	"path/filepath"
	"strings"
)

// A task's /output is a bind of a directory in its host output tmpfs
// (STATE/tasks/ID/output) named by a key drawn at random when the task
// starts: STATE/tasks/ID/output/KEY. A spec or create request is a
// description of a task that can be audited before the task exists and run
// at any time after; without the key it would bind the task's output
// whenever it ran (an outside review audited a request clean for a free
// id, ran it while a task of that id ran, and forged the task's result).
// The key exists only in the task's own record and container, so such a
// spec names a directory that does not exist.

// outputKeyLen is the length of an output key: 128 bits in hex.
const outputKeyLen = 32

// PreviewOutputKey is the key a preview of a task's spec shows (`nsn-run
// spec`): previews are deterministic, and no task gets this key.
const PreviewOutputKey = "00000000000000000000000000000000"

// NewOutputKey draws a task's output key.
func NewOutputKey() string {
	for {
		b := make([]byte, outputKeyLen/2)
		_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
		if k := hex.EncodeToString(b); k != PreviewOutputKey {
			return k
		}
	}
}

// IsOutputKey reports whether k has an output key's shape.
func IsOutputKey(k string) bool {
	return len(k) == outputKeyLen && strings.Trim(k, "0123456789abcdef") == ""
}

// OutputKeyOf returns the key of dir when dir is TASKSDIR/ID/output/KEY
// for id, else "".
func OutputKeyOf(tasksDir, id, dir string) string {
	parent, key := filepath.Split(dir)
	if filepath.Clean(parent) != filepath.Join(tasksDir, id, "output") || !IsOutputKey(key) {
		return ""
	}
	return key
}
