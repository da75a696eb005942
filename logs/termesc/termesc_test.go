package termesc

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

var cases = []struct{ name, in, want string }{
	{"plain text", "hello, world\n\tindented\n", "hello, world\n\tindented\n"},
	{"utf-8 text", "naïve café 日本語 🦀 \uFFFD\n", "naïve café 日本語 🦀 \uFFFD\n"},
	{"title change", "\x1b]0;pwned\x07", `\x1b]0;pwned\x07`},
	{"osc 52 clipboard", "\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x1b\\", `\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x1b\`},
	{"cursor and clear", "\x1b[2J\x1b[H\x1b[1A", `\x1b[2J\x1b[H\x1b[1A`},
	{"carriage return, backspace, nul", "ok\rfake\b\x00", `ok\x0dfake\x08\x00`},
	{"del", "a\x7fb", `a\x7fb`},
	{"c1 controls as runes", "\u009b31m\u0085\u0080\u009f", `\u009b31m\u0085\u0080\u009f`},
	{"not c1: nbsp", "\u00a0", "\u00a0"},
	{"invalid bytes", "a\xffb\xc3(\x9b", `a\xffb\xc3(\x9b`},
	{"surrogate half", "\xed\xa0\x80", `\xed\xa0\x80`},
	{"truncated at the end", "ok\xe2\x82", `ok\xe2\x82`},
}

func escape(t *testing.T, chunks ...string) string {
	t.Helper()
	var out bytes.Buffer
	w := NewWriter(&out)
	for _, c := range chunks {
		n, err := w.Write([]byte(c))
		if err != nil || n != len(c) {
			t.Fatalf("Write(%q) = %d, %v", c, n, err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestEscape(t *testing.T) {
	for _, c := range cases {
		if got := escape(t, c.in); got != c.want {
			t.Errorf("%s: %q -> %q, want %q", c.name, c.in, got, c.want)
		}
	}
}

// TestSplitWrites: the output is the same however the input is cut into
// Writes, including inside a multi-byte sequence.
func TestSplitWrites(t *testing.T) {
	for _, c := range cases {
		for size := 1; size <= 4; size++ {
			var chunks []string
			for s := c.in; len(s) > 0; {
				n := min(size, len(s))
				chunks = append(chunks, s[:n])
				s = s[n:]
			}
			if got := escape(t, chunks...); got != c.want {
				t.Errorf("%s in %d-byte writes: %q, want %q", c.name, size, got, c.want)
			}
		}
	}
	// Every cut of a 4-byte rune followed by an escape, also with empty
	// writes between.
	in := "🦀\x1b[31m"
	for i := range len(in) {
		if got := escape(t, in[:i], "", in[i:]); got != `🦀\x1b[31m` {
			t.Errorf("cut at %d: %q", i, got)
		}
	}
}

// TestHeldSequenceNotCompleted: a held lead byte followed by something
// that is not a continuation is escaped, and what follows is judged anew.
func TestHeldSequenceNotCompleted(t *testing.T) {
	for _, c := range []struct {
		chunks []string
		want   string
	}{
		{[]string{"\xe2", "x"}, `\xe2x`},
		{[]string{"\xf0\x9f", "\x1b"}, `\xf0\x9f\x1b`},
		{[]string{"\xf0\x9f", "\xe2\x82\xac"}, `\xf0\x9f€`},
		{[]string{"\xf0", "\x9f", "\xa6", "\x80"}, "🦀"},
	} {
		if got := escape(t, c.chunks...); got != c.want {
			t.Errorf("%q -> %q, want %q", c.chunks, got, c.want)
		}
	}
}

func TestNothingEscapesTheEscaping(t *testing.T) {
	var in []byte
	for b := range 256 {
		in = append(in, byte(b))
	}
	got := escape(t, string(in), "\u0080\u009b\u009f")
	for _, c := range []byte(got) {
		if c < 0x20 && c != '\n' && c != '\t' || c == 0x7f || c >= 0x80 {
			t.Fatalf("byte %#x reached the terminal in %q", c, got)
		}
	}
}

type failing struct{}

func (failing) Write([]byte) (int, error) { return 0, errors.New("closed") }

func TestWriteError(t *testing.T) {
	w := NewWriter(failing{})
	if n, err := w.Write([]byte("x")); err == nil || n != 0 {
		t.Errorf("Write = %d, %v; want 0 and the error", n, err)
	}
	if _, err := w.Write([]byte("\xe2")); err != nil {
		t.Errorf("a held byte is not written yet: %v", err)
	}
	if err := w.Flush(); err == nil {
		t.Error("Flush hid the error")
	}
}

func BenchmarkWriter(b *testing.B) {
	line := []byte(strings.Repeat("epoch 3 loss 0.0123 acc 0.98 — ok\n", 100))
	w := NewWriter(discard{})
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		if _, err := w.Write(line); err != nil {
			b.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
