package containerd

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// messageBuffers holds the whole messages nsn-run's connections to
// containerd send and receive: gRPC's default tiers (256 B, 4, 16 and 32
// KiB, 1 MiB) with the powers of two from 64 to 512 KiB between. gRPC's
// own proto codec takes each message's buffer from its process-wide pool,
// the next tier up, and a task's spec is about 35 KB of JSON (most of it
// the seccomp profile): its container's create and containerd's reply,
// which holds the spec again, each took a 1 MiB buffer, which the pool
// lets go at the next collections. In the bench's manager that made half
// its heap's growth over ten task starts (docs/performance.md, levers).
var messageBuffers = func() mem.BufferPool {
	pool, err := mem.NewBinaryTieredBufferPool(8, 12, 14, 15, 16, 17, 18, 19, 20)
	if err != nil {
		panic(err) // constant tiers, all below the word size
	}
	return pool
}()

// protoCodec is gRPC's proto codec (google.golang.org/grpc/encoding/proto)
// with messageBuffers for its pool. It is set on nsn-run's connections
// only (forceProtoCodec), not process-wide: a node agent linking nsn-run
// keeps gRPC's defaults for its own connections.
type protoCodec struct{}

// forceProtoCodec is the call option that makes protoCodec a
// connection's codec; the content subtype it sends, "proto", is the one
// containerd's server decodes with its own proto codec.
var forceProtoCodec = grpc.ForceCodecV2(protoCodec{})

func (protoCodec) Name() string { return "proto" }

func (protoCodec) Marshal(v any) (mem.BufferSlice, error) {
	m := messageOf(v)
	if m == nil {
		return nil, fmt.Errorf("proto: failed to marshal, message is %T, want proto.Message", v)
	}
	// The size first, so that the marshal can use the size it cached.
	size := proto.Size(m)
	opts := proto.MarshalOptions{UseCachedSize: true}
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := opts.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := messageBuffers.Get(size)
	if _, err := opts.MarshalAppend((*buf)[:0], m); err != nil {
		messageBuffers.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, messageBuffers)}, nil
}

func (protoCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m := messageOf(v)
	if m == nil {
		return fmt.Errorf("proto: failed to unmarshal, message is %T, want proto.Message", v)
	}
	buf := data.MaterializeToBuffer(messageBuffers)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// messageOf is v as a protobuf message (APIv2), nil if it is none.
func messageOf(v any) proto.Message {
	switch v := v.(type) {
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(v)
	case protoadapt.MessageV2:
		return v
	}
	return nil
}
