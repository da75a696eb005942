package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/images/archive"
	"github.com/containerd/containerd/v2/pkg/namespaces"
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
