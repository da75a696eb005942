package deps

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/nsn-run/nsn-run"

// nvidiaLinkers are the only packages that may link NVIDIA's code (NVML
// through cgo, nvcdi): the two that need the driver, and the programs and
// tests that wire them in.
var nvidiaLinkers = []string{
	module + "/gpu/cdigen",    // nsn-run gpu cdi-generate: nvcdi over NVML
	module + "/gpu/nvmlusage", // GPU stats over NVML, wired in by the CLI
	module + "/cmd/nsn-run",
	module + "/integration",
	module + "/integration/gpu/gpucheck",
}

// cgoFree is the library a node agent links: it must build with
// CGO_ENABLED=0.
var cgoFree = []string{"./runtime/...", "./spec/...", "./task/...", "./node/...", "./examples/..."}

// goCmd runs the go command in the module root with extra environment.
func goCmd(t *testing.T, env []string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = moduleRoot(t)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	return dir
}

// TestOnlyGPUPackagesLinkNVIDIA: every package of the module, with its
// dependencies (not its tests'), links no github.com/NVIDIA package unless
// it is one of nvidiaLinkers. So `go list -deps ./runtime/docker` (or
// ./runtime/containerd) names none.
func TestOnlyGPUPackagesLinkNVIDIA(t *testing.T) {
	out := goCmd(t, nil, "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, "./...")
	checked := 0
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		pkg, deps := fields[0], fields[1:]
		if slices.Contains(nvidiaLinkers, pkg) {
			continue
		}
		checked++
		var nvidia []string
		for _, d := range deps {
			if strings.HasPrefix(d, "github.com/NVIDIA/") {
				nvidia = append(nvidia, d)
			}
		}
		if len(nvidia) > 0 {
			t.Errorf("%s links NVIDIA's %s: only %s may (move what needs NVML behind an interface the CLI wires in)",
				pkg, strings.Join(nvidia, ", "), strings.Join(nvidiaLinkers, ", "))
		}
	}
	for _, must := range []string{"runtime", "runtime/docker", "runtime/containerd", "gpu", "spec", "task"} {
		if !strings.Contains(string(out), module+"/"+must+" ") {
			t.Errorf("package %s was not listed", must)
		}
	}
	if checked == 0 {
		t.Fatal("no package checked")
	}
}

// TestLibraryBuildsWithoutCgo: CGO_ENABLED=0 go build of the library a node
// agent links succeeds, and none of its non-standard dependencies has cgo
// files (one with an optional cgo part would build, but link C where cgo
// is on).
func TestLibraryBuildsWithoutCgo(t *testing.T) {
	goCmd(t, []string{"CGO_ENABLED=0"}, append([]string{"build"}, cgoFree...)...)
	out := goCmd(t, []string{"CGO_ENABLED=1"}, append([]string{"list", "-deps", "-f", `{{if not .Standard}}{{if .CgoFiles}}{{.ImportPath}}{{end}}{{end}}`}, cgoFree...)...)
	if cgo := strings.Fields(string(out)); len(cgo) > 0 {
		t.Errorf("the library links packages with cgo files: %s", strings.Join(cgo, ", "))
	}
}

// TestShimFrontLinksLittle: nsn-shim, the front containerd runs for every
// task's start and delete, exists to start fast (cmd/nsn-shim): it links
// nothing of containerd, gRPC or protobuf's reflection and registries,
// whose package initialisation is what makes the full shim slow to start.
func TestShimFrontLinksLittle(t *testing.T) {
	out := goCmd(t, []string{"CGO_ENABLED=0"}, "list", "-deps", "./cmd/nsn-shim")
	var heavy []string
	for dep := range strings.Lines(string(out)) {
		dep = strings.TrimSpace(dep)
		for _, prefix := range []string{"github.com/containerd/", "google.golang.org/grpc", "google.golang.org/protobuf/proto", "google.golang.org/protobuf/reflect", "google.golang.org/protobuf/types", "github.com/sirupsen/logrus"} {
			if strings.HasPrefix(dep, prefix) {
				heavy = append(heavy, dep)
			}
		}
	}
	if !strings.Contains(string(out), module+"/internal/shimfront") {
		t.Fatalf("nsn-shim does not link internal/shimfront: the list is not what this test thinks")
	}
	if len(heavy) > 0 {
		t.Errorf("nsn-shim links %s", strings.Join(heavy, ", "))
	}
}

