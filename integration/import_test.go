package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/images/archive"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/internal/imagebuild"
	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/task"
)

// TestImportDockerSave imports a `docker save` style tarball (manifest.json
// and blobs, no OCI index) through the CLI under a new name, and runs it.
func TestImportDockerSave(t *testing.T) {
	g := cliEnv(t)
	c, _ := containerdClient(t)
	ctx := namespaces.WithNamespace(context.Background(), testNamespace)

	// containerd's exporter writes an OCI layout plus docker's manifest.json;
	// dropping the OCI files leaves what `docker save` writes.
	var exported bytes.Buffer
	if err := c.Export(ctx, &exported, archive.WithImage(c.ImageService(), busyboxRef)); err != nil {
		t.Fatal(err)
	}
	const name = "docker.io/library/saved:v1"
	var saved bytes.Buffer
	tr, tw := tar.NewReader(&exported), tar.NewWriter(&saved)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		switch h.Name {
		case "index.json", "oci-layout":
			continue
		case "manifest.json":
			data = bytes.ReplaceAll(data, []byte(`"`+busyboxRef+`"`), []byte(`"`+name+`"`))
			data = bytes.ReplaceAll(data, []byte(`"busybox:latest"`), []byte(`"saved:v1"`))
			h.Size = int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}

	r := runCLI(t, saved.Bytes(), append([]string{"image", "import"}, append(g, "-")...)...)
	if r.code != 0 || r.stdout != name+"\n" {
		t.Fatalf("import: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	run := cli(t, g, "run", name, "--", "echo", "saved")
	if run.code != 0 || run.stdout != "saved\n" {
		t.Errorf("run of the imported image: exit %d stdout %q stderr %q", run.code, run.stdout, run.stderr)
	}
	bad := runCLI(t, []byte("not a tarball"), append([]string{"image", "import"}, append(g, "-")...)...)
	if bad.code != 125 || strings.Count(bad.stderr, "\n") != 1 {
		t.Errorf("import of garbage: exit %d stderr %q", bad.code, bad.stderr)
	}
	_ = c.ImageService().Delete(ctx, name)
}

// markerImage writes an OCI layout tarball of an image named name (and
// also) whose rootfs is busybox plus /marker holding marker, and returns
// its path.
func markerImage(t *testing.T, name, marker string, also ...string) string {
	t.Helper()
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := imagebuild.BusyboxRootfs(rootfs, busyboxPath(t)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "marker"), []byte(marker), 0o644); err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(t.TempDir(), "image.tar")
	f, err := os.Create(tarball)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := imagebuild.WriteOCILayout(f, imagebuild.Image{Name: name, AlsoNamed: also, RootfsDir: rootfs, Config: ocispec.ImageConfig{Env: []string{"PATH=/bin"}}}); err != nil {
		t.Fatal(err)
	}
	return tarball
}

// TestImportRefusesReplace: an archive names its images itself. An outside
// review imported one that named an image other tasks ran from, and
// their next tasks ran the archive's filesystem; another named an image
// with escape sequences, which image import and image ls printed to the
// terminal raw. Now an image of the same name with other content is
// refused unless --replace (the image stays as it was, and tasks still
// run it), and a name that is not a valid reference is refused.
func TestImportRefusesReplace(t *testing.T) {
	g := cliEnv(t)
	c, _ := containerdClient(t)
	ctx := namespaces.WithNamespace(context.Background(), testNamespace)
	name := "docker.io/library/" + uniqueID("nsn-replace") + ":v1"
	t.Cleanup(func() { _ = c.ImageService().Delete(ctx, name) })
	original, hostile := markerImage(t, name, "original"), markerImage(t, name, "hostile")

	if r := cli(t, g, "image", "import", original); r.code != 0 || r.stdout != name+"\n" {
		t.Fatalf("import: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := cli(t, g, "image", "import", original); r.code != 0 {
		t.Errorf("the same image again: exit %d stderr %q", r.code, r.stderr)
	}
	before, err := c.ImageService().Get(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	r := cli(t, g, "image", "import", hostile)
	if r.code != 125 || !strings.Contains(r.stderr, "exists") || !strings.Contains(r.stderr, "--replace") {
		t.Errorf("import of other content under the name: exit %d stderr %q, want 125 and the refusal", r.code, r.stderr)
	}
	// All or nothing: an archive that also names a new image is refused
	// whole (a sixteenth review's left its other name behind).
	other := "docker.io/library/" + uniqueID("nsn-other") + ":v1"
	t.Cleanup(func() { _ = c.ImageService().Delete(ctx, other) })
	for _, names := range [][]string{{name, other}, {other, name}} {
		r = cli(t, g, "image", "import", markerImage(t, names[0], "hostile", names[1]))
		if r.code != 125 || !strings.Contains(r.stderr, "--replace") {
			t.Errorf("import of %v: exit %d stderr %q, want refused", names, r.code, r.stderr)
		}
		if _, err := c.ImageService().Get(ctx, other); !errdefs.IsNotFound(err) {
			t.Errorf("the refused archive's other name %s is there (%v)", other, err)
		}
	}
	if now, err := c.ImageService().Get(ctx, name); err != nil || now.Target.Digest != before.Target.Digest {
		t.Errorf("the image is now %v (%v), was %s", now.Target.Digest, err, before.Target.Digest)
	}
	if run := cli(t, g, "run", name, "--", "cat", "/marker"); run.stdout != "original" {
		t.Errorf("a task of the image reads %q (exit %d %s), want original", run.stdout, run.code, run.stderr)
	}
	if r := cli(t, g, "image", "import", "--replace", hostile); r.code != 0 {
		t.Fatalf("import --replace: exit %d stderr %q", r.code, r.stderr)
	}
	if run := cli(t, g, "run", name, "--", "cat", "/marker"); run.stdout != "hostile" {
		t.Errorf("after --replace a task reads %q (exit %d %s), want hostile", run.stdout, run.code, run.stderr)
	}

	// A name that pins a digest, with other content (an outside review
	// took over busybox@sha256:<busybox's> so), and a name that is not a
	// full reference.
	pinned := "docker.io/library/" + uniqueID("nsn-pinned") + "@" + before.Target.Digest.String()
	r = cli(t, g, "image", "import", markerImage(t, pinned, "hostile"))
	if r.code != 125 || !strings.Contains(r.stderr, "not the digest its name pins") {
		t.Errorf("import of other content under a name pinning %s: exit %d stderr %q", before.Target.Digest, r.code, r.stderr)
	}
	if _, err := c.ImageService().Get(ctx, pinned); err == nil {
		t.Errorf("%s was created", pinned)
		_ = c.ImageService().Delete(ctx, pinned)
	}
	short := uniqueID("nsn-short")
	r = cli(t, g, "image", "import", markerImage(t, short, "x"))
	if r.code != 125 || !strings.Contains(r.stderr, "not a full reference") {
		t.Errorf("import of an image named %q: exit %d stderr %q", short, r.code, r.stderr)
	}
	if _, err := c.ImageService().Get(ctx, short); err == nil {
		t.Errorf("%s was created", short)
		_ = c.ImageService().Delete(ctx, short)
	}

	bad := "docker.io/library/rev\x1b]0;PWNED\x07x:latest"
	r = cli(t, g, "image", "import", markerImage(t, bad, "x"))
	if r.code != 125 || !strings.Contains(r.stderr, "not a valid image reference") || strings.ContainsRune(r.stderr, 0x1b) {
		t.Errorf("import of an image named with escape sequences: exit %d stderr %q", r.code, r.stderr)
	}
	if _, err := c.ImageService().Get(ctx, bad); err == nil {
		t.Error("the image with escape sequences in its name was created")
		_ = c.ImageService().Delete(ctx, bad)
	}
}

// TestManagerRunsTheReplacedImage: a long-lived Manager's next task of a
// name runs what the name points at now. The containerd backend keeps
// the configs it read by the image's digest (images.Configs), so a
// replaced image is another digest to it; the first image imported back
// is its first digest again, whose unpacked layer containerd may have
// collected meanwhile (unpacked again from the kept config's layers).
func TestManagerRunsTheReplacedImage(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backendCase, m *runtime.Manager) {
		ctx := context.Background()
		name := "docker.io/library/" + strings.ToLower(uniqueID("nsn-again")) + ":v1"
		first, second := markerImage(t, name, "first"), markerImage(t, name, "second")
		t.Cleanup(func() { _, _ = m.RemoveImage(context.Background(), name, runtime.RemoveImageOptions{Force: true}) })
		for i, archive := range []string{first, second, first, second} {
			f, err := os.Open(archive)
			if err != nil {
				t.Fatal(err)
			}
			_, err = m.ImportImage(ctx, f, runtime.ImportOptions{Replace: true})
			f.Close()
			if err != nil {
				t.Fatalf("import %d: %v", i, err)
			}
			want := []string{"first", "second"}[i%2]
			res, err := m.Run(ctx, task.Task{ID: task.NewID(), Image: name, Command: []string{"cat", "/marker"}}, runtime.RunOptions{})
			if err != nil || res.Stdout != want {
				t.Errorf("task %d of %s after the import of the %s image: stdout %q (%v), want %q", i, name, want, res.Stdout, err, want)
			}
		}
		if _, err := m.RemoveImage(ctx, name, runtime.RemoveImageOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Run(ctx, task.Task{ID: task.NewID(), Image: name, Command: []string{"cat", "/marker"}}, runtime.RunOptions{}); !errdefs.IsNotFound(err) {
			t.Errorf("a task of the removed image: %v, want not found", err)
		}
	})
}
