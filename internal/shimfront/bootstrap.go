package shimfront

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Params is what `start` uses of containerd's BootstrapParams
// (containerd/api runtime/bootstrap/v1), the protobuf message containerd
// 2.3+ writes to the shim's stdin.
type Params struct {
	InstanceID   string // field 1
	Namespace    string // 2
	LogLevel     int32  // 3, an enum: LOG_LEVEL_DEBUG is -4, TRACE -8
	TTRPCAddress string // 5
	GRPCAddress  string // 6
	// SocketDir (9, optional) is where shim sockets go; "" when unset.
	SocketDir string
	// ShimCgroup is shim_cgroup (3) of the first extension (8) that holds
	// runc's options (containerd.runc.v1.Options), as FindExtension finds
	// it: the cgroup the shim should join.
	ShimCgroup string
}

// LogLevelDebug is LOG_LEVEL_DEBUG: at or below it containerd's start
// also serves a debug socket.
const LogLevelDebug = -4

// runcOptions is the full name of runc's options message: an Any holding
// it has a type URL ending in "/" and this (or equal to it).
const runcOptions = "containerd.runc.v1.Options"

// ParseParams decodes a BootstrapParams message. An error means that
// containerd's own start should see the input: it fails it in its words,
// or it knows something this does not.
func ParseParams(b []byte) (Params, error) {
	var p Params
	if len(b) == 0 {
		return p, errors.New("no bootstrap parameters")
	}
	foundRunc := false
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		var err error
		switch {
		case typ == protowire.BytesType && num == 1:
			p.InstanceID, err = str(v)
		case typ == protowire.BytesType && num == 2:
			p.Namespace, err = str(v)
		case typ == protowire.VarintType && num == 3:
			p.LogLevel = int32(x)
		case typ == protowire.BytesType && num == 5:
			p.TTRPCAddress, err = str(v)
		case typ == protowire.BytesType && num == 6:
			p.GRPCAddress, err = str(v)
		case typ == protowire.BytesType && num == 9:
			p.SocketDir, err = str(v)
		case typ == protowire.BytesType && num == 8:
			cgroup, isRunc, err := shimCgroup(v)
			if isRunc && !foundRunc {
				p.ShimCgroup, foundRunc = cgroup, true
			}
			return err
		case typ == protowire.BytesType && (num == 4 || num == 7):
			_, err = str(v) // containerd's version and binary: unused, but decoded as strings
		case num >= 1 && num <= 9:
			return fmt.Errorf("field %d has wire type %d", num, typ)
		}
		return err
	})
	return p, err
}

// shimCgroup reads an Extension{Any value = 1}: whether its Any holds
// runc's options, and their shim_cgroup.
func shimCgroup(ext []byte) (cgroup string, isRunc bool, err error) {
	var typeURL string
	var value []byte
	err = eachField(ext, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num != 1 {
			return nil
		}
		if typ != protowire.BytesType {
			return fmt.Errorf("extension value has wire type %d", typ)
		}
		// A message field that occurs again merges into the first:
		// each of the Any's scalars keeps its last occurrence.
		return eachField(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
			var err error
			switch {
			case typ == protowire.BytesType && num == 1:
				typeURL, err = str(v)
			case typ == protowire.BytesType && num == 2:
				value = v
			case num == 1 || num == 2:
				err = fmt.Errorf("any field %d has wire type %d", num, typ)
			}
			return err
		})
	})
	if err != nil {
		return "", false, err
	}
	name := typeURL[strings.LastIndex(typeURL, "/")+1:]
	if name != runcOptions {
		return "", false, nil
	}
	// containerd's start decodes the whole message (FindExtension): every
	// length-delimited field of runc's options is a string, which must be
	// UTF-8. A field of another wire type than its own is kept as unknown
	// by protobuf, and so passed over here.
	err = eachField(value, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		s, err := str(v)
		if num == 3 {
			cgroup = s
		}
		return err
	})
	return cgroup, err == nil, err
}

// eachField calls f with every field of the message b: its number, wire
// type, and its bytes (length-delimited) or value (varint, fixed).
func eachField(b []byte, f func(protowire.Number, protowire.Type, []byte, uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		if !num.IsValid() {
			return fmt.Errorf("invalid field number %d", num)
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := f(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

// str is a proto3 string field: valid UTF-8, as protobuf's decoder demands.
func str(v []byte) (string, error) {
	if !utf8.Valid(v) {
		return "", errors.New("string field is not valid UTF-8")
	}
	return string(v), nil
}

// Result encodes the BootstrapResult containerd's runc shim returns:
// version 3, the address, protocol "ttrpc".
func Result(address string) []byte {
	b := protowire.AppendTag(nil, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, 3)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendString(b, address)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	return protowire.AppendString(b, "ttrpc")
}

// StopStatus is containerd's shim.StopStatus: what `delete` reports.
type StopStatus struct {
	Pid        int
	ExitStatus int
	ExitedAt   time.Time
}

// DeleteResponse encodes s as the task API's DeleteResponse (pid 1,
// exit_status 2, exited_at 3: a Timestamp of seconds 1 and nanos 2),
// what `delete` writes to stdout. Zero fields are left out, as protobuf's
// encoder does.
func DeleteResponse(s StopStatus) []byte {
	var b []byte
	if s.Pid != 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(uint32(s.Pid)))
	}
	if s.ExitStatus != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(uint32(s.ExitStatus)))
	}
	var ts []byte
	if sec := s.ExitedAt.Unix(); sec != 0 {
		ts = protowire.AppendTag(ts, 1, protowire.VarintType)
		ts = protowire.AppendVarint(ts, uint64(sec))
	}
	if nanos := s.ExitedAt.Nanosecond(); nanos != 0 {
		ts = protowire.AppendTag(ts, 2, protowire.VarintType)
		ts = protowire.AppendVarint(ts, uint64(int64(int32(nanos))))
	}
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	return protowire.AppendBytes(b, ts)
}
