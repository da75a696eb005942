package spec

import (
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// socketFilterOptions are the setsockopt options (level SOL_SOCKET) that
// load a classic BPF program into the kernel for a socket. With the BPF
// JIT always on (most distributions' kernels), each program is compiled
// into executable kernel pages: making them read-only splits the huge pages
// of the kernel's direct map for good, and the JIT's memory is one
// host-wide budget (net.core.bpf_jit_limit) that no cgroup or user
// namespace bounds. An outside review moved the host's DirectMap4k by 192
// MiB with one task of 800 filtered sockets, and counted 38 MiB of JIT code
// for 80 MiB of the task's memory: two or three tasks would spend the
// limit, and every unprivileged filter after that (seccomp's, as runc loads
// it for a task in a user namespace) would fail. The eBPF options need a
// program from bpf(2), which the profile refuses anyway.
var socketFilterOptions = []uint32{unix.SO_ATTACH_FILTER, unix.SO_ATTACH_REUSEPORT_CBPF}

// setsockoptRules allow setsockopt(2) but for socketFilterOptions at level
// SOL_SOCKET. seccomp compares a syscall's arguments as 64-bit values while
// the kernel reads level and optname as ints (their low 32 bits), so every
// comparison masks to the low 32 bits: a plain "level != SOL_SOCKET" rule
// would pass a level of 1<<32 | SOL_SOCKET. Rules are ORed and a rule's
// comparisons ANDed, and one rule may compare an argument only once, so
// "any other value" is a set of masked-equal blocks that covers every
// 32-bit value but the refused ones (uint32Except).
func setsockoptRules() []specs.LinuxSyscall {
	rule := func(args ...specs.LinuxSeccompArg) specs.LinuxSyscall {
		return specs.LinuxSyscall{Names: []string{"setsockopt"}, Action: specs.ActAllow, Args: args}
	}
	masked := func(index uint, b maskedBlock) specs.LinuxSeccompArg {
		return specs.LinuxSeccompArg{Index: index, Value: b.mask, ValueTwo: b.value, Op: specs.OpMaskedEqual}
	}
	var rules []specs.LinuxSyscall
	for _, b := range uint32Except(unix.SOL_SOCKET) {
		rules = append(rules, rule(masked(1, b)))
	}
	level := masked(1, maskedBlock{mask: 0xffffffff, value: unix.SOL_SOCKET})
	for _, b := range uint32Except(socketFilterOptions...) {
		rules = append(rules, rule(level, masked(2, b)))
	}
	return rules
}

// maskedBlock is the 32-bit values v with v&mask == value: an aligned
// power-of-two block.
type maskedBlock struct{ mask, value uint64 }

// uint32Except covers every 32-bit value but excluded with the fewest
// aligned blocks: each block that holds no excluded value is taken whole,
// each that holds one is split in halves.
func uint32Except(excluded ...uint32) []maskedBlock {
	var blocks []maskedBlock
	var split func(start uint64, bits uint)
	split = func(start uint64, bits uint) {
		size := uint64(1) << bits
		if !slices.ContainsFunc(excluded, func(v uint32) bool { return uint64(v) >= start && uint64(v) < start+size }) {
			blocks = append(blocks, maskedBlock{mask: 0xffffffff &^ (size - 1), value: start})
			return
		}
		if bits == 0 {
			return // an excluded value
		}
		split(start, bits-1)
		split(start+size/2, bits-1)
	}
	split(0, 32)
	return blocks
}
