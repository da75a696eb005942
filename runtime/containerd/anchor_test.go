package containerd

import (
	"os"
	"path/filepath"
	"testing"
)

func TestAtLeast(t *testing.T) {
	for v, want := range map[string]bool{
		"v2.4.2": true, "2.3.0": true, "v2.3.0-rc.1": true, "v3.0.0": true,
		"v2.2.9": false, "2.0.0": false, "1.6.20~ds1": false, "1.7.27": false, "": false, "v2": false,
	} {
		if got := atLeast(v, 2, 3); got != want {
			t.Errorf("atLeast(%q, 2, 3) = %v, want %v", v, got, want)
		}
	}
}

func TestCheckShimBinary(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the files must be root's")
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "nsn-shim")
	if err := os.WriteFile(good, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := checkShimBinary(good); err != nil {
		t.Errorf("root's 0755 file: %v", err)
	}
	writable := filepath.Join(dir, "writable")
	if err := os.WriteFile(writable, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(writable, 0o757); err != nil {
		t.Fatal(err)
	}
	if err := checkShimBinary(writable); err == nil {
		t.Error("a world-writable shim: accepted")
	}
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(other, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := checkShimBinary(other); err == nil {
		t.Error("a shim owned by nobody: accepted")
	}
	if err := checkShimBinary(dir); err == nil {
		t.Error("a directory: accepted")
	}
	if err := checkShimBinary(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file: accepted")
	}
}