// shimdTags are nsn-shimd's build tags, as the Makefile's SHIMD_TAGS.
const shimdTags = "no_grpc"

// TestShimDaemonLinksNoGRPC: nsn-shimd, a process per task, built with its
// tags (containerd's own for its runc shim), links no gRPC, no net/http,
// no TLS and no template package. The shim serves ttrpc only; gRPC came in
// with the gRPC stubs of containerd's API packages (no_grpc leaves them
// out), net/http and TLS with gRPC, and html/template with gRPC's request
// tracing: its reflection (a method looked up by name) makes the linker
// keep every exported method of every type the binary reaches. nsn-shimd
// was 20.9 MB with all of them, 14.8 without the tracing and 12.0 without
// gRPC, each idle task's shim about 5 MiB less resident in all
// (docs/performance.md).
func TestShimDaemonLinksNoGRPC(t *testing.T) {
	out := goCmd(t, []string{"CGO_ENABLED=0"}, "list", "-tags", shimdTags, "-deps", "./cmd/nsn-shimd")
	if !strings.Contains(string(out), "github.com/containerd/containerd/v2/pkg/shim\n") {
		t.Fatalf("nsn-shimd does not link containerd's shim: the list is not what this test thinks")
	}
	if !strings.Contains(string(out), "github.com/containerd/ttrpc\n") {
		t.Fatalf("nsn-shimd does not link ttrpc: the list is not what this test thinks")
	}
	for dep := range strings.Lines(string(out)) {
		switch dep = strings.TrimSpace(dep); dep {
		case "google.golang.org/grpc", "net/http", "crypto/tls", "text/template", "html/template":
			t.Errorf("nsn-shimd built with -tags %s links %s", shimdTags, dep)
		}
	}
}

// TestShimDaemonBuiltWithItsTags: every build of nsn-shimd in the
// Makefile and the scripts passes its tags, and the places that name the
// tags agree with shimdTags.
func TestShimDaemonBuiltWithItsTags(t *testing.T) {
	root := moduleRoot(t)
	for file, want := range map[string]string{
		"Makefile":                    "SHIMD_TAGS := " + shimdTags + "\n",
		"scripts/lib.sh":              "SHIMD_TAGS=" + shimdTags + "\n",
		"integration/harness_test.go": `"cmd/nsn-shimd": "` + shimdTags + `"`,
	} {
		b, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), want) {
			t.Errorf("%s does not hold %q", file, want)
		}
	}
	builds := 0
	for _, file := range []string{"Makefile", "scripts/bench.sh", "scripts/demo.sh", "scripts/ci.sh", "integration/cgroupv2/run.sh"} {
		b, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(b)) {
			if strings.Contains(line, "build") && strings.Contains(line, "./cmd/nsn-shimd") {
				builds++
				if !strings.Contains(line, "-tags") || !strings.Contains(line, "SHIMD_TAGS") {
					t.Errorf("%s builds nsn-shimd without its tags: %s", file, strings.TrimSpace(line))
				}
			}
		}
	}
	if builds < 3 {
		t.Errorf("found %d builds of nsn-shimd in the Makefile and scripts, want at least 3 (make build, bench, the cgroup v2 VM)", builds)
	}
}

// TestLoggerLinksNoJSONEncoder: nsn-logger, a process per task, writes
// its meta files without encoding/json's encoder (logs.Meta.appendJSON):
// the encoder's reflection made the binary 0.3 MB larger and each logger
// 0.23 MiB more resident (docs/performance.md). A json.Marshal anywhere
// on the logger's path brings it back.
func TestLoggerLinksNoJSONEncoder(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "nsn-logger")
	goCmd(t, nil, "build", "-o", bin, "./cmd/nsn-logger")
	syms := goCmd(t, nil, "tool", "nm", bin)
	if !strings.Contains(string(syms), "github.com/nsn-run/nsn-run/logs.RunShimLogger") {
		t.Fatalf("nsn-logger has no logs.RunShimLogger: the symbols are not what this test thinks")
	}
	for line := range strings.Lines(string(syms)) {
		// ADDRESS TYPE NAME
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		if name := f[2]; name == "encoding/json.Marshal" || strings.HasPrefix(name, "encoding/json.(*encodeState).") {
			t.Errorf("nsn-logger links the JSON encoder: %s", strings.TrimSpace(line))
		}
	}
}
