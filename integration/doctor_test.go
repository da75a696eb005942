package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/moby/moby/client"

	"github.com/nsn-run/nsn-run/cgroups"
	"github.com/nsn-run/nsn-run/doctor"
	"github.com/nsn-run/nsn-run/runtime/docker"
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

// TestDoctorDocker: with --backend docker, doctor checks dockerd instead
// of containerd: reachable with its API version, runc among its runtimes,
// and whether it takes CDI device requests (judged from that version).
func TestDoctorDocker(t *testing.T) {
	c := dockerClient(t)
	v, err := c.ServerVersion(context.Background(), client.ServerVersionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "DOCKER_HOST="+os.Getenv(envDockerHost))
	r := runCLIEnv(t, env, "--backend", "docker", "doctor", "--json")
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
	if _, ok := byName["containerd"]; ok {
		t.Error("doctor --backend docker checked containerd")
	}
	if c := byName["dockerd"]; c.Status != doctor.OK || !strings.Contains(c.Detail, "API "+v.APIVersion) {
		t.Errorf("dockerd check = %+v (API %s)", c, v.APIVersion)
	}
	if c := byName["dockerd runtimes"]; c.Status == doctor.Fatal || c.Status == "" {
		t.Errorf("dockerd runtimes check = %+v", c)
	}
	wantCDI := doctor.Warn
	if docker.SupportsCDI(v.APIVersion) {
		wantCDI = doctor.OK
	}
	if c := byName["dockerd CDI"]; c.Status != wantCDI {
		t.Errorf("dockerd CDI check = %+v, want %s for API %s", c, wantCDI, v.APIVersion)
	}
}
