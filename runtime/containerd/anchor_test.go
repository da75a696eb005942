package containerd

import (
	"os"
	"path/filepath"
	"strings"
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
	dir := t.TempDir() // root's 0700, under /tmp (root's, sticky)
	file := func(name string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := file("nsn-shim", 0o755)
	if got, err := CheckShimBinary(good); err != nil || got != good {
		t.Errorf("root's 0755 file in root's directories: %q %v", got, err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	if got, err := CheckShimBinary(link); err != nil || got != good {
		t.Errorf("a link to a good shim: %q %v, want the file it names, %s", got, err, good)
	}
	if _, err := CheckShimBinary(file("writable", 0o757)); err == nil {
		t.Error("a world-writable shim: accepted")
	}
	other := file("other", 0o755)
	if err := os.Chown(other, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckShimBinary(other); err == nil {
		t.Error("a shim owned by nobody: accepted")
	}
	// Root's file, but in a directory others may write to (not sticky):
	// they could replace it.
	open := file("open/nsn-shim", 0o755)
	if err := os.Chmod(filepath.Dir(open), 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckShimBinary(open); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Errorf("a shim in a world-writable directory: %v, want refused", err)
	}
	// ... or in a directory nobody owns.
	owned := file("owned/nsn-shim", 0o755)
	if err := os.Chown(filepath.Dir(owned), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckShimBinary(owned); err == nil || !strings.Contains(err.Error(), "not owned by root") {
		t.Errorf("a shim in nobody's directory: %v, want refused", err)
	}
	if _, err := CheckShimBinary(dir); err == nil {
		t.Error("a directory: accepted")
	}
	if _, err := CheckShimBinary(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file: accepted")
	}

	// CheckShim: nsn-shim, and the nsn-shimd it runs from beside it.
	if _, err := CheckShim(good); err == nil || !strings.Contains(err.Error(), "nsn-shimd") {
		t.Errorf("nsn-shim without nsn-shimd beside it: %v, want refused, naming nsn-shimd", err)
	}
	daemon := file(ShimDaemonName, 0o757)
	if _, err := CheckShim(good); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Errorf("nsn-shim beside a world-writable nsn-shimd: %v, want refused", err)
	}
	if err := os.Chmod(daemon, 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := CheckShim(link); err != nil || got != good {
		t.Errorf("a link to nsn-shim with nsn-shimd beside it: %q %v, want %s", got, err, good)
	}
}

func TestNewShimGroupChecksItsName(t *testing.T) {
	cfg := Config{InitBinary: "/opt/nsn/nsn-init", ShimBinary: "/opt/nsn/nsn-shim"}
	for name, ok := range map[string]bool{
		"g": true, "nsn-agent_1.0": true, strings.Repeat("g", 32): true,
		"": false, strings.Repeat("g", 33): false, "Agent": false, "-g": false, "g/h": false, "g h": false,
	} {
		cfg.ShimGroup = name
		g, err := newShimGroup(cfg, "nsn-shim", "v2.4.2")
		if ok && (err != nil || !strings.HasPrefix(g.name, name+"-")) {
			t.Errorf("shim group %q: %v, want a group named after it", name, err)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), "want 1-32 of a-z")) {
			t.Errorf("shim group %q: %v, want it refused for its name", name, err)
		}
	}
}
