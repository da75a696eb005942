package flock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMark: shared marks nest and the last one out removes the file; an
// exclusive mark waits for them; a holder that was waiting while the file
// was removed under it marks the new file, which others see.
func TestMark(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	path := filepath.Join(t.TempDir(), "mark")
	first, err := Mark(ctx, path, unix.LOCK_SH)
	if err != nil {
		t.Fatal(err)
	}
	second, err := Mark(ctx, path, unix.LOCK_SH)
	if err != nil {
		t.Fatal(err)
	}
	if !Held(path) {
		t.Fatal("two shared marks: the file is not held")
	}
	first()
	if !Held(path) {
		t.Fatal("one shared mark left: the file is not held (or gone)")
	}
	short, cancelShort := context.WithCancel(ctx)
	cancelShort()
	if _, err := Mark(short, path, unix.LOCK_EX); !errors.Is(err, context.Canceled) {
		t.Fatalf("an exclusive mark beside a shared one: %v, want context.Canceled", err)
	}
	second()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the last mark out left its file: %v", err)
	}

	// A remover (an exclusive mark) takes the file away while a shared
	// mark waits on it: the waiter ends up on the new file, not on the
	// removed one.
	remover, err := Mark(ctx, path, unix.LOCK_EX)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan func(), 1)
	go func() {
		unlock, err := Mark(ctx, path, unix.LOCK_SH)
		if err != nil {
			t.Error(err)
			close(got)
			return
		}
		got <- unlock
	}()
	// The waiter has opened the file once the remover's file has a second
	// open description; poll for that.
	for !opened(t, path) {
		select {
		case <-ctx.Done():
			t.Fatal("the waiter never opened the file")
		case <-time.After(time.Millisecond):
		}
	}
	remover()
	unlock, ok := <-got
	if !ok {
		t.Fatal("the waiter failed")
	}
	if !Held(path) {
		t.Error("the waiter holds a removed file: its mark is not at the path")
	}
	unlock()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the waiter's mark left its file: %v", err)
	}
}

// opened reports whether path's file is open twice in this process
// (/proc/self/fd): the remover's and, once it has opened it, the
// waiter's.
func opened(t *testing.T, path string) bool {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		return false
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if fi, err := os.Stat(filepath.Join("/proc/self/fd", e.Name())); err == nil && os.SameFile(fi, info) {
			n++
		}
	}
	return n >= 2
}
