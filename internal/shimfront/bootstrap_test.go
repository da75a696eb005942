package shimfront

import (
	"testing"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	shimapi "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func anyOf(t *testing.T, m proto.Message) *bootapi.Extension {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return &bootapi.Extension{Value: a}
}

// TestParseParams: what containerd writes (its generated message,
// marshalled by protobuf) reads back field by field, and the shim cgroup
// is the one FindExtension (containerd's start) finds.
func TestParseParams(t *testing.T) {
	dir := "/run/x/s"
	first := &options.Options{ShimCgroup: "/first", Root: "/r", BinaryName: "/usr/bin/runc"}
	full := &bootapi.BootstrapParams{
		InstanceID: "task1", Namespace: "ns1", LogLevel: bootapi.LogLevel_LOG_LEVEL_DEBUG,
		ContainerdVersion: "2.4.2", ContainerdTtrpcAddress: "/run/c.sock.ttrpc", ContainerdGrpcAddress: "/run/c.sock",
		ContainerdBinary: "/usr/bin/containerd", SocketDir: &dir,
		Extensions: []*bootapi.Extension{anyOf(t, &types.Platform{OS: "linux"}), anyOf(t, first), anyOf(t, &options.Options{ShimCgroup: "/second"})},
	}
	var found options.Options
	if ok, err := full.FindExtension(&found); !ok || err != nil || found.ShimCgroup != "/first" {
		t.Fatalf("containerd's FindExtension: %v %v %q", ok, err, found.ShimCgroup)
	}
	for name, c := range map[string]struct {
		in   *bootapi.BootstrapParams
		want Params
	}{
		"full":    {full, Params{InstanceID: "task1", Namespace: "ns1", LogLevel: -4, TTRPCAddress: "/run/c.sock.ttrpc", GRPCAddress: "/run/c.sock", SocketDir: dir, ShimCgroup: "/first"}},
		"minimal": {&bootapi.BootstrapParams{InstanceID: "t", Namespace: "n", LogLevel: bootapi.LogLevel_LOG_LEVEL_WARN}, Params{InstanceID: "t", Namespace: "n", LogLevel: 4}},
		"trace":   {&bootapi.BootstrapParams{InstanceID: "t", Namespace: "n", LogLevel: bootapi.LogLevel_LOG_LEVEL_TRACE}, Params{InstanceID: "t", Namespace: "n", LogLevel: -8}},
	} {
		b, err := proto.Marshal(c.in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseParams(b)
		if err != nil || got != c.want {
			t.Errorf("%s: %+v %v, want %+v", name, got, err, c.want)
		}
	}

	good, err := proto.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	// Input containerd's decoder refuses is refused here too (nsn-shimd
	// then fails it in containerd's words).
	for name, in := range map[string][]byte{
		"empty":                      nil,
		"truncated":                  good[:len(good)-3],
		"bad utf-8":                  append([]byte{0x0a, 2, 0xff, 0xfe}, good...),
		"bad tag":                    {0x00},
		"wrong type for instance_id": {0x08, 1},
	} {
		if _, err := ParseParams(in); err == nil {
			t.Errorf("%s: no error", name)
		}
		if len(in) > 0 && name != "wrong type for instance_id" {
			if err := proto.Unmarshal(in, &bootapi.BootstrapParams{}); err == nil {
				t.Errorf("%s: protobuf decodes it; the test input is no bad input", name)
			}
		}
	}
}

// TestParseParamsAsProtobuf: input protobuf's decoder accepts in a way a
// hand decoder may miss gives what containerd's start finds, and what its
// FindExtension refuses is refused.
func TestParseParamsAsProtobuf(t *testing.T) {
	runcURL := "type.googleapis.com/containerd.runc.v1.Options"
	cg, err := proto.Marshal(&options.Options{ShimCgroup: "/cg"})
	if err != nil {
		t.Fatal(err)
	}
	head, err := proto.Marshal(&bootapi.BootstrapParams{InstanceID: "t", Namespace: "n"})
	if err != nil {
		t.Fatal(err)
	}
	ext := func(anyBody []byte) []byte {
		e := protowire.AppendTag(nil, 1, protowire.BytesType)
		e = protowire.AppendBytes(e, anyBody)
		b := protowire.AppendTag(nil, 8, protowire.BytesType)
		return protowire.AppendBytes(b, e)
	}
	anyField := func(num protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v)
	}
	// One Extension whose Any comes in two pieces: protobuf merges them.
	e := protowire.AppendTag(nil, 1, protowire.BytesType)
	e = protowire.AppendBytes(e, anyField(1, []byte(runcURL)))
	e = protowire.AppendTag(e, 1, protowire.BytesType)
	e = protowire.AppendBytes(e, anyField(2, cg))
	merged := append(append([]byte{}, head...), protowire.AppendBytes(protowire.AppendTag(nil, 8, protowire.BytesType), e)...)

	badName := protowire.AppendBytes(protowire.AppendTag(nil, 6, protowire.BytesType), []byte{0xff})
	badOptions := append(append([]byte{}, head...), ext(append(anyField(1, []byte(runcURL)), anyField(2, badName)...))...)

	bigField := append(append([]byte{}, head...), protowire.AppendVarint(protowire.AppendTag(nil, protowire.MaxValidNumber+1, protowire.VarintType), 1)...)

	for name, c := range map[string]struct {
		in     []byte
		cgroup string
		bad    bool
	}{
		"merged any":                {in: merged, cgroup: "/cg"},
		"runc options, bad utf-8":   {in: badOptions, bad: true},
		"field number out of range": {in: bigField, bad: true},
	} {
		var want bootapi.BootstrapParams
		err := proto.Unmarshal(c.in, &want)
		if err == nil {
			var o options.Options
			_, err = want.FindExtension(&o)
			if err == nil && o.ShimCgroup != c.cgroup {
				t.Fatalf("%s: containerd finds shim cgroup %q; the test expects %q", name, o.ShimCgroup, c.cgroup)
			}
		}
		if (err != nil) != c.bad {
			t.Fatalf("%s: containerd's decoding: %v; the test expects bad=%v", name, err, c.bad)
		}
		got, err := ParseParams(c.in)
		if c.bad && err == nil {
			t.Errorf("%s: no error, where containerd's start fails", name)
		}
		if !c.bad && (err != nil || got.ShimCgroup != c.cgroup) {
			t.Errorf("%s: shim cgroup %q (%v), containerd's %q", name, got.ShimCgroup, err, c.cgroup)
		}
	}
}

