package images

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// countingStore is a content store that counts the blobs read from it.
type countingStore struct {
	content.Store
	reads int
}

func (s *countingStore) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	s.reads++
	return s.Store.ReaderAt(ctx, desc)
}

func readVia(t *testing.T, p content.Provider, desc ocispec.Descriptor) []byte {
	t.Helper()
	b, err := content.ReadBlob(context.Background(), p, desc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBlobDirReadsBack: a blob read once is read back from the dir, by a
// blobDir of another process as well; a file whose bytes are not the
// blob's (changed, cut short) is not believed: the store is read again
// and the file replaced.
func TestBlobDirReadsBack(t *testing.T) {
	s := newImageStore(t)
	store := &countingStore{Store: s.store}
	desc := s.write(ocispec.MediaTypeImageConfig, []byte(`{"config":{"Env":["A=1"]}}`))
	dir := filepath.Join(t.TempDir(), "blobs")
	want := []byte(`{"config":{"Env":["A=1"]}}`)
	for i, d := range []blobDir{{dir: dir, store: store}, {dir: dir, store: store}} {
		if got := readVia(t, d, desc); !bytes.Equal(got, want) {
			t.Fatalf("read %d: %q, want %q", i+1, got, want)
		}
	}
	if store.reads != 1 {
		t.Errorf("two reads of a blob read the store %d times, want 1", store.reads)
	}
	file := filepath.Join(dir, "sha256-"+desc.Digest.Encoded())
	// Neither a fifo (whose read would block the start) nor a link,
	// even to the right bytes, is read.
	right := filepath.Join(t.TempDir(), "right")
	if err := os.WriteFile(right, want, 0o600); err != nil {
		t.Fatal(err)
	}
	for what, plant := range map[string]func() error{
		"a fifo": func() error { return syscall.Mkfifo(file, 0o600) },
		"a link": func() error { return os.Symlink(right, file) },
	} {
		if err := os.Remove(file); err != nil {
			t.Fatal(err)
		}
		if err := plant(); err != nil {
			t.Fatal(err)
		}
		reads := store.reads
		if got := readVia(t, blobDir{dir: dir, store: store}, desc); !bytes.Equal(got, want) {
			t.Errorf("with %s in its place: read %q, want %q", what, got, want)
		}
		if store.reads != reads+1 {
			t.Errorf("with %s in its place the store was read %d times, want 1", what, store.reads-reads)
		}
		if info, err := os.Lstat(file); err != nil || !info.Mode().IsRegular() {
			t.Errorf("with %s in its place: not replaced by the blob's file (%v)", what, err)
		}
	}
	for _, bad := range [][]byte{[]byte(`{"config":{"Env":["A=2"]}}`), want[:10], nil} {
		if err := os.WriteFile(file, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		reads := store.reads
		if got := readVia(t, blobDir{dir: dir, store: store}, desc); !bytes.Equal(got, want) {
			t.Errorf("with %q in its file: read %q, want %q", bad, got, want)
		}
		if store.reads != reads+1 {
			t.Errorf("with %q in its file the store was read %d times, want 1", bad, store.reads-reads)
		}
		if kept, _ := os.ReadFile(file); !bytes.Equal(kept, want) {
			t.Errorf("with %q in its file: the file holds %q after the read, want the blob", bad, kept)
		}
	}
}

// TestBlobDirKeepsOnlyWhatItShould: a digest that does not validate
// names no file (nothing is written, in the dir or out of it); a blob
// larger than maxDirBlob (a layer) is not kept; the dir holds at most
// maxDirBlobs files.
func TestBlobDirKeepsOnlyWhatItShould(t *testing.T) {
	s := newImageStore(t)
	store := &countingStore{Store: s.store}
	base := t.TempDir()
	dir := filepath.Join(base, "blobs")
	d := blobDir{dir: dir, store: store}
	for _, bad := range []digest.Digest{"sha256:../../escape", "../escape", "sha256:" + digest.Digest(bytes.Repeat([]byte("g"), 64))} {
		if _, err := d.ReaderAt(context.Background(), ocispec.Descriptor{Digest: bad, Size: 5}); err == nil {
			t.Errorf("digest %q: no error", bad)
		}
	}
	if entries, _ := os.ReadDir(base); len(entries) != 0 {
		t.Errorf("bad digests left %v beside the dir", entries)
	}
	big := s.write(ocispec.MediaTypeImageLayer, bytes.Repeat([]byte("x"), maxDirBlob+1))
	readVia(t, d, big)
	readVia(t, d, big)
	if store.reads != 5 {
		t.Errorf("two reads of a blob over maxDirBlob read the store %d times (with the three bad digests), want 5", store.reads)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a blob over maxDirBlob was kept: %v", entries)
	}
	var last ocispec.Descriptor
	for i := range maxDirBlobs + 10 {
		last = s.write(ocispec.MediaTypeImageConfig, []byte(`{"n":`+string(rune('0'+i%10))+`,"i":"`+digest.FromBytes([]byte{byte(i), byte(i >> 8)}).Encoded()+`"}`))
		readVia(t, d, last)
		if entries, _ := os.ReadDir(dir); len(entries) > maxDirBlobs {
			t.Fatalf("after %d blobs the dir holds %d files, want at most %d", i+1, len(entries), maxDirBlobs)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "sha256-"+last.Digest.Encoded())); err != nil {
		t.Errorf("the blob read last is not kept: %v", err)
	}

	// A link in the dir's place, to a full dir of someone's files, and
	// a dir others may write to: nothing kept there, nothing removed.
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.Mkdir(victim, 0o700); err != nil {
		t.Fatal(err)
	}
	for i := range maxDirBlobs + 1 {
		if err := os.WriteFile(filepath.Join(victim, fmt.Sprint("file", i)), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	linked := filepath.Join(base, "linked")
	if err := os.Symlink(victim, linked); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{linked, open} {
		blob := s.write(ocispec.MediaTypeImageConfig, []byte(`{"dir":"`+d+`"}`))
		readVia(t, blobDir{dir: d, store: store}, blob)
	}
	if entries, _ := os.ReadDir(victim); len(entries) != maxDirBlobs+1 {
		t.Errorf("a blob dir linked to a dir of %d files left %d there", maxDirBlobs+1, len(entries))
	}
	if entries, _ := os.ReadDir(open); len(entries) != 0 {
		t.Errorf("a blob dir others may write to got %d files", len(entries))
	}
}

// platformImage is a storedImage whose target is a real manifest, read
// as containerd's image reads it (images.Config, for its platform).
type platformImage struct{ *storedImage }

func (platformImage) Platform() platforms.MatchComparer { return platforms.All }

// TestConfigsDirServesLaterProcesses: a Configs of a later process (empty
// in memory) with the same Dir resolves an image without reading the
// content store, and follows the name to another image all the same.
func TestConfigsDirServesLaterProcesses(t *testing.T) {
	ctx := context.Background()
	s := newImageStore(t)
	store := &countingStore{Store: s.store}
	const name = "docker.io/library/app:v1"
	point := func(env string) {
		cfg := ocispec.Image{Platform: platforms.DefaultSpec(), Config: ocispec.ImageConfig{Env: []string{env}}, RootFS: ocispec.RootFS{Type: "layers", DiffIDs: s.layers}}
		data, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		config := s.write(ocispec.MediaTypeImageConfig, data)
		manifest, err := json.Marshal(ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: config})
		if err != nil {
			t.Fatal(err)
		}
		target := s.write(ocispec.MediaTypeImageManifest, manifest)
		s.names[name] = &storedImage{name: name, target: target, store: store, config: config, reads: &s.reads}
	}
	get := func(ctx context.Context, n string) (client.Image, error) {
		img, err := s.get(ctx, n)
		if err != nil {
			return nil, err
		}
		return platformImage{img.(*storedImage)}, nil
	}
	snapshotsOf := func(string) snapshots.Snapshotter { return &statSnapshotter{} }
	dir := filepath.Join(t.TempDir(), "blobs")
	for _, env := range []string{"MARK=one", "MARK=two"} {
		point(env)
		before := store.reads
		for process := range 3 {
			img, err := resolve(ctx, get, snapshotsOf, name, &Configs{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(img.Config.Env, []string{env}) {
				t.Errorf("process %d: env %q, want [%s]", process+1, img.Config.Env, env)
			}
		}
		// The manifest and the config (images.Config reads the config
		// once more for the manifest's platform: from the dir).
		if got := store.reads - before; got != 2 {
			t.Errorf("three processes resolving the image of %s read %d blobs from the store, want 2 (the first's manifest and config)", env, got)
		}
	}
	if s.reads != 0 {
		t.Errorf("with a Dir the image's own config lookup ran %d times, want 0", s.reads)
	}
}
