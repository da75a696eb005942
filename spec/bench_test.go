package spec_test

import (
	"context"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/spec/audit"
	"github.com/nsn-run/nsn-run/task"
)

// BenchmarkGenerateAndAudit measures the per-spawn cost of building and
// auditing a spec: it sits on every task's critical path.
func BenchmarkGenerateAndAudit(b *testing.B) {
	ctx := context.Background()
	img := ocispec.ImageConfig{Env: []string{"PATH=/bin"}, User: "1000"}
	ids := task.IDRange{HostID: 1 << 20, Size: task.IDRangeSize}
	for b.Loop() {
		s, err := spec.Generate(ctx, baseTask(), img, spec.Options{OutputDir: outputDir, UserNS: &ids, UserNSSysctls: true})
		if err != nil {
			b.Fatal(err)
		}
		if f := audit.Check(ctx, s, audit.Policy{TasksDir: "/var/lib/nsn-run/tasks"}); len(f) != 0 {
			b.Fatal(f)
		}
	}
}
