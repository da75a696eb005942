// Package termesc owns showing untrusted bytes on a terminal: a Writer that escapes what a terminal would act on.
package termesc

import (
	"io"
	"unicode/utf8"
)

// Writer passes text through to the terminal it wraps with every control
// character made visible, so what a task prints cannot drive the
// operator's terminal: no ESC (CSI, OSC: title changes, OSC 52 clipboard
// writes, cursor moves, hyperlinks), no other C0 control but \n and \t
// (\r could overwrite what was printed), no DEL, no C1 control (U+0080 to
// U+009F, which some terminals take as ESC sequences: U+009B is CSI).
//
// C0 controls and DEL are written as \xNN, C1 controls as \uNNNN, and bytes
// that are not UTF-8 as \xNN. The escaping is for reading, not reversible:
// a task that prints a literal backslash sequence looks the same.
//
// A UTF-8 sequence split across Write calls is held back until it is
// complete; Flush writes what is held at the end of the stream. A Writer is
// not safe for concurrent use.
type Writer struct {
	w       io.Writer
	pending [utf8.UTFMax]byte // the start of a sequence the next Write may complete
	npend   int
	buf     []byte
}

// NewWriter returns a Writer that escapes into w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write escapes p into the wrapped writer. It reports all of p written once
// its escaped form was (an incomplete UTF-8 sequence at its end is kept for
// the next Write or Flush); when the wrapped writer fails it reports 0, as
// the bytes of p that reached it cannot be told apart from the escapes.
func (e *Writer) Write(p []byte) (int, error) {
	e.buf = e.buf[:0]
	in := p
	if e.npend > 0 {
		// Complete the held sequence with as few bytes of p as it needs;
		// escape it byte by byte if p shows it cannot be completed.
		head := append(e.pending[:e.npend:e.npend], p[:min(len(p), utf8.UTFMax-e.npend)]...)
		if !utf8.FullRune(head) {
			e.npend = copy(e.pending[:], head)
			return len(p), nil
		}
		r, size := utf8.DecodeRune(head)
		if r == utf8.RuneError && size == 1 {
			e.buf = appendByte(e.buf, head[0])
			in = append(head[1:e.npend:e.npend], p...) // re-scan the rest
		} else {
			e.buf = appendRune(e.buf, r, head[:size])
			in = p[size-e.npend:]
		}
		e.npend = 0
	}
	for i := 0; i < len(in); {
		c := in[i]
		if c >= 0x20 && c < 0x7f || c == '\n' || c == '\t' {
			// Printable ASCII passes as one run.
			j := i + 1
			for j < len(in) && (in[j] >= 0x20 && in[j] < 0x7f || in[j] == '\n' || in[j] == '\t') {
				j++
			}
			e.buf = append(e.buf, in[i:j]...)
			i = j
			continue
		}
		if c < utf8.RuneSelf { // C0 control or DEL
			e.buf = appendByte(e.buf, c)
			i++
			continue
		}
		if !utf8.FullRune(in[i:]) {
			// The start of a sequence cut by the end of this Write.
			e.npend = copy(e.pending[:], in[i:])
			break
		}
		r, size := utf8.DecodeRune(in[i:])
		if r == utf8.RuneError && size == 1 {
			e.buf = appendByte(e.buf, c)
		} else {
			e.buf = appendRune(e.buf, r, in[i:i+size])
		}
		i += size
	}
	if len(e.buf) == 0 {
		return len(p), nil
	}
	if _, err := e.w.Write(e.buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes a UTF-8 sequence held back from the last Write, escaped
// byte by byte: the stream ended before it was complete.
func (e *Writer) Flush() error {
	if e.npend == 0 {
		return nil
	}
	e.buf = e.buf[:0]
	for _, c := range e.pending[:e.npend] {
		e.buf = appendByte(e.buf, c)
	}
	e.npend = 0
	_, err := e.w.Write(e.buf)
	return err
}

const hex = "0123456789abcdef"

// appendByte writes b as \xNN.
func appendByte(buf []byte, b byte) []byte {
	return append(buf, '\\', 'x', hex[b>>4], hex[b&0xf])
}

// appendRune writes the valid rune r, whose encoding is enc: as is unless
// it is a C1 control, which becomes \u00NN.
func appendRune(buf []byte, r rune, enc []byte) []byte {
	if r >= 0x80 && r <= 0x9f {
		return append(buf, '\\', 'u', '0', '0', hex[r>>4], hex[r&0xf])
	}
	return append(buf, enc...)
}
