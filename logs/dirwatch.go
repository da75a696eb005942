package logs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// dirWatcher is the process's one inotify instance, shared by every wait
// for a capture's end and never closed. Closing an inotify instance waits
// for the kernel's fsnotify mark reaper and an SRCU grace period
// (fsnotify_destroy_group): 13 to 24 ms measured here on every task's
// finish, the whole of `wait/finish-logs` in the node-agent configuration.
// Removing a watch from a live instance queues that work instead. One
// instance also keeps many concurrent waits within
// fs.inotify.max_user_instances (128 by default), which an instance per
// wait would exhaust.
type dirWatcher struct {
	file *os.File
	mu   sync.Mutex
	// waiters holds, per watch descriptor, the wake channel of each wait
	// on that directory (two waits on one directory share its descriptor).
	waiters map[int32][]chan struct{}
	// failed, once set, is why the instance stopped reading: every wake
	// channel was closed and new watches are refused.
	failed error
}

var (
	sharedWatcher     *dirWatcher
	sharedWatcherErr  error
	sharedWatcherOnce sync.Once
)

// watcher returns the process's dirWatcher, started on first use.
func watcher() (*dirWatcher, error) {
	sharedWatcherOnce.Do(func() {
		fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
		if err != nil {
			sharedWatcherErr = fmt.Errorf("inotify: %w", err)
			return
		}
		sharedWatcher = &dirWatcher{file: os.NewFile(uintptr(fd), "inotify"), waiters: map[int32][]chan struct{}{}}
		go sharedWatcher.dispatch()
	})
	return sharedWatcher, sharedWatcherErr
}

// watch wakes the returned channel (without blocking, so wakes coalesce)
// after each file created or renamed into dir, and after the shared
// queue overflowed; it is closed when the watch ends (dir removed) or the
// instance fails. stop ends this wait's interest; the last one removes the
// kernel's watch.
func (w *dirWatcher) watch(dir string) (wake <-chan struct{}, stop func(), err error) {
	fd, err := w.fd()
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed != nil {
		return nil, nil, w.failed
	}
	wd, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_ONLYDIR)
	if errors.Is(err, unix.ENOSPC) {
		return nil, nil, fmt.Errorf("watch %s: the user's inotify watches are all in use (fs.inotify.max_user_watches): %w", dir, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	id := int32(wd)
	w.waiters[id] = append(w.waiters[id], ch)
	var once sync.Once
	return ch, func() { once.Do(func() { w.unwatch(fd, id, ch) }) }, nil
}

func (w *dirWatcher) unwatch(fd int, wd int32, ch chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	rest, ok := w.waiters[wd]
	if !ok {
		return // the watch ended already (IN_IGNORED)
	}
	for i, c := range rest {
		if c == ch {
			rest = append(rest[:i], rest[i+1:]...)
			break
		}
	}
	if len(rest) > 0 {
		w.waiters[wd] = rest
		return
	}
	delete(w.waiters, wd)
	// EINVAL: the kernel ended the watch already (dir removed).
	_, _ = unix.InotifyRmWatch(fd, uint32(wd))
}

// fd is the instance's descriptor, for add and remove (the poller owns
// reads; the descriptor lives as long as the process).
func (w *dirWatcher) fd() (int, error) {
	rc, err := w.file.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// dispatch reads events for the life of the process and wakes each wait
// on the event's directory.
func (w *dirWatcher) dispatch() {
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := w.file.Read(buf)
		if err != nil {
			// Not expected on a live instance: no wait may hang on it.
			w.fail(fmt.Errorf("inotify read: %w", err))
			return
		}
		w.handle(buf[:n])
	}
}

// handle wakes the waits that events (struct inotify_event records: wd,
// mask, cookie, len, then len bytes of name) concern.
func (w *dirWatcher) handle(events []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for off := 0; off+unix.SizeofInotifyEvent <= len(events); {
		wd := int32(binary.NativeEndian.Uint32(events[off:]))
		mask := binary.NativeEndian.Uint32(events[off+4:])
		nameLen := binary.NativeEndian.Uint32(events[off+12:])
		off += unix.SizeofInotifyEvent + int(nameLen)
		switch {
		case mask&unix.IN_Q_OVERFLOW != 0:
			// The queue, shared by every wait in the process, overflowed
			// (fs.inotify.max_queued_events) and the kernel dropped
			// events, perhaps a wait's own: every wait looks again.
			for _, chs := range w.waiters {
				for _, ch := range chs {
					wakeUp(ch)
				}
			}
		case mask&unix.IN_IGNORED != 0:
			// The watch ended: its directory was removed (a stop's own
			// removal leaves no waiters behind). Nothing will come: its
			// waits end, and their stop has nothing left to remove.
			for _, ch := range w.waiters[wd] {
				close(ch)
			}
			delete(w.waiters, wd)
		default:
			for _, ch := range w.waiters[wd] {
				wakeUp(ch)
			}
		}
	}
}

// wakeUp wakes a wait without blocking: one pending wake is enough, since
// the wait looks at the directory itself.
func wakeUp(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (w *dirWatcher) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failed = err
	for wd, chs := range w.waiters {
		for _, ch := range chs {
			close(ch)
		}
		delete(w.waiters, wd)
	}
}
