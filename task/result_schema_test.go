package task_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nsn-run/nsn-run/docs"
	"github.com/nsn-run/nsn-run/task"
)

// resultShapes are Results as the Manager gives them back, one of each
// kind `nsn-run run --json` prints.
func resultShapes() map[string]task.Result {
	start := time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)
	base := func(id string, code int, reason task.Reason) task.Result {
		return task.Result{
			ID: id, Image: "docker.io/library/busybox:latest", ExitCode: code, Reason: reason,
			StartedAt: start, FinishedAt: start.Add(1500 * time.Millisecond), DurationMS: 1500,
			OutputFiles: []task.OutputFile{},
			Stats:       task.Stats{PeakMemoryBytes: 4 << 20, CPUUsageSeconds: 0.012, PidsPeak: 1},
			Identity:    &task.Identity{Level: task.IdentityUserNS, Range: &task.IDRange{HostID: 1 << 20, Size: task.IDRangeSize}},
		}
	}
	shapes := map[string]task.Result{}

	ok := base("job-1", 0, task.ReasonExited)
	ok.Stdout = "hello\n"
	shapes["success"] = ok

	oom := base("oom", 137, task.ReasonOOMKilled)
	oom.Stats.OOMKills, oom.Stats.PeakMemoryBytes = 1, 32<<20
	shapes["oom"] = oom

	timeout := base("slow", 124, task.ReasonTimedOut)
	timeout.Stdout, timeout.StdoutTruncated = "head\n[... 1048576 bytes dropped ...]\ntail\n", true
	timeout.Stderr, timeout.StderrTruncated = "\ufffdnot utf-8", true
	shapes["timeout"] = timeout

	cpu := base("busy", 124, task.ReasonCPUTimeExceeded)
	cpu.Stats.CPUUsageSeconds = 2
	shapes["cpu time"] = cpu

	gpu := base("train", 137, task.ReasonGPUMemoryExceeded)
	gpu.Stats.PeakGPUMemoryBytes = 20 << 30
	shapes["gpu stats"] = gpu

	files := base("out", 5, task.ReasonExited)
	files.OutputFiles = []task.OutputFile{
		{Path: "answer", Size: 1, SHA256: "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"},
		{Path: "dir/empty", Size: 0, SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	}
	files.OutputSkipped = []task.SkippedFile{
		{Path: "link", Reason: "symlink"},
		{Path: `"\x1b]0;x\a"`, Reason: "a control character in the name"},
		{Path: "big", Reason: "over the byte cap of 67108864"},
	}
	shapes["output files"] = files

	killed := base("stopped", 137, task.ReasonKilled)
	killed.Identity = &task.Identity{Level: task.IdentityShared} // docker, or user namespaces off
	shapes["killed, shared identity"] = killed

	idmapped := base("mapped", 0, task.ReasonExited)
	idmapped.Identity.Level = task.IdentityIDMapped
	shapes["idmapped"] = idmapped

	bare := base("no-identity", 1, task.ReasonExited) // a record from before identities
	bare.Identity = nil
	shapes["no identity"] = bare

	return shapes
}

// TestResultsMatchSchema: every shape of Result, marshalled as `nsn-run
// run --json` prints it, is valid against docs/result.schema.json.
func TestResultsMatchSchema(t *testing.T) {
	for name, res := range resultShapes() {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := docs.ValidateResult(b); err != nil {
			t.Errorf("%s: %v\n%s", name, err, b)
		}
	}
}

