package main

import (
	"os"
	"strings"
	"testing"
)

// TestREADMEShowsThisExample: the README's node-agent example is this
// program, byte for byte, so the code the integration test builds and runs
// is the code people read.
func TestREADMEShowsThisExample(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	const open = "<!-- examples/node-agent/main.go -->\n```go\n"
	_, block, ok := strings.Cut(string(readme), open)
	if !ok {
		t.Fatalf("README.md has no %q block", strings.TrimSpace(open))
	}
	block, _, ok = strings.Cut(block, "```\n")
	if !ok {
		t.Fatal("the README's example block is not closed")
	}
	if block != string(src) {
		t.Errorf("README.md's node-agent example differs from examples/node-agent/main.go: copy the file into the README")
	}
}
