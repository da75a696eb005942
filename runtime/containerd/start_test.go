package containerd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestRefusesUserNSSysctls: only runc's own refusal of a sysctl the spec
// carries counts; a task whose command or working dir spells the refusal
// (runc quotes both after its own words) does not.
func TestRefusesUserNSSysctls(t *testing.T) {
	ours := map[string]string{"user.max_inotify_instances": "16", "user.max_net_namespaces": "0"}
	for _, c := range []struct {
		name, msg string
		want      bool
	}{
		{"runc 1.1.5 through the shim", `failed to create shim task: OCI runtime create failed: runc create failed: sysctl "user.max_net_namespaces" is not in a separate kernel namespace: unknown`, true},
		{"runc 1.1.5 run", `runc run: exit status 1: time="2026-11-30T08:15:09Z" level=error msg="runc run failed: sysctl \"user.max_net_namespaces\" is not in a separate kernel namespace"`, false},
		{"a key the spec lacks", `OCI runtime create failed: runc create failed: sysctl "user.max_time_namespaces" is not in a separate kernel namespace: unknown`, false},
		{"another sysctl", `OCI runtime create failed: runc create failed: sysctl "net.ipv4.ip_forward" is not in a separate kernel namespace: unknown`, false},
		{"the task's command spells it", `failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: exec: "/x/runc create failed: sysctl \"user.max_net_namespaces\" is not in a separate kernel namespace": stat /x/runc create failed: sysctl "user.max_net_namespaces" is not in a separate kernel namespace: no such file or directory: unknown`, false},
		{"the task's command, unquoted", `OCI runtime create failed: runc create failed: unable to start container process: exec /runc create failed: sysctl "user.max_inotify_instances" is not in a separate kernel namespace: no such file or directory: unknown`, false},
		{"no runc words", `sysctl "user.max_net_namespaces" is not in a separate kernel namespace`, false},
	} {
		if got := RefusesUserNSSysctls(errors.New(c.msg), ours); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestRuncTakesUserNSSysctls: the versions `runc features` reports, as
// the node's runc tells the auditor whether a spec may go without its user
// namespace's limits.
func TestRuncTakesUserNSSysctls(t *testing.T) {
	for _, c := range []struct {
		version string
		want    bool
	}{
		{"1.1.5+ds1", false}, // Debian bookworm's
		{"1.3.9", false},
		{"1.4.0-rc.1", true},
		{"1.4.0", true},
		{"1.5.3", true},
		{"2.0.0", true},
		{"", true}, // says nothing: the limits are required
		{"garbage", true},
	} {
		if got := RuncTakesUserNSSysctls(c.version); got != c.want {
			t.Errorf("%q: %v, want %v", c.version, got, c.want)
		}
	}
}

// TestKnownVersion: a containerd whose version does not read (a fake
// socket answering "devel", an outside review's) does not relax the
// auditor.
func TestKnownVersion(t *testing.T) {
	for v, want := range map[string]bool{
		"v2.4.2": true, "1.6.20~ds1": true, "v2.2.0": true, "2.4.0-rc.1": true, "2.4.2+unknown": true,
		// The review's second round: each of these read as older than 2.3.
		"devel": false, "": false, "v": false, "2.3beta": false, "2.1e1": false, " 2.4": false, "v 2.4": false,
	} {
		if got := knownVersion(v); got != want {
			t.Errorf("knownVersion(%q) = %v, want %v", v, got, want)
		}
	}
	// A known version is read as it says: 2.4-rc.1 is 2.4, not 2.0.
	for v, want := range map[string]bool{"2.4-rc.1": true, "v2.3.0": true, "v2.2.9": false, "1.7.0": false} {
		if got := UserNSLimitsInSpec(v); got != want {
			t.Errorf("UserNSLimitsInSpec(%q) = %v, want %v", v, got, want)
		}
	}
}

// TestIdmapMountRecord: a Backend that saw an idmapped snapshot mount
// records it for this boot, and another Backend of the same containerd and
// snapshotter takes it without probing; a record of another boot, another
// containerd, a link, one in a dir others may write, or none at all counts
// for nothing. The records stay bounded, and the earlier layout's files in
// ProbeDir itself are removed.
func TestIdmapMountRecord(t *testing.T) {
	if bootID() == "" {
		t.Skip("no boot id")
	}
	dir := t.TempDir()
	newBackend := func(uuid string) *Backend {
		return &Backend{cfg: Config{ProbeDir: dir, Snapshotter: "overlayfs"}, serverUUID: uuid}
	}
	records := filepath.Join(dir, idmapMountsDir)
	legacy := filepath.Join(dir, "idmap-mounts-0124bd06-f058-4761-b7c6-949fff111b1b-overlayfs")
	if err := os.WriteFile(legacy, []byte(bootID()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	first := newBackend("c1")
	if first.idmapMountWorked() {
		t.Fatal("a record before any was written")
	}
	first.recordIdmapMountWorks(context.Background())
	if second := newBackend("c1"); !second.idmapMountWorked() || !second.idmapMountWorks {
		t.Error("a second Backend of the same containerd did not take the record")
	}
	if _, err := os.Lstat(legacy); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the earlier layout's record is still there: %v", err)
	}
	if other := newBackend("c2"); other.idmapMountWorked() {
		t.Error("another containerd took the record")
	}
	record := filepath.Join(records, first.idmapMountRecord())
	if err := os.WriteFile(record, []byte("another-boot\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if later := newBackend("c1"); later.idmapMountWorked() {
		t.Error("a record of another boot counted")
	}
	// A link to a file that says this boot is not a record.
	target := filepath.Join(t.TempDir(), "boot")
	if err := os.WriteFile(target, []byte(bootID()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(record); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, record); err != nil {
		t.Fatal(err)
	}
	if linked := newBackend("c1"); linked.idmapMountWorked() {
		t.Error("a link in the record's place counted")
	}
	if err := os.Remove(record); err != nil {
		t.Fatal(err)
	}
	first.recordIdmapMountWorks(context.Background())
	if err := os.Chmod(records, 0o777); err != nil {
		t.Fatal(err)
	}
	if open := newBackend("c1"); open.idmapMountWorked() {
		t.Error("a record in a world-writable dir counted")
	}
	if err := os.Chmod(records, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if open := newBackend("c1"); open.idmapMountWorked() {
		t.Error("a record under a world-writable ProbeDir counted")
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, b := range []*Backend{
		{cfg: Config{Snapshotter: "overlayfs"}, serverUUID: "c1"},
		{cfg: Config{ProbeDir: dir, Snapshotter: "overlayfs"}},
		{cfg: Config{ProbeDir: dir, Snapshotter: "../overlayfs"}, serverUUID: "c1"},
	} {
		b.recordIdmapMountWorks(context.Background())
		if b.idmapMountWorked() {
			t.Errorf("a Backend of ProbeDir %q, UUID %q and snapshotter %q took a record", b.cfg.ProbeDir, b.serverUUID, b.cfg.Snapshotter)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "overlayfs")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a snapshotter's name led a record out of its dir: %v", err)
	}
	// Bounded: a record per containerd, each test's private one new.
	for i := range 3 * maxIdmapMountRecords {
		newBackend(fmt.Sprintf("u%d", i)).recordIdmapMountWorks(context.Background())
	}
	entries, err := os.ReadDir(records)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 || len(entries) > maxIdmapMountRecords {
		t.Errorf("%d records after %d containerds, want 1 to %d", len(entries), 3*maxIdmapMountRecords, maxIdmapMountRecords)
	}
	if last := newBackend(fmt.Sprintf("u%d", 3*maxIdmapMountRecords-1)); !last.idmapMountWorked() {
		t.Error("the last record written is not there")
	}
}
