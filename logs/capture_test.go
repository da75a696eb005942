package logs

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

func TestCaptureKeepsEverythingUnderTheCap(t *testing.T) {
	path := filepath.Join(t.TempDir(), StdoutFile)
	meta, err := Capture(strings.NewReader("hello\nworld\n"), path, Limits{HeadBytes: 100, TailBytes: 10})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Data != "hello\nworld\n" || s.Truncated || !s.Complete || meta.Bytes != 12 || meta.Dropped != 0 {
		t.Errorf("stream %+v meta %+v", s, meta)
	}
}

func TestCaptureKeepsHeadAndTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), StderrFile)
	var in bytes.Buffer
	for i := range 1000 {
		in.WriteByte(byte('a' + i%26))
	}
	// Small reads exercise the ring buffer's wrap-around.
	meta, err := Capture(iotest.HalfReader(&in), path, Limits{HeadBytes: 30, TailBytes: 20})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := Read(path)
	all := strings.Repeat("abcdefghijklmnopqrstuvwxyz", 39)[:1000]
	want := all[:30] + "\n[nsn-run: 950 bytes dropped]\n" + all[980:]
	if s.Data != want {
		t.Errorf("data = %q\nwant   %q", s.Data, want)
	}
	if !s.Truncated || meta.Bytes != 1000 || meta.Dropped != 950 {
		t.Errorf("meta %+v stream truncated=%v", meta, s.Truncated)
	}
}

func TestCaptureTailOnlyPartlyFilled(t *testing.T) {
	path := filepath.Join(t.TempDir(), StdoutFile)
	if _, err := Capture(strings.NewReader("0123456789abc"), path, Limits{HeadBytes: 10, TailBytes: 100}); err != nil {
		t.Fatal(err)
	}
	if s, _ := Read(path); s.Data != "0123456789abc" || s.Truncated {
		t.Errorf("stream %+v: nothing was dropped, so nothing may be marked", s)
	}
}

func TestCaptureReadsEverythingPastTheCap(t *testing.T) {
	// A task writing far beyond the cap must never block: Capture reads it
	// all, keeping only head and tail.
	r := io.LimitReader(zeros{}, 64<<20)
	meta, err := Capture(r, filepath.Join(t.TempDir(), StdoutFile), Limits{HeadBytes: 1 << 10, TailBytes: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if meta.Bytes != 64<<20 || meta.Dropped != 64<<20-2<<10 {
		t.Errorf("meta %+v", meta)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestReadMissingLogIsEmpty(t *testing.T) {
	s, err := Read(filepath.Join(t.TempDir(), "none.log"))
	if err != nil || s.Data != "" || s.Complete {
		t.Errorf("%+v %v", s, err)
	}
}

func TestShimLoggerArgsHaveOneKey(t *testing.T) {
	args := ShimLoggerArgs("/state/tasks/a", DefaultLimits)
	if len(args) != 1 || args[ShimLoggerCommand] == "" {
		t.Fatalf("args = %v: the shim passes query keys in map order, so there must be exactly one", args)
	}
	if err := RunShimLogger("dir=relative&head=1&tail=1"); err == nil {
		t.Error("a relative dir was accepted")
	}
	if _, err := os.Stat("relative"); err == nil {
		t.Error("the logger created files before validating its config")
	}
}

// TestCreateForgetsAnEarlierCapture: a capture of a path an earlier one
// finished (a task create the backend retried) is not complete until it
// has finished itself: the earlier meta goes when it starts.
func TestCreateForgetsAnEarlierCapture(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{StdoutFile, StderrFile} {
		if _, err := Capture(strings.NewReader("first attempt\n"), filepath.Join(dir, name), DefaultLimits); err != nil {
			t.Fatal(err)
		}
	}
	if !complete(dir) {
		t.Fatal("the first captures are not complete")
	}
	w, err := Create(filepath.Join(dir, StdoutFile), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if complete(dir) {
		t.Error("a new capture counts as complete by the earlier one's meta")
	}
	if s, err := Read(filepath.Join(dir, StdoutFile)); err != nil || s.Complete || s.Data != "" {
		t.Errorf("the new capture reads %+v, %v; want empty and not complete", s, err)
	}
	if _, err := w.CopyFrom(strings.NewReader("second\n")); err != nil {
		t.Fatal(err)
	}
	if s, err := Read(filepath.Join(dir, StdoutFile)); err != nil || !s.Complete || s.Data != "second\n" {
		t.Errorf("after it finished: %+v, %v", s, err)
	}
}

// TestMetaJSON: the meta files the logger writes without encoding/json
// are what json.Marshal writes, byte for byte, and read back the same.
func TestMetaJSON(t *testing.T) {
	for _, m := range []Meta{
		{},
		{Bytes: 12, Dropped: 0, Truncated: false},
		{Bytes: 300 << 20, Dropped: 295 << 20, Truncated: true},
		{Bytes: math.MaxInt64, Dropped: math.MaxInt64 - 1, Truncated: true},
		{Bytes: -1, Dropped: math.MinInt64},
	} {
		want, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got := m.appendJSON([]byte("prefix"))
		if string(got) != "prefix"+string(want) {
			t.Errorf("appendJSON(%+v) = %s, want prefix%s", m, got, want)
		}
		var back Meta
		if err := json.Unmarshal(got[len("prefix"):], &back); err != nil || back != m {
			t.Errorf("%s reads back as %+v, %v; want %+v", got, back, err, m)
		}
	}
}
