package integration

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nsn-run/nsn-run/cgroups"
	"github.com/nsn-run/nsn-run/doctor"
)

// TestDoctor: `nsn-run doctor` on this host reports the containerd it
// reaches, this host's runc version with its advisories and this host's
// cgroup layout; with no containerd it is fatal (exit 1).
func TestDoctor(t *testing.T) {
	_, addr := containerdClient(t)
	r := runCLI(t, nil, "doctor", "--json", "--address", addr)
	if r.code != 0 && r.code != 1 {
		t.Fatalf("doctor: exit %d stderr %q", r.code, r.stderr)
	}
	var checks []doctor.Check
	if err := json.Unmarshal([]byte(r.stdout), &checks); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, r.stdout)
	}
	byName := map[string]doctor.Check{}
	for _, c := range checks {
		byName[c.Name] = c
	}
	if c := byName["containerd"]; c.Status != doctor.OK {
		t.Errorf("containerd check = %+v", c)
	}
	out, err := exec.Command(runcPath(t), "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	version := regexp.MustCompile(`runc version (\S+)`).FindSubmatch(out)
	if version == nil {
		t.Fatalf("runc --version: %q", out)
	}
	// Debian's package version, if any: doctor counts its backports when
	// it is this runc's package (no dpkg: none).
	deb, _ := exec.Command("dpkg-query", "-W", "-f=${Version}", "runc").Output()
	want := doctor.RuncAdvisories(string(version[1]), strings.TrimSpace(string(deb)))
	if c := byName["runc"]; c.Status != want.Status || c.Detail != want.Detail {
		t.Errorf("runc check = %+v, want %+v", c, want)
	}
	if c := byName["cgroups"]; c.Status != doctor.OK || !regexp.MustCompile(`^`+cgroups.Mode()+` `).MatchString(c.Detail+" ") {
		t.Errorf("cgroups check = %+v, host mode is %s", c, cgroups.Mode())
	}
	if r.code != 0 {
		t.Errorf("doctor found a fatal problem on the CI host: %s", r.stdout)
	}

	down := runCLI(t, nil, "doctor", "--address", filepath.Join(t.TempDir(), "none.sock"))
	if down.code != 1 || !regexp.MustCompile(`(?m)^fatal\s+containerd`).MatchString(down.stdout) {
		t.Errorf("doctor without containerd: exit %d stdout %q", down.code, down.stdout)
	}
}
