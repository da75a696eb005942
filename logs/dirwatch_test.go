package logs

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// completeCapture writes both streams' captures of dir to their end, as a
// logger does.
func completeCapture(t testing.TB, dir string) {
	t.Helper()
	for _, name := range []string{StdoutFile, StderrFile} {
		w, err := Create(filepath.Join(dir, name), Limits{HeadBytes: 16, TailBytes: 16})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// watchCount is how many directories the shared inotify instance
// watches, from the kernel's own account (/proc/self/fdinfo).
func watchCount(t *testing.T) int {
	t.Helper()
	w, err := watcher()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := w.fd()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for s := bufio.NewScanner(f); s.Scan(); {
		if strings.HasPrefix(s.Text(), "inotify wd:") {
			n++
		}
	}
	return n
}

// More waits at once than fs.inotify.max_user_instances allows instances
// (128 by default): an instance per wait failed the ones past the limit
// (EMFILE), and each wait's close cost 13-24 ms. All complete, and every
// watch is removed after.
func TestWaitCompleteManyAtOnce(t *testing.T) {
	limit := 128
	if b, err := os.ReadFile("/proc/sys/fs/inotify/max_user_instances"); err == nil {
		fmt.Sscan(string(b), &limit)
	}
	waits := min(limit+50, 2000)
	before := watchCount(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dirs := make([]string, waits)
	root := t.TempDir()
	for i := range dirs {
		dirs[i] = filepath.Join(root, fmt.Sprint(i))
		if err := os.Mkdir(dirs[i], 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// Every wait is watching before any capture completes: a hold on
	// each instance at once, as concurrent finishes have.
	var watching, done sync.WaitGroup
	watching.Add(waits)
	errs := make([]error, waits)
	for i, dir := range dirs {
		done.Go(func() {
			wake, stop, err := watchDir(dir)
			watching.Done()
			if err != nil {
				errs[i] = err
				return
			}
			defer stop()
			errs[i] = waitComplete(ctx, wake, dir)
		})
	}
	watching.Wait()
	if got := watchCount(t); got < before+waits {
		t.Errorf("%d directories watched with %d waits in progress, want at least %d", got, waits, before+waits)
	}
	for _, dir := range dirs {
		completeCapture(t, dir)
	}
	done.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("wait %d of %d: %v", i, waits, err)
		}
	}
	if got := watchCount(t); got != before {
		t.Errorf("%d directories still watched after the waits ended, want %d", got, before)
	}
}

// Two waits on one directory share its watch: the first one's stop must
// not end the second one's.
func TestWaitCompleteSharedDirectory(t *testing.T) {
	dir := t.TempDir()
	_, stopFirst, err := watchDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	wake, stop, err := watchDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	stopFirst()
	stopFirst() // twice: still only its own interest ends
	// The second wait is still woken by what happens in the directory
	// (not only by finding the capture complete when it first looks).
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-time.After(time.Minute):
		t.Fatal("the second wait was not woken after the first one's stop")
	}
	result := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() { result <- waitComplete(ctx, wake, dir) }()
	completeCapture(t, dir)
	if err := <-result; err != nil {
		t.Fatalf("the second wait after the first one's stop: %v", err)
	}
}

// A wait whose context ends returns the context's error; one on a
// directory that is gone fails at once.
func TestWaitCompleteEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() { result <- WaitComplete(ctx, t.TempDir()) }()
	cancel()
	if err := <-result; err != context.Canceled {
		t.Fatalf("WaitComplete after cancel = %v, want context.Canceled", err)
	}
	if err := WaitComplete(context.Background(), filepath.Join(t.TempDir(), "gone")); err == nil {
		t.Fatal("WaitComplete on a missing directory succeeded")
	}
}

// BenchmarkWaitComplete is one finish's wait: watch the task's dir, see
// the capture complete, stop. "per-instance" is what it was before the
// shared instance: an inotify instance opened and closed per wait.
func BenchmarkWaitComplete(b *testing.B) {
	b.Run("shared", func(b *testing.B) {
		for b.Loop() {
			dir := b.TempDir()
			wake, stop, err := watchDir(dir)
			if err != nil {
				b.Fatal(err)
			}
			completeCapture(b, dir)
			if err := waitComplete(context.Background(), wake, dir); err != nil {
				b.Fatal(err)
			}
			stop()
		}
	})
	b.Run("per-instance", func(b *testing.B) {
		for b.Loop() {
			dir := b.TempDir()
			fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
				b.Fatal(err)
			}
			completeCapture(b, dir)
			if !complete(dir) {
				b.Fatal("capture not complete")
			}
			unix.Close(fd)
		}
	})
}

// The kernel drops events when the queue every wait shares overflows
// (fs.inotify.max_queued_events) and says so with one event of wd -1:
// every wait is woken to look again, or one whose capture completed
// among the dropped events would wait out its deadline (an outside
// review: "context deadline exceeded" after 17,000 files in another
// directory).
func TestWaitCompleteQueueOverflow(t *testing.T) {
	w, err := watcher()
	if err != nil {
		t.Fatal(err)
	}
	var wakes []<-chan struct{}
	for range 2 {
		wake, stop, err := watchDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		wakes = append(wakes, wake)
	}
	overflow := make([]byte, unix.SizeofInotifyEvent)
	binary.NativeEndian.PutUint32(overflow[0:], ^uint32(0)) // wd -1
	binary.NativeEndian.PutUint32(overflow[4:], unix.IN_Q_OVERFLOW)
	w.handle(overflow)
	for i, wake := range wakes {
		select {
		case <-wake:
		default:
			t.Errorf("wait %d not woken by the queue's overflow", i)
		}
	}
}

// A wait on a directory that is removed ends at once with an error (the
// kernel ends the watch: IN_IGNORED), not at its deadline, and leaves no
// watch behind.
func TestWaitCompleteDirectoryRemoved(t *testing.T) {
	before := watchCount(t)
	dir := filepath.Join(t.TempDir(), "task")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	wake, stop, err := watchDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	result := make(chan error, 1)
	go func() { result <- waitComplete(context.Background(), wake, dir) }()
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-result:
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("wait on a removed directory: %v; want not-exist", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the wait on a removed directory did not end")
	}
	stop()
	if got := watchCount(t); got != before {
		t.Errorf("%d directories watched after the wait ended, want %d", got, before)
	}
}
