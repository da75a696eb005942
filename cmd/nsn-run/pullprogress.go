package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/docker/go-units"

	"github.com/nsn-run/nsn-run/runtime"
)

// pullPrinter shows a pull's progress reports (images.PullOptions.Progress)
// on w: on a terminal, one line redrawn in place with a bar, the blobs and
// the bytes; elsewhere (a log, a pipe) a line for each blob as it completes,
// so nothing is redrawn where nothing can be.
type pullPrinter struct {
	w        io.Writer
	terminal bool
	reported map[string]bool
}

func newPullPrinter(w io.Writer, terminal bool) *pullPrinter {
	return &pullPrinter{w: w, terminal: terminal, reported: map[string]bool{}}
}

func (p *pullPrinter) report(pr runtime.PullProgress) {
	if !p.terminal {
		for _, b := range pr.Blobs {
			if b.Complete && !p.reported[b.ID] {
				p.reported[b.ID] = true
				fmt.Fprintf(p.w, "fetched %s (%s)\n", shortDigest(b.ID), units.HumanSize(float64(b.Size)))
			}
		}
		return
	}
	fetched, total, complete := pr.Totals()
	fmt.Fprintf(p.w, "\r\x1b[Kpulling %s: %s %d/%d blobs, %s/%s",
		pr.Name, bar(fetched, total, 20), complete, len(pr.Blobs),
		units.HumanSize(float64(fetched)), units.HumanSize(float64(total)))
	if pr.Done {
		fmt.Fprintln(p.w) // leave the last state on screen
	}
}

// shortDigest is the first 12 hex digits of a digest, as docker shows
// layers (dockerd's layer ids are that already).
func shortDigest(d string) string {
	_, e, ok := strings.Cut(d, ":")
	if !ok {
		e = d
	}
	if len(e) > 12 {
		e = e[:12]
	}
	return e
}

// bar draws a fixed-width progress bar.
func bar(done, total int64, width int) string {
	filled := 0
	if total > 0 {
		filled = int(int64(width) * min(done, total) / total)
	}
	b := make([]byte, width+2)
	b[0], b[width+1] = '[', ']'
	for i := range width {
		b[i+1] = ' '
		if i < filled {
			b[i+1] = '='
		}
	}
	return string(b)
}
