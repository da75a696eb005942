// Package logs keeps a task's stdout and stderr: a capped capture that
// writes each stream to its own file (the head as it comes, the tail at the
// end), the containerd shim logger that runs it out of the manager's process,
// and the reader the manager and CLI use. Memory stays bounded by the tail
// size whatever the task prints.
package logs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// File names inside a task's state directory.
const (
	StdoutFile = "stdout.log"
	StderrFile = "stderr.log"
	metaSuffix = ".meta"
)

// Limits cap one stream: the first HeadBytes and the last TailBytes are
// kept, what lies between is dropped and counted.
type Limits struct {
	HeadBytes int64 `json:"head_bytes"`
	TailBytes int64 `json:"tail_bytes"`
}

// DefaultLimits keep 4 MiB of head and 1 MiB of tail per stream.
var DefaultLimits = Limits{HeadBytes: 4 << 20, TailBytes: 1 << 20}

// Meta describes a finished capture; it is written beside the log.
type Meta struct {
	Bytes     int64 `json:"bytes"`     // everything the task wrote
	Dropped   int64 `json:"dropped"`   // bytes between head and tail not kept
	Truncated bool  `json:"truncated"` // Dropped > 0
}

// Capture copies r to path until EOF, keeping lim.HeadBytes as they arrive
// and the last lim.TailBytes at the end, then writes path.meta. The task is
// never blocked: everything is read, whether kept or not.
func Capture(r io.Reader, path string, lim Limits) (Meta, error) {
	w, err := Create(path, lim)
	if err != nil {
		return Meta{}, err
	}
	return w.CopyFrom(r)
}

// Create opens path for a capture; CopyFrom then fills it. Opening first lets
// the shim logger report readiness only once both files exist.
func Create(path string, lim Limits) (*Writer, error) {
	// A meta file left by an earlier capture of this path (a create the
	// backend retried) would say the new one is complete.
	if err := os.Remove(path + metaSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	return &Writer{path: path, file: f, lim: lim, tail: newRing(lim.TailBytes)}, nil
}

// CopyFrom reads r to EOF into the capture, finishes it and closes the file.
func (w *Writer) CopyFrom(r io.Reader) (Meta, error) {
	buf := make([]byte, 32<<10)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if err := w.write(buf[:n]); err != nil {
				w.file.Close()
				return Meta{}, err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			w.file.Close()
			return Meta{}, rerr
		}
	}
	return w.Close()
}

// Write captures p; it never blocks on the cap (what is beyond it is
// counted and dropped, or kept as tail).
func (w *Writer) Write(p []byte) (int, error) {
	if err := w.write(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close finishes the capture: writes the tail and the meta file.
func (w *Writer) Close() (Meta, error) {
	defer w.file.Close()
	meta, err := w.finish()
	if err != nil {
		return Meta{}, err
	}
	if err := w.file.Close(); err != nil {
		return Meta{}, err
	}
	return meta, writeMeta(w.path, meta)
}

// Abandon ends a capture that did not reach the end of its stream: what it
// kept is written out, but no meta file, so the capture does not count as
// complete (Complete) and a later reader may take the logs from elsewhere.
func (w *Writer) Abandon() error {
	defer w.file.Close()
	if _, err := w.finish(); err != nil {
		return err
	}
	return w.file.Close()
}

// Writer is one stream's capture in progress.
type Writer struct {
	path    string
	file    *os.File
	lim     Limits
	written int64 // bytes in the file so far (the head)
	total   int64
	tail    *ring
}

func (w *Writer) write(p []byte) error {
	w.total += int64(len(p))
	if room := w.lim.HeadBytes - w.written; room > 0 {
		n := min(room, int64(len(p)))
		if _, err := w.file.Write(p[:n]); err != nil {
			return err
		}
		w.written += n
		p = p[n:]
	}
	w.tail.write(p)
	return nil
}

func (w *Writer) finish() (Meta, error) {
	tail := w.tail.bytes()
	dropped := w.total - w.written - int64(len(tail))
	if dropped > 0 {
		if _, err := fmt.Fprintf(w.file, "\n[nsn-run: %d bytes dropped]\n", dropped); err != nil {
			return Meta{}, err
		}
	}
	if _, err := w.file.Write(tail); err != nil {
		return Meta{}, err
	}
	return Meta{Bytes: w.total, Dropped: max(dropped, 0), Truncated: dropped > 0}, nil
}

// ring keeps the last size bytes written to it.
type ring struct {
	buf  []byte
	next int
	full bool
}

func newRing(size int64) *ring { return &ring{buf: make([]byte, max(size, 0))} }

func (r *ring) write(p []byte) {
	if len(r.buf) == 0 || len(p) == 0 {
		return
	}
	if len(p) >= len(r.buf) {
		copy(r.buf, p[len(p)-len(r.buf):])
		r.next, r.full = 0, true
		return
	}
	n := copy(r.buf[r.next:], p)
	if n < len(p) {
		copy(r.buf, p[n:])
		r.full = true
	}
	r.next = (r.next + len(p)) % len(r.buf)
	if r.next == 0 {
		r.full = true
	}
}

func (r *ring) bytes() []byte {
	if !r.full {
		return r.buf[:r.next]
	}
	return append(append([]byte{}, r.buf[r.next:]...), r.buf[:r.next]...)
}

func writeMeta(logPath string, m Meta) error {
	b := m.appendJSON(nil)
	tmp := logPath + metaSuffix + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, logPath+metaSuffix)
}

// appendJSON appends m as json.Marshal encodes it (TestMetaJSON holds
// them equal). The logger writes meta files with it: a process per task,
// it then links no JSON encoder, whose reflection made its binary 0.3 MB
// larger and each logger 0.23 MiB more resident (docs/performance.md).
// The manager reads them back with json.Unmarshal.
func (m Meta) appendJSON(b []byte) []byte {
	b = append(b, `{"bytes":`...)
	b = strconv.AppendInt(b, m.Bytes, 10)
	b = append(b, `,"dropped":`...)
	b = strconv.AppendInt(b, m.Dropped, 10)
	b = append(b, `,"truncated":`...)
	b = strconv.AppendBool(b, m.Truncated)
	return append(b, '}')
}

// Stream is one captured stream as the manager reads it back.
type Stream struct {
	Data      string
	Truncated bool
	// Complete is false while the capture is still running (no meta yet).
	Complete bool
}

// Read returns the stream captured at path. A missing log reads as empty:
// a task that failed to start has none.
func Read(path string) (Stream, error) {
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Stream{}, fmt.Errorf("read log %s: %w", filepath.Base(path), err)
	}
	s := Stream{Data: string(data)}
	b, err := os.ReadFile(path + metaSuffix)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return Stream{}, fmt.Errorf("read log meta %s: %w", filepath.Base(path), err)
	default:
		var m Meta
		if err := json.Unmarshal(b, &m); err != nil {
			return Stream{}, fmt.Errorf("log meta %s: %w", filepath.Base(path), err)
		}
		s.Truncated, s.Complete = m.Truncated, true
	}
	return s, nil
}
