package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nsn-run/nsn-run/task"
)

// TestCollectSkipsUnsafeNames: names with control characters, bytes that are
// not UTF-8, or a leading '-' are neither copied nor listed as output files,
// at any depth; a directory with such a name is skipped whole; each skip is
// listed once with a path that is valid, printable text.
func TestCollectSkipsUnsafeNames(t *testing.T) {
	src, dest := t.TempDir(), t.TempDir()
	write := func(p string) {
		t.Helper()
		full := filepath.Join(src, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	good := []string{"a-b", "has space", "sub/ok", "sub/ünïcode", "sub/\uFFFDreal"}
	for _, p := range good {
		write(p)
	}
	const (
		ctrl  = "name has a control character (path shown Go-quoted)"
		utf   = "name is not valid UTF-8 (path shown Go-quoted)"
		minus = "name starts with '-'"
	)
	bad := []struct{ create, path, reason string }{
		{"title\x1b]0;pwned\x07", `"title\x1b]0;pwned\a"`, ctrl},
		{"clip\x1b]52;c;ZWNobw==\x07", `"clip\x1b]52;c;ZWNobw==\a"`, ctrl},
		{"tab\tname", `"tab\tname"`, ctrl},
		{"new\nline", `"new\nline"`, ctrl},
		{"del\x7f", `"del\x7f"`, ctrl},
		{"csi\u009b31m", `"csi\u009b31m"`, ctrl},
		{"latin1-\xe9t\xe9", `"latin1-\xe9t\xe9"`, utf},
		{"-rf", "-rf", minus},
		{"sub/--help", "sub/--help", minus},
		{"sub/bad\xff", `"sub/bad\xff"`, utf},
		// Directories: the name of any component counts, and nothing
		// under a skipped directory is looked at or listed.
		{"\x1b[2Jdir/inner", `"\x1b[2Jdir"`, ctrl},
		{"-dir/deep/inner", "-dir", minus},
		{"sub/\xfe/inner", `"sub/\xfe"`, utf},
	}
	for _, b := range bad {
		write(b.create)
	}

	c := &collector{ctx: context.Background(), caps: outputCaps{files: 100, bytes: 1 << 20, depth: maxOutputDepth}, files: []task.OutputFile{}}
	d, err := takeOutputDest(dest)
	if err != nil {
		t.Fatal(err)
	}
	defer d.release()
	if err := c.collect(src, d); err != nil {
		t.Fatal(err)
	}

	var got []string
	for _, f := range c.files {
		got = append(got, f.Path)
	}
	want := slices.Clone(good)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("collected %q, want %q", got, want)
	}
	skipped := map[string]string{}
	for _, s := range c.skipped {
		if _, dup := skipped[s.Path]; dup {
			t.Errorf("%s listed twice", s.Path)
		}
		skipped[s.Path] = s.Reason
	}
	if len(c.skipped) != len(bad) {
		t.Errorf("skipped %d entries, want %d: %+v", len(c.skipped), len(bad), c.skipped)
	}
	for _, b := range bad {
		if r, ok := skipped[b.path]; !ok || r != b.reason {
			t.Errorf("%q: skipped as %q (listed %v), want %q", b.create, r, ok, b.reason)
		}
		// A quoted path unquotes to the name on disk.
		if strings.HasPrefix(b.path, `"`) {
			p, err := strconv.Unquote(b.path)
			if err != nil || !strings.HasPrefix(b.create, p) {
				t.Errorf("%s does not unquote to a prefix of %q: %q, %v", b.path, b.create, p, err)
			}
		}
	}

	// Nothing with a bad name reached dest; the good files did.
	err = filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dest && badName(d.Name()) != "" {
			t.Errorf("copied %q", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range good {
		if b, err := os.ReadFile(filepath.Join(dest, p)); err != nil || string(b) != p {
			t.Errorf("%s: copied %q, %v", p, b, err)
		}
	}
	for _, dir := range []string{"\x1b[2Jdir", "-dir", "sub/\xfe"} {
		if _, err := os.Lstat(filepath.Join(dest, dir)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("directory %q created in dest: %v", dir, err)
		}
	}

	// The Result's JSON keeps every path exact: no U+FFFD stand-ins, no
	// control characters, and it reads back the same.
	res := task.Result{OutputFiles: c.files, OutputSkipped: c.skipped}
	js, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var back task.Result
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back.OutputSkipped, c.skipped) || !slices.Equal(back.OutputFiles, c.files) {
		t.Errorf("JSON round trip changed the paths:\n%+v\n%+v", back.OutputSkipped, c.skipped)
	}
	for _, s := range c.skipped {
		if !utf8.ValidString(s.Path) || strings.ContainsFunc(s.Path, isControl) {
			t.Errorf("reported path %q is not printable UTF-8", s.Path)
		}
	}
}

func TestBadName(t *testing.T) {
	for name, bad := range map[string]bool{
		"ok": false, "a-b": false, "x.tar.gz": false, "日本語": false, "\uFFFD": false, "a b": false,
		"한국어": false, "עברית": false, "emoji😀": false,
		"-": true, "-x": true, "a\x00": true, "a\x1f": true, "\x7f": true, "\u0080": true, "\u009f": true, "\xc3": true, "\xc3\x28": true,
		// Formatting characters: a right-to-left override makes
		// "report\u202Efdp.sh" show as "reporths.pdf"; zero-width ones
		// make two names look the same.
		"report\u202Efdp.sh": true, "a\u200Bb": true, "\uFEFFbom": true, "x\u2066y": true, "soft\u00ADhyphen": true,
		// Blank or invisible, though not format characters (the outside
		// review's second round): line and paragraph separators, NBSP,
		// the Hangul filler, braille blank, a variation selector, an
		// unassigned and a private-use code point.
		"ls\u2028rm": true, "p\u2029q": true, "\u00a0nbsp": true, "invoice\u3164\u3164.sh": true,
		"b\u2800": true, "heart\uFE0F": true, "x\u2065": true, "pua\uE000": true,
		// The third round: spaces that hide, and repository config.
		"   ": true, "report.pdf ": true, " report.pdf": true, ".git": true, ".GIT": true, ".hg": true,
		".gitignore": false, "a.git": false, ".github": false,
		// The fourth round: normal forms and bare combining marks.
		"cafe\u0301.sh": true, "\u0301": true, "\u0338\u0338": true, "caf\u00e9.sh": false, "\u00e9t\u00e9": false,
	} {
		if got := badName(name) != ""; got != bad {
			t.Errorf("badName(%q) = %q, want bad=%v", name, badName(name), bad)
		}
	}
}
