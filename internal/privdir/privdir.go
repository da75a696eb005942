// Package privdir tells whether a directory is private to this process's
// user: what nsn-run believes or removes in a node-wide directory (records
// that let a check be skipped, caches it empties) must be in one that no
// other user could have written to or swapped for a link.
package privdir

import (
	"fmt"
	"os"
	"syscall"
)

// Is reports whether path is a directory (not a link to one) owned by
// this process's effective user that group and others cannot write to.
func Is(path string) bool {
	info, err := os.Lstat(path)
	return err == nil && private(info)
}

func private(info os.FileInfo) bool {
	if !info.IsDir() || info.Mode().Perm()&0o022 != 0 {
		return false
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}

// Open opens path as an os.Root if it is private (Is), judged by the
// directory the Root holds: what is then listed, removed or written
// through the Root stays in that directory, whatever is renamed or
// linked along path meanwhile.
func Open(path string) (*os.Root, error) {
	before, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(path)
	if err != nil {
		return nil, err
	}
	held, err := root.Stat(".")
	if err == nil && (!os.SameFile(before, held) || !private(held)) {
		err = fmt.Errorf("%s is not a directory private to uid %d", path, os.Geteuid())
	}
	if err != nil {
		root.Close()
		return nil, err
	}
	return root, nil
}

// EmptyIfFull removes the regular files of root's directory once it holds
// limit entries or more: a node-wide cache bounded without bookkeeping,
// which starts again empty.
func EmptyIfFull(root *os.Root, limit int) {
	dir, err := root.Open(".")
	if err != nil {
		return
	}
	entries, _ := dir.ReadDir(-1)
	dir.Close()
	if len(entries) < limit {
		return
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			_ = root.Remove(e.Name())
		}
	}
}
