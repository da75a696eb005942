package integration

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/task"
)

// TestRemoveImage: Manager.RemoveImage (`image rm`) on both backends. An
// image a task runs from is refused and stays; --force removes the name
// while the task runs on; a new task of the name is then refused. On
// containerd a removal collects garbage before it returns: the image's
// unpacked layer, which the forced removal had to leave to the running
// task, is gone after the next one.
func TestRemoveImage(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backendCase, m *runtime.Manager) {
		ctx := context.Background()
		name := "docker.io/library/" + strings.ToLower(uniqueID("nsn-rmi")) + ":v1"
		f, err := os.Open(markerImage(t, name, "rmi"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if names, err := m.ImportImage(ctx, f, runtime.ImportOptions{}); err != nil || !slices.Equal(names, []string{name}) {
			t.Fatalf("import: %v %v", names, err)
		}
		committed := committedSnapshots(t, b.name)

		id := task.NewID()
		if _, err := m.Spawn(ctx, task.Task{ID: id, Image: name, Command: []string{"sleep", "300"}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Remove(context.Background(), id, true) })
		// Unpacked by the task's start: the snapshot that holds /marker.
		added := slices.DeleteFunc(committedSnapshots(t, b.name), func(s string) bool { return slices.Contains(committed, s) })
		if b.name == "containerd" && len(added) != 1 {
			t.Fatalf("the task's start unpacked %d snapshots (%v), want the image's one layer", len(added), added)
		}

		_, err = m.RemoveImage(ctx, name, runtime.RemoveImageOptions{})
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), id) {
			t.Errorf("removing an image a task runs from: %v, want failed precondition naming %s", err, id)
		}
		if !hasImage(t, m, name) {
			t.Fatalf("the refused removal removed %s", name)
		}

		img, err := m.RemoveImage(ctx, name, runtime.RemoveImageOptions{Force: true})
		if err != nil || img.Name != name || img.Digest == "" {
			t.Fatalf("forced removal: %+v %v", img, err)
		}
		if hasImage(t, m, name) {
			t.Errorf("%s is still listed after its removal", name)
		}
		if st, err := m.Inspect(ctx, id); err != nil || st.State != runtime.StateRunning {
			t.Errorf("the task of the removed image: %+v %v, want running", st, err)
		}
		if _, err := m.Run(ctx, task.Task{ID: task.NewID(), Image: name, Command: []string{"true"}}, runtime.RunOptions{}); !errdefs.IsNotFound(err) {
			t.Errorf("a new task of the removed image: %v, want not found", err)
		}

		if err := m.Remove(ctx, id, true); err != nil {
			t.Fatal(err)
		}
		if _, err := m.RemoveImage(ctx, name, runtime.RemoveImageOptions{}); !errdefs.IsNotFound(err) {
			t.Errorf("removing it again: %v, want not found", err)
		}
		if _, err := m.RemoveImage(ctx, "bad//ref", runtime.RemoveImageOptions{}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("a malformed reference: %v, want invalid argument", err)
		}
		if _, err := m.RemoveImage(ctx, img.Digest, runtime.RemoveImageOptions{}); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "not its digest or id") {
			t.Errorf("a digest: %v, want invalid argument naming the mistake", err)
		}
		if b.name == "containerd" {
			// The forced removal's layer outlives the task, until
			// containerd next collects garbage; a plain removal collects
			// before it returns, and takes it with it.
			f, err := os.Open(markerImage(t, name, "rmi"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := m.ImportImage(ctx, f, runtime.ImportOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := m.RemoveImage(ctx, name, runtime.RemoveImageOptions{}); err != nil {
				t.Fatal(err)
			}
			now := committedSnapshots(t, b.name)
			for _, s := range added {
				if slices.Contains(now, s) {
					t.Errorf("the removed image's snapshot %s is still there", s)
				}
			}
		}
		if !hasImage(t, m, "docker.io/library/busybox:latest") {
			t.Error("busybox went too")
		}
	})
}

// TestCLIImageRemove: `image rm` prints each name it removed, and gives
// one line and exit 125 for those it did not remove.
func TestCLIImageRemove(t *testing.T) {
	g := cliEnv(t)
	name := "docker.io/library/" + strings.ToLower(uniqueID("nsn-clirmi")) + ":v1"
	if r := cli(t, g, "image", "import", markerImage(t, name, "x")); r.code != 0 {
		t.Fatalf("import: exit %d stderr %q", r.code, r.stderr)
	}
	short := strings.TrimPrefix(name, "docker.io/library/")
	r := cli(t, g, "image", "rm", short, "nothere:v1", "bad//ref")
	if r.code != 125 || r.stdout != name+"\n" || strings.Count(r.stderr, "\n") != 1 ||
		!strings.Contains(r.stderr, "nothere:v1: not found") || !strings.Contains(r.stderr, `"bad//ref"`) {
		t.Errorf("image rm: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if ls := cli(t, g, "image", "ls"); ls.code != 0 || strings.Contains(ls.stdout, name) {
		t.Errorf("image ls after rm: exit %d stdout %q", ls.code, ls.stdout)
	}
}

func hasImage(t *testing.T, m *runtime.Manager, name string) bool {
	t.Helper()
	imgs, err := m.ListImages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(imgs, func(i runtime.Image) bool { return i.Name == name })
}

// committedSnapshots lists containerd's committed snapshots in the test
// namespace (none for another backend).
func committedSnapshots(t *testing.T, backend string) []string {
	t.Helper()
	if backend != "containerd" {
		return nil
	}
	c, _ := containerdClient(t)
	ctx := namespaces.WithNamespace(context.Background(), testNamespace)
	var out []string
	if err := c.SnapshotService("overlayfs").Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindCommitted {
			out = append(out, info.Name)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}