// TestResult: containerd decodes the start's answer as the runc shim's.
func TestResult(t *testing.T) {
	var got bootapi.BootstrapResult
	if err := proto.Unmarshal(Result("unix:///run/containerd/s/abc"), &got); err != nil {
		t.Fatal(err)
	}
	want := &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc", Address: "unix:///run/containerd/s/abc"}
	if !proto.Equal(&got, want) {
		t.Errorf("decoded %v, want %v", &got, want)
	}
}

// TestDeleteResponse: containerd decodes the delete's answer as what the
// shim's own encoding of the same status gives.
func TestDeleteResponse(t *testing.T) {
	for _, s := range []StopStatus{
		{Pid: 42, ExitStatus: 3, ExitedAt: time.Date(2026, 11, 30, 5, 0, 0, 123456789, time.UTC)},
		{Pid: 0, ExitStatus: 137, ExitedAt: time.Now()},
		{Pid: 7, ExitStatus: 0, ExitedAt: time.Unix(1764479000, 0)},
		{ExitedAt: time.Unix(0, 5)},
	} {
		want := &shimapi.DeleteResponse{Pid: uint32(s.Pid), ExitStatus: uint32(s.ExitStatus), ExitedAt: protobuf.ToTimestamp(s.ExitedAt)}
		var got shimapi.DeleteResponse
		if err := proto.Unmarshal(DeleteResponse(s), &got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&got, want) {
			t.Errorf("%+v: decoded %v, want %v", s, &got, want)
		}
		wantBytes, err := proto.MarshalOptions{Deterministic: true}.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		if string(wantBytes) != string(DeleteResponse(s)) {
			t.Errorf("%+v: % x, protobuf's encoding % x", s, DeleteResponse(s), wantBytes)
		}
	}
}
