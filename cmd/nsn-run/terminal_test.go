package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/nsn-run/nsn-run/logs/termesc"
	"github.com/nsn-run/nsn-run/task"
)

// TestTaskOutputEscapesOnlyATerminal: a terminal gets the escaping writer
// unless --raw; a file or a buffer gets the bytes unchanged.
func TestTaskOutputEscapesOnlyATerminal(t *testing.T) {
	// The master side of a pseudo-terminal answers as a terminal.
	pty, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	defer pty.Close()
	if w, _ := taskOutput(pty, false); !isEscaping(w) {
		t.Error("a terminal gets the task's bytes unescaped")
	}
	if w, _ := taskOutput(pty, true); w != pty {
		t.Error("--raw: a terminal does not get the bytes unchanged")
	}
	file, err := os.Create(t.TempDir() + "/out")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	var buf bytes.Buffer
	for _, w := range []io.Writer{file, &buf} {
		if got, _ := taskOutput(w, false); got != w {
			t.Errorf("%T: not a terminal, yet escaped", w)
		}
	}
}

func isEscaping(w io.Writer) bool { _, ok := w.(*termesc.Writer); return ok }

func TestRawFlagOnRunAndLogs(t *testing.T) {
	root := newRootCommand()
	for _, name := range []string{"run", "logs"} {
		cmd, _, err := root.Find([]string{name})
		if err != nil {
			t.Fatal(err)
		}
		if cmd.Flags().Lookup("raw") == nil {
			t.Errorf("%s has no --raw", name)
		}
		if !strings.Contains(cmd.Long, "--raw") || !strings.Contains(cmd.Long, `\x1b`) {
			t.Errorf("%s --help does not explain the escaping", name)
		}
	}
}

// TestPrintJSONEscapesC1: a task's 8-bit CSI (U+009B) in a Result's stdout
// is printed as \u009b, and the JSON still decodes to the same string.
func TestPrintJSONEscapesC1(t *testing.T) {
	in := map[string]string{"stdout": "a\u009b31mb\u0085 é ok"}
	var out bytes.Buffer
	if err := printJSON(&out, in); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out.Bytes(), []byte{0xC2, 0x9B}) || !strings.Contains(out.String(), `\u009b31mb\u0085 é ok`) {
		t.Errorf("printed %q", out.String())
	}
	var back map[string]string
	if err := json.Unmarshal(out.Bytes(), &back); err != nil || back["stdout"] != in["stdout"] {
		t.Errorf("decodes to %q, %v", back["stdout"], err)
	}
}

// TestReportSkipped: a foreground run names what of /output it did not
// collect, on one line, at most five entries.
func TestReportSkipped(t *testing.T) {
	var b strings.Builder
	reportSkipped(&b, nil)
	if b.Len() != 0 {
		t.Errorf("nothing skipped printed %q", b.String())
	}
	var skipped []task.SkippedFile
	for i := range 7 {
		skipped = append(skipped, task.SkippedFile{Path: fmt.Sprintf("f%d", i), Reason: "symlink"})
	}
	reportSkipped(&b, skipped)
	want := "nsn-run: 7 entries of /output not collected: f0 (symlink), f1 (symlink), f2 (symlink), f3 (symlink), f4 (symlink) and 2 more (--json lists them)\n"
	if b.String() != want {
		t.Errorf("printed %q, want %q", b.String(), want)
	}
}
