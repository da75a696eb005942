package docker

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/cgroups"
	"github.com/nsn-run/nsn-run/internal/flock"
	"github.com/nsn-run/nsn-run/logs"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/internal/taskhandle"
)

// attachLogs attaches to the container's stdout and stderr; done before
// its start, the stream then carries everything the container writes, as
// written. dockerd's own log (its local driver) keeps one file of
// jsonLogMax and truncates it when full, and a follow of the logs API
// ended there: a seventeenth review's seq 1 600000 kept 3,205,894 of
// 4,088,895 bytes, stdout_truncated false. The log API is read only for a
// task another process started (finishLogs).
func (b *Backend) attachLogs(ctx context.Context, id string) (client.HijackedResponse, error) {
	res, err := b.client.ContainerAttach(ctx, id, client.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		return client.HijackedResponse{}, fmt.Errorf("attach to container %s: %w", id, err)
	}
	return res.HijackedResponse, nil
}

// captureLockFile, in a task's state dir, is locked by the process that
// captures the task's logs for as long as it does: another process that
// wants them complete (a `logs -f`, a `wait`) waits for it, and takes
// them from dockerd's copy only where no capture holds it and none
// completed. An outside review's `logs -f` of a detached task had
// rewritten the supervisor's whole capture of 1,000,003 bytes with
// dockerd's copy (384,618), `truncated: false`.
const captureLockFile = "capture.lock"

// lockCapture takes the capture lock of the task whose state dir is
// stateDir, waiting while another process holds it, until ctx ends; the
// lock is held while the file stays open (in any process it was handed
// to).
func lockCapture(ctx context.Context, stateDir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(stateDir, captureLockFile), os.O_CREATE|os.O_RDWR|unix.O_NOFOLLOW, 0o600)
	if err == nil {
		if err = flock.Context(ctx, f, unix.LOCK_EX); err != nil {
			f.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("lock the log capture in %s: %w", stateDir, err)
	}
	return f, nil
}

// captureAttached captures the attached stream into the task's capped log
// files, as the log stream of its handle. It owns att and the capture
// lock. With Config.LoggerBinary the capture is an attach logger process
// of its own (logs.RunAttachLogger), given the stream's socket and the
// lock, which outlives this process; the log stream then ends when that
// process does. Otherwise (or where the stream cannot be handed over) it
// runs here, until the container's stdout and stderr close or the handle
// closes.
func (b *Backend) captureAttached(h *taskhandle.Handle, att client.HijackedResponse, stateDir string, lock *os.File) error {
	if b.cfg.LoggerBinary != "" {
		if stream, ok := streamFile(att); ok {
			defer att.Close()
			defer lock.Close()
			defer stream.Close()
			return b.startAttachLogger(h, stream, lock, stateDir)
		}
	}
	if !h.StreamLogs(func(ctx context.Context) {
		defer lock.Close()
		stop := context.AfterFunc(ctx, att.Close)
		defer stop()
		defer att.Close()
		_ = logs.CaptureMultiplexed(stateDir, b.cfg.LogLimits, att.Reader)
	}) {
		att.Close()
		lock.Close()
	}
	return nil
}

// streamFile returns a descriptor of att's socket, for another process:
// only where nothing of the stream was read into att's buffer yet.
func streamFile(att client.HijackedResponse) (*os.File, bool) {
	conn, ok := att.Conn.(interface{ File() (*os.File, error) })
	if !ok || att.Reader.Buffered() > 0 {
		return nil, false
	}
	f, err := conn.File()
	return f, err == nil
}

// startAttachLogger starts the attach logger of task h on stream (fd 3)
// with the capture lock (fd 4), in a session of its own so that the
// terminal's signals to this process's group do not reach it.
func (b *Backend) startAttachLogger(h *taskhandle.Handle, stream, lock *os.File, stateDir string) error {
	cmd := exec.Command(b.cfg.LoggerBinary, logs.AttachLoggerArgs(stateDir, b.cfg.LogLimits)...)
	cmd.ExtraFiles = []*os.File{stream, lock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the log capture of task %s: %w", h.ID(), err)
	}
	if err := cgroups.ConfineLogger(cmd.Process.Pid, b.cfg.LoggerCPUs); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("start the log capture of task %s: %w", h.ID(), err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	h.StreamLogs(func(ctx context.Context) {
		select {
		case <-exited:
		case <-ctx.Done():
			return
		}
		if logs.Complete(stateDir) {
			return
		}
		// The logger died before the stream's end (killed: an outside
		// review's kill -9 left a task's Result with empty logs and
		// dockerd's copy removed with the container). Take them from
		// dockerd's copy once the container has stopped, as a process
		// that finds no completed capture does.
		select {
		case <-h.Exited():
		case <-ctx.Done():
			return
		}
		_ = b.recoverLogs(ctx, h.ID(), stateDir)
	})
	return nil
}

// copyLogs reads the container's whole log from the logs API,
// demultiplexed, into the task's capped log files: the logs of a task
// whose capture ended without completing them (its process died), once it
// has stopped. dockerd ends a follow of the logs when the container stops,
// at times before the last, unterminated line reached it (a sixteenth
// review: printf AB gave an empty stdout in 6 runs of 8); a read of the
// stopped container's log has it.
func (b *Backend) copyLogs(ctx context.Context, id, stateDir string) error {
	rc, err := b.client.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return fmt.Errorf("logs of container %s: %w", id, err)
	}
	defer rc.Close()
	return logs.CaptureMultiplexed(stateDir, b.cfg.LogLimits, rc)
}

// finishLogs makes the logs of an exited task complete in its state dir: it
// waits for the handle's log capture to end, or, without one, reads them
// again from the logs API.
func (b *Backend) finishLogs(ctx context.Context, h *taskhandle.Handle) error {
	id := h.ID()
	if stream := h.LogStream(); stream != nil {
		select {
		case <-stream:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	info, err := b.client.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return fmt.Errorf("task %s: %w", id, err)
	}
	stateDir := info.Container.Config.Labels[runtime.LabelStateDir]
	if stateDir == "" {
		return fmt.Errorf("container %s has no %s label", id, runtime.LabelStateDir)
	}
	return b.recoverLogs(ctx, id, stateDir)
}

// recoverLogs takes task id's logs from dockerd's copy into stateDir,
// unless a capture completed them: under the capture lock, so it waits for
// a capture still running (in any process) and never writes over one.
func (b *Backend) recoverLogs(ctx context.Context, id, stateDir string) error {
	lock, err := lockCapture(ctx, stateDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	if logs.Complete(stateDir) {
		return nil // the capture of the process that started it
	}
	return b.copyLogs(ctx, id, stateDir)
}
