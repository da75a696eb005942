// Package imagebuild packs a root filesystem directory into a single-layer
// OCI image layout tarball that containerd can import. No registry is
// reachable where nsn-run is built and tested, so its test and demo images
// (Debian's static busybox, our probe) are made by this code.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// annotationImageName is containerd's annotation for an image's full name in
// an OCI layout index; its importer names the image after it.
const annotationImageName = "io.containerd.image.name"

// epoch is the modification time of every entry, so the same directory
// always packs to the same digests.
var epoch = time.Unix(0, 0).UTC()

// Image describes what to pack.
type Image struct {
	Name      string // full reference, e.g. docker.io/library/busybox:latest
	RootfsDir string // directory packed as the only layer, owned by 0:0
	Config    ocispec.ImageConfig
	// Xattrs sets extended attributes on entries of the layer, keyed by
	// path relative to RootfsDir, then by attribute name (for example
	// "security.capability" for a file capability).
	Xattrs map[string]map[string]string
	// Owners sets the owner (uid, gid) of entries of the layer, keyed by
	// path relative to RootfsDir; every other entry is owned by 0:0.
	Owners map[string][2]int
	// AlsoNamed are more names for the same image, in the index and as
	// more tags in manifest.json (an archive naming several images).
	AlsoNamed []string
}

// WriteOCILayout writes img as an OCI image layout tar stream to w.
func WriteOCILayout(w io.Writer, img Image) error {
	layer, diffID, err := packLayer(img.RootfsDir, img.Xattrs, img.Owners)
	if err != nil {
		return err
	}
	config := ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		Config:   img.Config,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
	}
	configJSON, err := json.Marshal(config)
	if err != nil {
		return fmt.Errorf("marshal image config: %w", err)
	}
	manifest := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    descriptor(ocispec.MediaTypeImageConfig, configJSON),
		Layers:    []ocispec.Descriptor{descriptor(ocispec.MediaTypeImageLayerGzip, layer)},
	}
	manifestJSON, err := json.Marshal(manifest)
	if err != nil {
		return fmt.Errorf("marshal manifest: %w", err)
	}
	index := ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
	}
	var tags []string
	for _, name := range append([]string{img.Name}, img.AlsoNamed...) {
		manifestDesc := descriptor(ocispec.MediaTypeImageManifest, manifestJSON)
		manifestDesc.Annotations = map[string]string{annotationImageName: name}
		if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
			manifestDesc.Annotations[ocispec.AnnotationRefName] = name[i+1:]
		}
		index.Manifests = append(index.Manifests, manifestDesc)
		tags = append(tags, dockerTag(name))
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return fmt.Errorf("marshal index: %w", err)
	}

	// manifest.json makes the same tarball loadable by `docker load`
	// (docker-save format), which older dockerd needs.
	dockerManifest, err := json.Marshal([]map[string]any{{
		"Config":   blobPath(configJSON),
		"RepoTags": tags,
		"Layers":   []string{blobPath(layer)},
	}})
	if err != nil {
		return fmt.Errorf("marshal docker manifest: %w", err)
	}
	tw := tar.NewWriter(w)
	files := []struct {
		name string
		data []byte
	}{
		{ocispec.ImageLayoutFile, []byte(`{"imageLayoutVersion":"` + ocispec.ImageLayoutVersion + `"}`)},
		{"index.json", indexJSON},
		{"manifest.json", dockerManifest},
		{blobPath(layer), layer},
		{blobPath(configJSON), configJSON},
		{blobPath(manifestJSON), manifestJSON},
	}
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: epoch, Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	return tw.Close()
}

// dockerTag shortens a normalised name the way docker prints it:
// docker.io/library/busybox:latest is busybox:latest.
func dockerTag(name string) string {
	name = strings.TrimPrefix(name, "docker.io/")
	return strings.TrimPrefix(name, "library/")
}

func descriptor(mediaType string, data []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
}

func blobPath(data []byte) string {
	return "blobs/sha256/" + digest.FromBytes(data).Encoded()
}

// packLayer tars dir (sorted, owned by root, fixed mtimes), gzips it, and
// returns the compressed layer and the digest of the uncompressed tar.
func packLayer(dir string, xattrs map[string]map[string]string, owners map[string][2]int) ([]byte, digest.Digest, error) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	var h hash.Hash = sha256.New()
	tw := tar.NewWriter(io.MultiWriter(zw, h))
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		hdr.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if o, ok := owners[filepath.ToSlash(rel)]; ok {
			hdr.Uid, hdr.Gid = o[0], o[1]
		}
		hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = epoch, time.Time{}, time.Time{}
		hdr.Format = tar.FormatPAX
		for name, value := range xattrs[filepath.ToSlash(rel)] {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+name] = value
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("pack %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return gz.Bytes(), digest.NewDigest(digest.SHA256, h), nil
}

// BusyboxRootfs lays out a minimal root filesystem in dir from a static
// busybox binary: /bin/busybox, a link per applet, and the empty directories
// a container needs as mount points.
func BusyboxRootfs(dir, busybox string) error {
	if err := BaseRootfs(dir); err != nil {
		return err
	}
	data, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("read busybox: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), data, 0o755); err != nil {
		return err
	}
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return fmt.Errorf("%s --list: %w", busybox, err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", applet)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	return nil
}

// BaseRootfs lays out the directories every task rootfs has, and an
// /etc/passwd and /etc/group naming root and nobody.
func BaseRootfs(dir string) error {
	for _, d := range []string{"bin", "dev", "etc", "output", "proc", "sys", "tmp", "run", "usr/bin"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return err
	}
	for name, content := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// AddFile copies the host file src into rootfs at the absolute path dest,
// keeping its mode bits (setuid included: tests need such files).
func AddFile(rootfs, src, dest string) error {
	info, err := os.Stat(src)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	target := filepath.Join(rootfs, filepath.Clean("/"+dest))
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(target, data, info.Mode().Perm()); err != nil {
		return err
	}
	return os.Chmod(target, info.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
}

// FileCapability returns the security.capability xattr value (VFS_CAP
// revision 2) granting caps as permitted and effective file capabilities.
func FileCapability(caps ...uint) string {
	var perm [2]uint32
	for _, c := range caps {
		perm[c/32] |= 1 << (c % 32)
	}
	const revision2, effective = 0x02000000, 0x1
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], revision2|effective)
	binary.LittleEndian.PutUint32(b[4:], perm[0])  // permitted, low word
	binary.LittleEndian.PutUint32(b[8:], 0)        // inheritable, low word
	binary.LittleEndian.PutUint32(b[12:], perm[1]) // permitted, high word
	binary.LittleEndian.PutUint32(b[16:], 0)       // inheritable, high word
	return string(b)
}
