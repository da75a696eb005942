package containerd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"path/filepath"
	"sync"
	"testing"

	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	eventsapi "github.com/containerd/containerd/api/services/events/v1"
	versionapi "github.com/containerd/containerd/api/services/version/v1"
	apitypes "github.com/containerd/containerd/api/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/nsn-run/nsn-run/spec"
	"github.com/nsn-run/nsn-run/task"
)

// createRequest is a container's create as the containerd client sends
// it, with the spec nsn-run generates for a plain task.
func createRequest(t *testing.T) *containersapi.CreateContainerRequest {
	t.Helper()
	ids := task.IDRange{HostID: 1 << 20, Size: task.IDRangeSize}
	s, err := spec.Generate(context.Background(), task.Task{ID: "t1", Image: "busybox:latest", Command: []string{"true"}},
		ocispec.ImageConfig{User: "1000"}, spec.Options{OutputDir: "/var/lib/nsn-run/tasks/t1/output", UserNS: &ids, UserNSSysctls: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return &containersapi.CreateContainerRequest{Container: &containersapi.Container{
		ID: "t1", Image: "busybox:latest", Labels: map[string]string{"nsn-run": "1"},
		Runtime: &containersapi.Container_Runtime{Name: task.DefaultRuntime},
		Spec:    &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Spec", Value: b},
	}}
}

// TestMessageBuffersFitASpec: the reason for protoCodec. gRPC's default
// pool gives a task's container create, whose spec makes it over 32 KiB,
// a 1 MiB buffer; messageBuffers gives it the next power of two.
func TestMessageBuffersFitASpec(t *testing.T) {
	size := proto.Size(createRequest(t))
	if size <= 32<<10 || size > 512<<10 {
		t.Fatalf("a plain task's container create is %d bytes: the test wants one between 32 and 512 KiB", size)
	}
	def := mem.DefaultBufferPool().Get(size)
	defer mem.DefaultBufferPool().Put(def)
	if cap(*def) != 1<<20 {
		t.Errorf("gRPC's default pool gave %d bytes a %d-byte buffer, want 1 MiB (its tiers changed: revisit messageBuffers)", size, cap(*def))
	}
	own := messageBuffers.Get(size)
	defer messageBuffers.Put(own)
	if want := 1 << bits.Len(uint(size-1)); cap(*own) != want {
		t.Errorf("messageBuffers gave %d bytes a %d-byte buffer, want %d", size, cap(*own), want)
	}
}

// TestProtoCodecMatchesGRPCs: protoCodec encodes as gRPC's own proto
// codec does and decodes what it encodes, from one buffer or from
// several (a message that arrived in HTTP/2 frames), small messages and
// pooled ones alike.
func TestProtoCodecMatchesGRPCs(t *testing.T) {
	theirs := encoding.GetCodecV2("proto")
	if theirs == nil || theirs.Name() != (protoCodec{}).Name() {
		t.Fatalf("gRPC's proto codec %v", theirs)
	}
	for name, m := range map[string]proto.Message{
		"small":           &containersapi.GetContainerRequest{ID: "t1"},
		"a spec's create": createRequest(t),
	} {
		t.Run(name, func(t *testing.T) {
			got, err := protoCodec{}.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			defer got.Free()
			want, err := theirs.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			defer want.Free()
			if !bytes.Equal(got.Materialize(), want.Materialize()) {
				t.Fatal("protoCodec's encoding differs from gRPC's")
			}
			whole := got.Materialize()
			var frames mem.BufferSlice
			for len(whole) > 0 {
				n := min(len(whole), 16<<10)
				frames = append(frames, mem.SliceBuffer(whole[:n]))
				whole = whole[n:]
			}
			for _, in := range []mem.BufferSlice{{mem.SliceBuffer(got.Materialize())}, frames} {
				back := m.ProtoReflect().New().Interface()
				if err := (protoCodec{}).Unmarshal(in, back); err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(back, m) {
					t.Errorf("decoded from %d buffers: %v, want %v", len(in), back, m)
				}
			}
		})
	}
	if _, err := (protoCodec{}).Marshal("not a message"); err == nil {
		t.Error("protoCodec encoded a string")
	}
	if err := (protoCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{})}, "not a message"); err == nil {
		t.Error("protoCodec decoded into a string")
	}
}

