package logs

import (
	"io"
	"path/filepath"
	"testing"
)

// BenchmarkCapture measures the shim logger's capture path: bytes per
// second through the head/tail cap, as a task flooding stdout drives it.
func BenchmarkCapture(b *testing.B) {
	const size = 64 << 20
	dir := b.TempDir()
	b.SetBytes(size)
	for b.Loop() {
		if _, err := Capture(io.LimitReader(zeros{}, size), filepath.Join(dir, StdoutFile), DefaultLimits); err != nil {
			b.Fatal(err)
		}
	}
}