// TestSchemaRejects: the schema holds the Result to something: each of
// these breaks it.
func TestSchemaRejects(t *testing.T) {
	valid, err := json.Marshal(resultShapes()["output files"])
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(m map[string]any){
		"no exit code":       func(m map[string]any) { delete(m, "exit_code") },
		"unknown reason":     func(m map[string]any) { m["reason"] = "exploded" },
		"exit code a string": func(m map[string]any) { m["exit_code"] = "0" },
		"not a time":         func(m map[string]any) { m["started_at"] = "yesterday" },
		"no stats":           func(m map[string]any) { delete(m, "stats") },
		"null output files":  func(m map[string]any) { m["output_files"] = nil },
		"bad sha256": func(m map[string]any) {
			m["output_files"].([]any)[0].(map[string]any)["sha256"] = "ABC"
		},
		"bad id":             func(m map[string]any) { m["id"] = "Job 1" },
		"unknown identity":   func(m map[string]any) { m["identity"].(map[string]any)["level"] = "root" },
		"negative pids peak": func(m map[string]any) { m["stats"].(map[string]any)["pids_peak"] = -1 },
	} {
		var m map[string]any
		if err := json.Unmarshal(valid, &m); err != nil {
			t.Fatal(err)
		}
		edit(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if docs.ValidateResult(b) == nil {
			t.Errorf("%s: the schema accepted %s", name, b)
		}
	}
	// A field the schema does not know yet is fine: callers must tolerate
	// additions.
	var m map[string]any
	if err := json.Unmarshal(valid, &m); err != nil {
		t.Fatal(err)
	}
	m["added_in_a_later_version"] = map[string]any{"x": 1}
	m["stats"].(map[string]any)["new_figure"] = 7
	b, _ := json.Marshal(m)
	if err := docs.ValidateResult(b); err != nil {
		t.Errorf("a Result with fields added later: %v", err)
	}
}

// TestSchemaCoversResult: the schema and task.Result cannot drift apart.
// Every JSON field of the Result and of the types in it is in the schema
// with the JSON type its Go type marshals to, and required exactly when it
// is not omitempty; the schema has no property the Result lacks; every
// object allows additional properties; and the enums list every Reason and
// identity level.
func TestSchemaCoversResult(t *testing.T) {
	var schema map[string]any
	if err := json.Unmarshal(docs.ResultSchema, &schema); err != nil {
		t.Fatalf("docs/result.schema.json: %v", err)
	}
	checkObject(t, "Result", reflect.TypeFor[task.Result](), schema)

	props := schema["properties"].(map[string]any)
	reasons := []task.Reason{task.ReasonExited, task.ReasonOOMKilled, task.ReasonTimedOut, task.ReasonCPUTimeExceeded,
		task.ReasonGPUMemoryExceeded, task.ReasonKilled, task.ReasonFailed}
	checkEnum(t, "reason", props["reason"], reasons)
	level := props["identity"].(map[string]any)["properties"].(map[string]any)["level"]
	checkEnum(t, "identity.level", level, []string{task.IdentityShared, task.IdentityUserNS, task.IdentityIDMapped})
}

func checkEnum[T ~string](t *testing.T, name string, prop any, want []T) {
	t.Helper()
	var got []string
	for _, v := range prop.(map[string]any)["enum"].([]any) {
		got = append(got, v.(string))
	}
	var w []string
	for _, v := range want {
		w = append(w, string(v))
	}
	slices.Sort(got)
	slices.Sort(w)
	if !slices.Equal(got, w) {
		t.Errorf("schema's %s enum %v, want the values task defines: %v", name, got, w)
	}
}

// checkObject compares the struct type typ with the object schema s.
func checkObject(t *testing.T, path string, typ reflect.Type, s map[string]any) {
	t.Helper()
	if s["type"] != "object" {
		t.Errorf("%s: schema type %v, want object", path, s["type"])
	}
	if s["additionalProperties"] != true {
		t.Errorf("%s: the schema must say additionalProperties: true (callers tolerate added fields)", path)
	}
	props, _ := s["properties"].(map[string]any)
	required := map[string]bool{}
	if r, ok := s["required"].([]any); ok {
		for _, n := range r {
			required[n.(string)] = true
		}
	}
	fields := map[string]bool{}
	for f := range typ.Fields() {
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" || f.Anonymous {
			t.Errorf("%s.%s: no json name; give it one (the schema names every field)", path, f.Name)
			continue
		}
		fields[name] = true
		p, ok := props[name].(map[string]any)
		if !ok {
			t.Errorf("%s.%s: JSON field %q is not in docs/result.schema.json", path, f.Name, name)
			continue
		}
		omitted := slices.ContainsFunc(strings.Split(opts, ","), func(o string) bool { return o == "omitempty" || o == "omitzero" })
		if omitted == required[name] {
			t.Errorf("%s.%s: %q is required in the schema: %v, but always present in the JSON: %v", path, f.Name, name, required[name], !omitted)
		}
		checkType(t, path+"."+name, f.Type, p)
	}
	for name := range props {
		if !fields[name] {
			t.Errorf("%s: the schema has %q, which %s does not", path, name, typ)
		}
	}
	for name := range required {
		if !fields[name] {
			t.Errorf("%s: the schema requires %q, which %s does not have", path, name, typ)
		}
	}
}

// checkType compares a field's Go type with its schema: the JSON type it
// marshals to, and, for structs and slices of them, their fields.
func checkType(t *testing.T, path string, typ reflect.Type, s map[string]any) {
	t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	want := ""
	switch {
	case typ == reflect.TypeFor[time.Time]():
		want = "string"
		if s["format"] != "date-time" {
			t.Errorf("%s: a time, without format date-time", path)
		}
	case typ.Kind() == reflect.String:
		want = "string"
	case typ.Kind() == reflect.Bool:
		want = "boolean"
	case typ.Kind() >= reflect.Int && typ.Kind() <= reflect.Uint64:
		want = "integer"
	case typ.Kind() == reflect.Float32 || typ.Kind() == reflect.Float64:
		want = "number"
	case typ.Kind() == reflect.Slice:
		want = "array"
		items, ok := s["items"].(map[string]any)
		if !ok {
			t.Errorf("%s: an array without items", path)
			return
		}
		checkType(t, path+"[]", typ.Elem(), items)
	case typ.Kind() == reflect.Struct:
		checkObject(t, path, typ, s)
		return
	default:
		t.Errorf("%s: Go type %s has no JSON type in this test; add one", path, typ)
		return
	}
	if s["type"] != want {
		t.Errorf("%s: schema type %v, want %s (Go %s)", path, s["type"], want, typ)
	}
}
