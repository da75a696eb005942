package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nsn-run/nsn-run/docs"
	"github.com/nsn-run/nsn-run/gpu"
	"github.com/nsn-run/nsn-run/task"
)

var nodeAgentBin builtBinary

// TestREADMENodeAgent builds the README's node-agent example
// (examples/node-agent, which the README shows byte for byte) without cgo,
// as a node agent would link nsn-run, and runs it against the containerd
// under test with the stand-in CDI spec as the node's GPUs: its task gets
// one GPU, streams its output while it runs, and the Result it prints has
// stats, matches docs/result.schema.json, and leaves nothing behind, the
// GPU grant included.
func TestREADMENodeAgent(t *testing.T) {
	c, addr := containerdClient(t)
	importBusybox(t, c, addr)
	specDir, _, err := standInGPUs(t)
	if err != nil {
		t.Fatal(err)
	}
	agent := nodeAgentBin.get(t, "examples/node-agent", "node-agent", true)
	// The containerd backend's shim logger: node.Open finds nsn-logger
	// beside the program.
	if err := os.Link(nsnLogger(t), filepath.Join(filepath.Dir(agent), "nsn-logger")); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	state := t.TempDir()
	id := uniqueID("agent")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, agent, "-address", addr, "-namespace", testNamespace, "-state-dir", state, "-cdi-spec-dir", specDir, "-id", id)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node-agent: %v\nstderr: %s", err, stderr.String())
	}
	if streamed := stderr.String(); !strings.Contains(streamed, "nvidia-standin") || !strings.Contains(streamed, "hello") {
		t.Errorf("streamed output %q: want the granted stand-in GPU and hello", streamed)
	}
	if err := docs.ValidateResult(stdout.Bytes()); err != nil {
		t.Errorf("the Result does not match docs/result.schema.json: %v", err)
	}
	var res task.Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("Result: %v: %s", err, stdout.String())
	}
	if res.ID != id || res.ExitCode != 0 || res.Reason != task.ReasonExited || !strings.HasSuffix(res.Stdout, "hello\n") {
		t.Errorf("Result: %+v", res)
	}
	if res.Stats.PeakMemoryBytes == 0 || res.Stats.CPUUsageSeconds <= 0 {
		t.Errorf("no stats in the Result: %+v", res.Stats)
	}
	if l := leftovers(t, c); l != "" {
		t.Errorf("left behind: %s", l)
	}
	// The node-wide grants hold nothing of the agent's state dir.
	grants, err := os.ReadDir(gpu.DefaultAllocDir)
	if err != nil {
		t.Fatalf("the node's GPU allocation dir: %v", err)
	}
	for _, g := range grants {
		if b, _ := os.ReadFile(filepath.Join(gpu.DefaultAllocDir, g.Name())); strings.Contains(string(b), state) {
			t.Errorf("GPU grant left: %s: %s", g.Name(), b)
		}
	}
}