// versionServer answers containerd's version call and records the
// content type each call came with.
type versionServer struct {
	versionapi.UnimplementedVersionServer
	contentTypes chan []string
}

// echoServer is containerd's containers service that answers a create
// with the container it was sent, and its events service that streams
// one envelope per container it was sent before, each carrying that
// container's spec: messages of a spec's size both ways, on a call and
// on a stream.
type echoServer struct {
	containersapi.UnimplementedContainersServer
	eventsapi.UnimplementedEventsServer
	specs chan *anypb.Any
}

func (s *echoServer) Create(_ context.Context, r *containersapi.CreateContainerRequest) (*containersapi.CreateContainerResponse, error) {
	s.specs <- r.Container.Spec
	return &containersapi.CreateContainerResponse{Container: r.Container}, nil
}

func (s *echoServer) Subscribe(_ *eventsapi.SubscribeRequest, stream eventsapi.Events_SubscribeServer) error {
	for range len(s.specs) {
		if err := stream.Send(&apitypes.Envelope{Namespace: "ns1", Topic: "/containers/create", Event: <-s.specs}); err != nil {
			return err
		}
	}
	return nil
}

// serve serves srv on a unix socket in a test directory: its address.
func serve(t *testing.T, register func(*grpc.Server)) string {
	t.Helper()
	addr := filepath.Join(t.TempDir(), "containerd.sock")
	l, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	register(srv)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return addr
}

// TestDialCarriesSpecs: a connection Dial made sends and receives
// spec-sized messages whole, on calls made at once (each taking and
// giving back pooled buffers) and on a stream.
func TestDialCarriesSpecs(t *testing.T) {
	const callers, each = 8, 4
	echo := &echoServer{specs: make(chan *anypb.Any, callers*each)}
	addr := serve(t, func(srv *grpc.Server) {
		versionapi.RegisterVersionServer(srv, versionServer{contentTypes: make(chan []string, 1)})
		containersapi.RegisterContainersServer(srv, echo)
		eventsapi.RegisterEventsServer(srv, echo)
	})
	c, _, err := dial(context.Background(), addr, "ns1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	conn, ok := c.Conn().(*grpc.ClientConn)
	if !ok {
		t.Fatalf("the client's connection is a %T", c.Conn())
	}
	containers := containersapi.NewContainersClient(conn)
	var wg sync.WaitGroup
	errs := make(chan error, callers*each)
	for i := range callers {
		wg.Go(func() {
			for j := range each {
				req := createRequest(t)
				req.Container.ID = fmt.Sprintf("t%d-%d", i, j)
				resp, err := containers.Create(ctx, req)
				if err != nil {
					errs <- err
					return
				}
				if !proto.Equal(resp.Container, req.Container) {
					errs <- fmt.Errorf("container %s came back changed", req.Container.ID)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	want := createRequest(t).Container.Spec
	stream, err := eventsapi.NewEventsClient(conn).Subscribe(ctx, &eventsapi.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(ev.Event, want) {
			t.Fatalf("event %d carries a spec other than the one sent", n)
		}
		n++
	}
	if n != callers*each {
		t.Errorf("the stream carried %d events, want %d", n, callers*each)
	}
}

func (s versionServer) Version(ctx context.Context, _ *emptypb.Empty) (*versionapi.VersionResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	s.contentTypes <- md.Get("content-type")
	return &versionapi.VersionResponse{Version: "v2.4.2"}, nil
}

// TestDialUsesProtoCodec: the connections Dial makes encode with
// protoCodec: their calls say its name as the content subtype, which
// gRPC's default codec does not send.
func TestDialUsesProtoCodec(t *testing.T) {
	got := versionServer{contentTypes: make(chan []string, 1)}
	addr := serve(t, func(srv *grpc.Server) { versionapi.RegisterVersionServer(srv, got) })

	c, v, err := dial(context.Background(), addr, "ns1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v != "v2.4.2" {
		t.Errorf("version %q", v)
	}
	if ct := <-got.contentTypes; len(ct) != 1 || ct[0] != "application/grpc+proto" {
		t.Errorf("the version call came as %q, want application/grpc+proto (protoCodec's subtype)", ct)
	}
}
