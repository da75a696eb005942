package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func rootfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "tool"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("tool", filepath.Join(dir, "bin", "alias")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func readLayout(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		files[h.Name] = data
	}
}

func TestLayoutIsValidAndDeterministic(t *testing.T) {
	dir := rootfs(t)
	img := Image{Name: "docker.io/library/demo:v1", RootfsDir: dir, Config: ocispec.ImageConfig{User: "1000"}}
	var a, b bytes.Buffer
	if err := WriteOCILayout(&a, img); err != nil {
		t.Fatal(err)
	}
	if err := WriteOCILayout(&b, img); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("packing the same directory twice gave different bytes")
	}

	files := readLayout(t, a.Bytes())
	var index ocispec.Index
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v %+v", err, index)
	}
	m := index.Manifests[0]
	if m.Annotations[annotationImageName] != img.Name || m.Annotations[ocispec.AnnotationRefName] != "v1" {
		t.Errorf("annotations = %v", m.Annotations)
	}
	// Every blob is stored under its own digest.
	for name, data := range files {
		if len(name) > 13 && name[:13] == "blobs/sha256/" && digest.FromBytes(data).Encoded() != name[13:] {
			t.Errorf("%s does not match its content", name)
		}
	}
	var manifest ocispec.Manifest
	if err := json.Unmarshal(files["blobs/sha256/"+m.Digest.Encoded()], &manifest); err != nil {
		t.Fatal(err)
	}
	var config ocispec.Image
	if err := json.Unmarshal(files["blobs/sha256/"+manifest.Config.Digest.Encoded()], &config); err != nil {
		t.Fatal(err)
	}
	if config.Config.User != "1000" || config.OS != "linux" || len(config.RootFS.DiffIDs) != 1 {
		t.Errorf("config = %+v", config)
	}
}

func TestLayerEntriesAreOwnedByRoot(t *testing.T) {
	layer, _, err := packLayer(rootfs(t), map[string]map[string]string{"bin/tool": {"security.capability": FileCapability(21)}}, map[string][2]int{"bin/alias": {1000, 1001}})
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzipReader(layer)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	seen := map[string]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case h.Name == "bin/alias":
			if h.Uid != 1000 || h.Gid != 1001 {
				t.Errorf("%s owned by %d:%d, want the Owners entry 1000:1001", h.Name, h.Uid, h.Gid)
			}
		case h.Uid != 0 || h.Gid != 0:
			t.Errorf("%s owned by %d:%d", h.Name, h.Uid, h.Gid)
		}
		seen[h.Name] = h.Typeflag
		if h.Name == "bin/tool" && h.PAXRecords["SCHILY.xattr.security.capability"] != FileCapability(21) {
			t.Errorf("bin/tool lacks its file capability: %q", h.PAXRecords)
		}
	}
	if seen["bin/"] != tar.TypeDir || seen["bin/tool"] != tar.TypeReg || seen["bin/alias"] != tar.TypeSymlink {
		t.Errorf("entries = %v", seen)
	}
}

func gzipReader(b []byte) (io.Reader, error) { return gzip.NewReader(bytes.NewReader(b)) }

func TestFileCapability(t *testing.T) {
	got := []byte(FileCapability(21, 38)) // CAP_SYS_ADMIN, CAP_PERFMON
	want := []byte{0x01, 0, 0, 0x02, 0, 0, 0x20, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0}
	if !bytes.Equal(got, want) {
		t.Errorf("FileCapability = % x, want % x", got, want)
	}
}
