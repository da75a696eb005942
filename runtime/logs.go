package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/logs"
	"github.com/nsn-run/nsn-run/task"
)

// logPoll is how often a follower copies what a task appended to its logs.
const logPoll = 50 * time.Millisecond

// LogOptions say where Logs writes a task's streams, and whether it keeps
// following them.
type LogOptions struct {
	// Stdout and Stderr receive the task's streams; nil discards one.
	Stdout, Stderr io.Writer
	// Follow keeps copying what the task writes until it exits (or ctx
	// ends), then copies the rest. A writer that fails ends the follow,
	// of both streams, with its error.
	Follow bool
}

// Logs copies what task id wrote to its stdout and stderr (each capped as
// captured: head and tail kept, a marker where bytes were dropped). With
// Follow it waits for the task's exit, not a guess at it, so nothing the
// task wrote before exiting is missed.
func (m *Manager) Logs(ctx context.Context, id string, o LogOptions) error {
	if err := task.ValidateID(id); err != nil {
		return err
	}
	if _, err := m.readRecord(id); errdefs.IsFailedPrecondition(err) {
		return err // another scope's task
	}
	if _, err := os.Stat(m.taskDir(id)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("task %s: %w", id, errdefs.ErrNotFound)
		}
		return err
	}
	f := m.followLogs(id, o.Stdout, o.Stderr)
	if o.Follow {
		// A writer that fails (the reader of a pipe gone) ends the follow
		// at once, both streams: waiting on, for the task's exit or for
		// its capture's end, would copy nothing more to it.
		fctx, stopFollowing := context.WithCancel(ctx)
		defer stopFollowing()
		go func() {
			select {
			case <-f.failed:
				stopFollowing()
			case <-fctx.Done():
			}
		}()
		if _, err := m.backend.Wait(fctx, id); f.hasFailed() {
			return f.stop()
		} else if err != nil && !errdefs.IsNotFound(err) && !errors.Is(err, ctx.Err()) {
			f.stop()
			return err
		}
		// The task has exited; its capture ends once it has read what
		// the task's pipes still held, and only then writes the tail
		// past the head (an outside review's follow of a 14 MB log
		// stopped at the 4 MiB head, with no tail and no marker). A
		// shim logger reads to the end when told (LogFinisher), or at
		// the task's release.
		wctx, cancel := context.WithTimeout(fctx, followCompleteWait)
		if f, ok := m.backend.(LogFinisher); ok {
			_ = f.FinishLogs(wctx, id, m.taskDir(id))
		}
		_ = logs.WaitComplete(wctx, m.taskDir(id))
		cancel()
	}
	return f.stop()
}

// followCompleteWait bounds how long a follow waits, once the task has
// exited, for its log capture to end: a capture whose process died never
// does.
const followCompleteWait = 10 * time.Second

// logFollower copies a task's two log files to writers as they grow.
type logFollower struct {
	done chan struct{}
	// failed is closed when a copy fails (its writer, or reading the log):
	// that stream is no longer copied.
	failed   chan struct{}
	failOnce sync.Once
	wg       sync.WaitGroup
	errs     [2]error
}

// followLogs starts copying task id's logs to stdout and stderr (nil
// writers are skipped) until stop.
func (m *Manager) followLogs(id string, stdout, stderr io.Writer) *logFollower {
	f := &logFollower{done: make(chan struct{}), failed: make(chan struct{})}
	stdoutPath, stderrPath := m.logPaths(id)
	for i, s := range []struct {
		path string
		w    io.Writer
	}{{stdoutPath, stdout}, {stderrPath, stderr}} {
		if s.w == nil {
			continue
		}
		f.wg.Go(func() {
			if f.errs[i] = follow(s.path, s.w, f.done, logPoll); f.errs[i] != nil {
				f.failOnce.Do(func() { close(f.failed) })
			}
		})
	}
	return f
}

// hasFailed reports whether a copy has failed.
func (f *logFollower) hasFailed() bool {
	select {
	case <-f.failed:
		return true
	default:
		return false
	}
}

// stop copies what is left and returns the first copy error. Call it once
// the task has exited and its container is released: its logs are then
// complete.
func (f *logFollower) stop() error {
	close(f.done)
	f.wg.Wait()
	return errors.Join(f.errs[:]...)
}

// follow copies what is appended to path into w until stop is closed, then
// copies the rest. The shim logger (containerd) or the Manager (docker)
// appends to the file as the task writes.
func follow(path string, w io.Writer, stop <-chan struct{}, poll time.Duration) error {
	var offset int64
	pump := func() error {
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			return err
		}
		n, err := io.Copy(w, f)
		offset += n
		return err
	}
	ticker := time.NewTicker(poll)
	defer ticker.Stop()
	for {
		if err := pump(); err != nil {
			return err
		}
		select {
		case <-stop:
			return pump()
		case <-ticker.C:
		}
	}
}
