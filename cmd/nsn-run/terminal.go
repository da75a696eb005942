package main

import (
	"io"

	"golang.org/x/term"

	"github.com/nsn-run/nsn-run/logs/termesc"
)

// rawHelp is the --raw flag's help, the same on run and logs.
const rawHelp = "write the task's bytes unchanged even to a terminal (escape sequences included)"

// terminalHelp is the paragraph of run's and logs' help on escaping.
const terminalHelp = `On a terminal, the task's output is shown with what a terminal would act on
escaped: ESC, carriage return, the other control characters but newline
and tab, DEL, and bytes that are not UTF-8 as \xNN (ESC is \x1b); C1
controls as \u0080-\u009f. So a task cannot drive your terminal: set its
title, write your clipboard (OSC 52), move the cursor or hide lines. --raw
writes the bytes unchanged; so does a stream that is not a terminal (a
file, a pipe), where they are data.`

// taskOutput returns where a task's stream is shown: w itself, or, when w
// is a terminal and raw is false, an escaping writer over it. flush writes
// what the escaping writer holds back at the end of the stream.
func taskOutput(w io.Writer, raw bool) (out io.Writer, flush func() error) {
	if !raw && isTerminal(w) {
		e := termesc.NewWriter(w)
		return e, e.Flush
	}
	return w, func() error { return nil }
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr }) // an *os.File, or a stdStream over one
	return ok && term.IsTerminal(int(f.Fd()))
}
