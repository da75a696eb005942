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
	rules := allowExcept("setsockopt", 1, []uint32{unix.SOL_SOCKET})
	level := maskedArg(1, maskedBlock{mask: 0xffffffff, value: unix.SOL_SOCKET})
	for _, b := range uint32Except(socketFilterOptions...) {
		rules = append(rules, allowRule("setsockopt", level, maskedArg(2, b)))
	}
	return rules
}

// prctlRules allow prctl(2) but for PR_SET_SECCOMP (its option, argument
// 0, masked as setsockoptRules' are). With seccomp(2) refused outright,
// a task cannot load seccomp filters of its own: each is a classic BPF
// program the kernel JIT-compiles, like a socket filter (a third review
// loaded 448 filters of 4090 instructions from one task, 8 MiB of JIT
// code that split 2 MiB of the direct map; a task's 1024 processes could
// spend about a quarter of bpf_jit_limit, and past it runc could not load
// the next task's own filter). A task's own sandboxing code gets EPERM:
// it runs under nsn-run's filter instead.
func prctlRules() []specs.LinuxSyscall {
	return allowExcept("prctl", 0, []uint32{unix.PR_SET_SECCOMP})
}

// hugetlbRules allow mmap(2), memfd_create(2) and shmget(2) but with
// their flag for hugetlb pages (MAP_HUGETLB in mmap's flags, argument 3;
// MFD_HUGETLB in memfd_create's, argument 1; SHM_HUGETLB in shmget's,
// argument 2). hugetlb pages come from the host's pool (vm.nr_hugepages,
// which GPU and HPC nodes reserve) or, with vm.nr_overcommit_hugepages,
// from its free memory, and no task's memory cgroup is charged for them:
// nsn-run sets no hugetlb cgroup limits (many hosts, this project's
// among them, mount no hugetlb controller). An outside review took a
// host's whole reserved pool from a task limited to 8 MiB (host root's
// own mapping then failed with ENOMEM), and held 64 MiB of surplus pages
// from it while its Result said a peak of 3.6 MiB. The flags are single
// bits within the low 32, which the kernel reads as an int, so one masked
// comparison each suffices. Transparent huge pages (madvise) are ordinary
// memory, charged as such, and stay allowed.
func hugetlbRules() []specs.LinuxSyscall {
	// SHM_HUGETLB (linux/shm.h), which x/sys/unix does not define.
	const shmHugeTLB = 0o4000
	return []specs.LinuxSyscall{
		allowRule("mmap", maskedArg(3, maskedBlock{mask: unix.MAP_HUGETLB, value: 0})),
		allowRule("memfd_create", maskedArg(1, maskedBlock{mask: unix.MFD_HUGETLB, value: 0})),
		allowRule("shmget", maskedArg(2, maskedBlock{mask: shmHugeTLB, value: 0})),
	}
}

// socketRules allow socket(2) but for netlink sockets of the user-to-user
// protocol, NETLINK_USERSOCK: the one netlink protocol whose sockets an
// unprivileged process may send to each other, and whose queued messages
// no memory cgroup is charged for (netlink keeps no per-protocol memory
// account). An outside review queued 2 GB of them from a task limited to
// 16 MiB, on both backends: the host's MemAvailable fell by 1994 MB while
// the task's cgroup showed 3 MiB. The other netlink protocols stay (route
// is how getifaddrs lists interfaces, which NCCL's bootstrap needs), and
// with them what a fifteenth review found next: the kernel answers a
// request it refuses with an error that copies the request, and the
// answers queue charged to no one, up to about twice net.core.rmem_max per
// socket (docs/security-model.md, Not protected; doctor reports the
// bound). Family and protocol are ints to the kernel: masked to the low
// 32 bits.
func socketRules() []specs.LinuxSyscall {
	rules := allowExcept("socket", 0, []uint32{unix.AF_NETLINK})
	netlink := maskedArg(0, maskedBlock{mask: 0xffffffff, value: unix.AF_NETLINK})
	for _, b := range uint32Except(unix.NETLINK_USERSOCK) {
		rules = append(rules, allowRule("socket", netlink, maskedArg(2, b)))
	}
	return rules
}

// allowExcept allows syscall name unless the low 32 bits of its argument
// index are one of excluded.
func allowExcept(name string, index uint, excluded []uint32) []specs.LinuxSyscall {
	var rules []specs.LinuxSyscall
	for _, b := range uint32Except(excluded...) {
		rules = append(rules, allowRule(name, maskedArg(index, b)))
	}
	return rules
}

func allowRule(name string, args ...specs.LinuxSeccompArg) specs.LinuxSyscall {
	return specs.LinuxSyscall{Names: []string{name}, Action: specs.ActAllow, Args: args}
}

func maskedArg(index uint, b maskedBlock) specs.LinuxSeccompArg {
	return specs.LinuxSeccompArg{Index: index, Value: b.mask, ValueTwo: b.value, Op: specs.OpMaskedEqual}
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
