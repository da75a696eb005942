// Command node-agent is the README's node-agent example: it links nsn-run
// as a library (no cmd/ import), runs one task that asks for a GPU, streams
// its output while it runs, and prints the Result with its stats as JSON.
// integration/nodeagent_test.go builds and runs it against a real
// containerd, with the stand-in CDI spec as the node's GPUs.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"os"
	"os/signal"

	"github.com/nsn-run/nsn-run/node"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/task"
)

func main() { os.Exit(run()) }

func run() int {
	var o node.Options // zero: containerd at /run/containerd/containerd.sock, state in /var/lib/nsn-run
	flag.StringVar(&o.Address, "address", node.DefaultAddress, "containerd socket")
	flag.StringVar(&o.Namespace, "namespace", "nsn", "containerd namespace")
	flag.StringVar(&o.StateDir, "state-dir", node.DefaultStateDir, "state directory")
	id := flag.String("id", "job-1", "task id")
	cdiDir := flag.String("cdi-spec-dir", "/etc/cdi", "CDI specs of this node's GPUs")
	flag.Parse()
	o.CDISpecDirs = []string{*cdiDir}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	m, err := node.Open(ctx, o) // what nsn-run wires: backend, GPU allocator, id ranges, audit
	if err != nil {
		log.Print(err)
		return 125
	}
	defer m.Close() // running tasks survive it; Recover in a later process picks them up

	t := task.Task{
		ID: *id, Image: "busybox:latest",
		Command: []string{"sh", "-c", "ls /dev | grep nvidia; echo hello"},
		Limits:  task.Limits{MemoryBytes: 256 * task.MiB, CPUs: 1, Pids: 64},
		GPUs:    "1", // any one free GPU, granted exclusively until Cleanup
	}
	// Run = Spawn, Wait (deadline, OOM, stats), CollectOutput, Cleanup.
	res, err := m.Run(ctx, t, runtime.RunOptions{Stdout: os.Stderr, Stderr: os.Stderr})
	if err != nil {
		log.Print(err)
		return 125
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(res) // res.Stats: peak memory, CPU seconds, pids (GPU memory too with o.GPUUsage set: gpu/nvmlusage, cgo)
	return res.ExitCode
}
