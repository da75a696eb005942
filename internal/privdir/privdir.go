// Package privdir tells whether a directory is private to this process's
// user: what nsn-run believes or removes in a node-wide directory (records
// that let a check be skipped, caches it empties) must be in one that no
// other user could have written to or swapped for a link.
package privdir

import (
	"os"
	"syscall"
)

// Is reports whether path is a directory (not a link to one) owned by
// this process's effective user that group and others cannot write to.
func Is(path string) bool {
	info, err := os.Lstat(path)
	if err != nil || !info.IsDir() || info.Mode().Perm()&0o022 != 0 {
		return false
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}
