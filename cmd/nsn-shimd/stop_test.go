package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/runc"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	runcC "github.com/containerd/go-runc"
)

// stopBundle lays out what the shim's `delete` action finds: a bundle
// named after the task, whose runtime is a stand-in named runtime (runc,
// or another) that appends its arguments to the returned file. With
// ownRoot, the bundle's options put runc's root in the returned dir;
// without, there are no options and the root is runcRoot. It leaves the
// test in the bundle (containerd runs `delete` in one).
func stopBundle(t *testing.T, id, runtime string, ownRoot bool) (calls, root string) {
	t.Helper()
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundles", id)
	root = filepath.Join(dir, "runc")
	calls = filepath.Join(dir, "runtime-calls")
	standIn := filepath.Join(dir, "bin", runtime)
	if err := os.MkdirAll(filepath.Dir(standIn), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(standIn, []byte("#!/bin/sh\necho \"$@\" >> "+calls+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "runtime"), []byte(standIn), 0o600); err != nil {
		t.Fatal(err)
	}
	if ownRoot {
		if err := runc.WriteOptions(bundle, &options.Options{Root: root}); err != nil {
			t.Fatal(err)
		}
	} else {
		root = runcRoot
	}
	t.Chdir(bundle)
	return calls, root
}

// runtimeCalls returns what the stand-in runtime was called with, and
// forgets it.
func runtimeCalls(t *testing.T, calls string) string {
	t.Helper()
	b, err := os.ReadFile(calls)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	_ = os.Remove(calls)
	return string(b)
}

// TestStopAsContainerd: after a clean delete (runc keeps no state for the
// container) nsn-shimd's `delete` action reports what containerd's reports,
// without running runc; when runc may still know the container, or the
// runtime is not runc, it runs containerd's, the forced delete included.
func TestStopAsContainerd(t *testing.T) {
	ctx := namespaces.WithNamespace(context.Background(), "ns1")
	upstream := manager.NewShimManager("io.containerd.runc.v2")
	ours := &nsnShim{Shim: upstream}
	// The default root (no options) is containerd's; this test's own
	// stands in for it, so that no real runc state is read.
	defaultRoot := runcRoot
	runcRoot = t.TempDir()
	t.Cleanup(func() { runcRoot = defaultRoot })

	for _, ownRoot := range []bool{true, false} {
		name := map[bool]string{true: "options root", false: "default root"}[ownRoot]
		t.Run(name+"/recorded exit", func(t *testing.T) {
			calls, _ := stopBundle(t, "task1", "runc", ownRoot)
			exitedAt := time.Date(2026, 11, 30, 5, 0, 0, 0, time.UTC)
			if err := runc.WriteExitStatus(".", runcC.Exit{Pid: 42, Status: 3, Timestamp: exitedAt}); err != nil {
				t.Fatal(err)
			}
			want, err := upstream.Stop(ctx, "task1")
			if err != nil {
				t.Fatal(err)
			}
			if c := runtimeCalls(t, calls); !strings.Contains(c, "delete --force task1") {
				t.Fatalf("containerd's Stop ran runc with %q; the stand-in runc no longer sees what it does", c)
			}
			got, err := ours.Stop(ctx, "task1")
			if err != nil {
				t.Fatal(err)
			}
			if c := runtimeCalls(t, calls); c != "" {
				t.Errorf("runc has no state for the container, and nsn-shimd's Stop still ran it: %q", c)
			}
			if got != want || got.Pid != 42 || got.ExitStatus != 3 || !got.ExitedAt.Equal(exitedAt) {
				t.Errorf("nsn-shimd's Stop = %+v, containerd's = %+v, recorded pid 42 status 3 at %s", got, want, exitedAt)
			}
		})
	}

	t.Run("no exit recorded", func(t *testing.T) {
		calls, _ := stopBundle(t, "task2", "runc", true)
		if err := os.WriteFile("init.pid", []byte("77"), 0o600); err != nil {
			t.Fatal(err)
		}
		want, err := upstream.Stop(ctx, "task2")
		if err != nil {
			t.Fatal(err)
		}
		runtimeCalls(t, calls)
		got, err := ours.Stop(ctx, "task2")
		if err != nil {
			t.Fatal(err)
		}
		if c := runtimeCalls(t, calls); c != "" {
			t.Errorf("nsn-shimd's Stop ran runc: %q", c)
		}
		if got.Pid != want.Pid || got.ExitStatus != want.ExitStatus || got.Pid != 77 || got.ExitStatus != 137 {
			t.Errorf("nsn-shimd's Stop = %+v, containerd's = %+v, want pid 77 status 137", got, want)
		}
	})

	// Every way of not being certain that runc forgot the container runs
	// the forced delete.
	for name, c := range map[string]struct {
		runtime string
		prepare func(t *testing.T, root string)
	}{
		"runc knows the container": {"runc", func(t *testing.T, root string) {
			if err := os.MkdirAll(filepath.Join(root, "ns1", "task3"), 0o700); err != nil {
				t.Fatal(err)
			}
		}},
		"state path unreadable": {"runc", func(t *testing.T, root string) {
			// <root>/ns1 a file: lstat of the state dir says ENOTDIR.
			if err := os.MkdirAll(root, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, "ns1"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		"another runtime": {"runsc", func(*testing.T, string) {}},
	} {
		t.Run(name, func(t *testing.T) {
			calls, root := stopBundle(t, "task3", c.runtime, true)
			c.prepare(t, root)
			if _, err := ours.Stop(ctx, "task3"); err != nil {
				t.Fatal(err)
			}
			if got := runtimeCalls(t, calls); !strings.Contains(got, "delete --force task3") {
				t.Errorf("nsn-shimd's Stop did not force the runtime's delete: calls %q", got)
			}
		})
	}
}

// TestRuncForgetsUnknownContainer: what Stop's shortcut relies on, with
// the real runc: its forced delete of a container it has no state dir for
// succeeds and leaves its root as it was.
func TestRuncForgetsUnknownContainer(t *testing.T) {
	bin, err := exec.LookPath("runc")
	if err != nil {
		if os.Getenv("NSN_REQUIRE_INTEGRATION") != "" {
			t.Fatalf("runc: %v", err)
		}
		t.Skip("no runc on PATH")
	}
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "witness"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--root", root, "delete", "--force", "task1").CombinedOutput()
	if err != nil {
		t.Fatalf("%s delete --force of an unknown container: %v: %s", bin, err, out)
	}
	entries, err := os.ReadDir(root)
	if err != nil || len(entries) != 1 || entries[0].Name() != "witness" {
		t.Errorf("runc's root after the delete: %v %v, want only the witness", entries, err)
	}
}

// TestCopiesThisContainerd: internal/shimfront (and this program's Stop)
// copy pieces of containerd's shim as of the containerd module nsn-run
// links; their tests compare them with that code. Another version may
// have changed them: read its manager.Start and Stop, pkg/shim's run and
// util_unix.go again, bring shimfront and TestStopAsContainerd in line,
// check that run still sets the collector's target (setRuntime) before it
// initialises the plugins (main.go's gcDelayPlugin holds the collector
// from there), then change the version here.
func TestCopiesThisContainerd(t *testing.T) {
	const copied = "v2.4.2"
	info, ok := debug.ReadBuildInfo()
	if !ok {
		t.Fatal("no build info")
	}
	for _, m := range info.Deps {
		if m.Path == "github.com/containerd/containerd/v2" {
			if v := m.Version; m.Replace == nil && v != copied {
				t.Fatalf("nsn-run links containerd %s; shimfront copies containerd %s's shim", v, copied)
			}
			return
		}
	}
	t.Fatal("the containerd module is not among the dependencies")
}
