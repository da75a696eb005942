package main

import (
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/nsn-run/nsn-run/runtime"
)

func TestBar(t *testing.T) {
	for _, c := range []struct {
		done, total int64
		want        string
	}{
		{0, 100, "[          ]"},
		{50, 100, "[=====     ]"},
		{100, 100, "[==========]"},
		{150, 100, "[==========]"}, // a blob larger than announced
		{5, 0, "[          ]"},     // sizes not known yet
	} {
		if got := bar(c.done, c.total, 10); got != c.want {
			t.Errorf("bar(%d, %d) = %q, want %q", c.done, c.total, got, c.want)
		}
	}
}

// TestPullPrinter: off a terminal, one line per blob when it completes and
// never twice; on a terminal, one redrawn line, ended by the last report.
func TestPullPrinter(t *testing.T) {
	da, db := digest.FromString("a"), digest.FromString("b")
	a, b := da.String(), db.String()
	reports := []runtime.PullProgress{
		{Name: "docker.io/library/busybox:latest", Blobs: []runtime.BlobProgress{{ID: a, Size: 2048, Fetched: 1024}}},
		{Name: "docker.io/library/busybox:latest", Blobs: []runtime.BlobProgress{{ID: a, Size: 2048, Fetched: 2048, Complete: true}, {ID: b, Size: 10}}},
		{Name: "docker.io/library/busybox:latest", Blobs: []runtime.BlobProgress{{ID: a, Size: 2048, Fetched: 2048, Complete: true}, {ID: b, Size: 10, Fetched: 10, Complete: true}}, Done: true},
	}
	var plain strings.Builder
	p := newPullPrinter(&plain, false)
	for _, r := range reports {
		p.report(r)
	}
	want := "fetched " + da.Encoded()[:12] + " (2.048kB)\nfetched " + db.Encoded()[:12] + " (10B)\n"
	if plain.String() != want {
		t.Errorf("off a terminal:\n%q\nwant\n%q", plain.String(), want)
	}

	var term strings.Builder
	p = newPullPrinter(&term, true)
	for _, r := range reports {
		p.report(r)
	}
	out := term.String()
	if strings.Count(out, "\r\x1b[K") != 3 || !strings.HasSuffix(out, "pulling docker.io/library/busybox:latest: [====================] 2/2 blobs, 2.058kB/2.058kB\n") || strings.Count(out, "\n") != 1 {
		t.Errorf("on a terminal: %q", out)
	}
}
