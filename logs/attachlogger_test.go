package logs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/moby/moby/api/pkg/stdcopy"
	"golang.org/x/sys/unix"
)

// TestCaptureMultiplexed: a Docker multiplexed stream's frames go to the
// stream they name, bytes as written (a last line without a newline, bytes
// that are not UTF-8), within the caps, and both captures are completed.
func TestCaptureMultiplexed(t *testing.T) {
	var stream bytes.Buffer
	frame := func(kind stdcopy.StdType, p string) { // dockerd's framing: type, 3 zero bytes, big-endian size
		stream.Write([]byte{byte(kind), 0, 0, 0})
		_ = binary.Write(&stream, binary.BigEndian, uint32(len(p)))
		stream.WriteString(p)
	}
	frame(stdcopy.Stdout, "a\n")
	frame(stdcopy.Stderr, "\xff\xfe")
	frame(stdcopy.Stdout, strings.Repeat("x", 100))
	frame(stdcopy.Stderr, "end")
	dir := t.TempDir()
	if err := CaptureMultiplexed(dir, Limits{HeadBytes: 40, TailBytes: 10}, &stream); err != nil {
		t.Fatal(err)
	}
	if !Complete(dir) {
		t.Fatal("captures not completed")
	}
	stdout, err := Read(filepath.Join(dir, StdoutFile))
	if err != nil {
		t.Fatal(err)
	}
	if !stdout.Truncated || !strings.HasPrefix(stdout.Data, "a\n"+strings.Repeat("x", 38)) || !strings.HasSuffix(stdout.Data, strings.Repeat("x", 10)) {
		t.Errorf("stdout %q (truncated %v); want the 40-byte head, a marker and the 10-byte tail", stdout.Data, stdout.Truncated)
	}
	stderr, err := Read(filepath.Join(dir, StderrFile))
	if err != nil {
		t.Fatal(err)
	}
	if stderr.Data != "\xff\xfeend" || stderr.Truncated {
		t.Errorf("stderr %q (truncated %v); want the bytes as written", stderr.Data, stderr.Truncated)
	}
	if _, err := os.Stat(filepath.Join(dir, StdoutFile+metaSuffix)); err != nil {
		t.Error(err)
	}
}

// TestCaptureMultiplexedCutOff: a stream that breaks (its connection
// closed under it) leaves the capture incomplete (no meta files), with
// what it read written out.
func TestCaptureMultiplexedCutOff(t *testing.T) {
	frame := []byte{byte(stdcopy.Stdout), 0, 0, 0, 0, 0, 0, 4, 'p', 'a', 'r', 't'}
	stream := io.MultiReader(bytes.NewReader(frame), iotest.ErrReader(errors.New("use of closed network connection")))
	dir := t.TempDir()
	if err := CaptureMultiplexed(dir, DefaultLimits, stream); err == nil {
		t.Error("a cut-off stream captured without an error")
	}
	if Complete(dir) {
		t.Error("a cut-off capture counts as complete")
	}
	if got, err := os.ReadFile(filepath.Join(dir, StdoutFile)); err != nil || string(got) != "part" {
		t.Errorf("what the cut-off capture read: %q, %v", got, err)
	}
}

// TestCloseInherited: descriptors without close-on-exec (a caller's, such
// as a shell's `flock 9` lock) are closed; Go's own (close-on-exec) stay.
// It runs in a child process of its own: the test binary's inherited
// descriptors are its runner's.
func TestCloseInherited(t *testing.T) {
	if os.Getenv("NSN_CLOSE_INHERITED_CHILD") == "1" {
		closeInheritedChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCloseInherited$", "-test.count=1")
	cmd.Env = append(os.Environ(), "NSN_CLOSE_INHERITED_CHILD=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func closeInheritedChild(t *testing.T) {
	inherited, err := unix.Open("/dev/null", unix.O_RDONLY, 0) // no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	own, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	if err := closeInherited(3); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(inherited), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		t.Errorf("the inherited descriptor %d: %v; want it closed", inherited, err)
	}
	if _, err := unix.FcntlInt(own.Fd(), unix.F_GETFD, 0); err != nil {
		t.Errorf("this process's own descriptor: %v; want it open", err)
	}
}
