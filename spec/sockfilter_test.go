package spec

import (
	"math/rand/v2"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// allowed evaluates rules as seccomp does (rules ORed, a rule's
// comparisons ANDed) for a syscall's first three 64-bit arguments.
func allowed(rules []specs.LinuxSyscall, arg0, arg1, arg2 uint64) bool {
	args := map[uint]uint64{0: arg0, 1: arg1, 2: arg2}
	for _, r := range rules {
		all := true
		for _, a := range r.Args {
			if a.Op != specs.OpMaskedEqual || args[a.Index]&a.Value != a.ValueTwo {
				all = false
			}
		}
		if all {
			return true
		}
	}
	return false
}

// TestSetsockoptRules: the rules refuse exactly the socket filter options
// at level SOL_SOCKET, as the kernel reads level and optname (the low 32
// bits: a high bit set does not get one past), and allow everything else:
// other SOL_SOCKET options, the same numbers at other levels
// (IPV6_V6ONLY is 26 at IPPROTO_IPV6).
func TestSetsockoptRules(t *testing.T) {
	rules := setsockoptRules()
	refused := [][2]uint64{
		{unix.SOL_SOCKET, unix.SO_ATTACH_FILTER},
		{unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF},
		{1<<32 | unix.SOL_SOCKET, unix.SO_ATTACH_FILTER},
		{unix.SOL_SOCKET, 1<<63 | unix.SO_ATTACH_FILTER},
		{0xffffffff00000000 | unix.SOL_SOCKET, 0xffffffff00000000 | unix.SO_ATTACH_REUSEPORT_CBPF},
	}
	for _, c := range refused {
		if allowed(rules, 0, c[0], c[1]) {
			t.Errorf("setsockopt(level %#x, optname %#x) is allowed", c[0], c[1])
		}
	}
	for _, c := range [][2]uint64{
		{unix.SOL_SOCKET, unix.SO_RCVBUF}, {unix.SOL_SOCKET, unix.SO_REUSEADDR}, {unix.SOL_SOCKET, unix.SO_ATTACH_FILTER - 1},
		{unix.SOL_SOCKET, unix.SO_ATTACH_FILTER + 1}, {unix.SOL_SOCKET, unix.SO_ATTACH_BPF}, {unix.SOL_SOCKET, 0xffffffff},
		{unix.IPPROTO_IPV6, unix.IPV6_V6ONLY}, {unix.IPPROTO_TCP, unix.SO_ATTACH_FILTER}, {0, 0}, {0xffffffff, unix.SO_ATTACH_FILTER},
	} {
		if !allowed(rules, 0, c[0], c[1]) {
			t.Errorf("setsockopt(level %#x, optname %#x) is refused", c[0], c[1])
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		level, opt := uint64(r.Uint32()%64), uint64(r.Uint32()%128)
		if r.IntN(4) == 0 {
			level, opt = r.Uint64(), r.Uint64()
		}
		refuse := uint32(level) == unix.SOL_SOCKET && (uint32(opt) == unix.SO_ATTACH_FILTER || uint32(opt) == unix.SO_ATTACH_REUSEPORT_CBPF)
		if allowed(rules, 0, level, opt) == refuse {
			t.Fatalf("setsockopt(level %#x, optname %#x): allowed %v", level, opt, !refuse)
		}
	}
	if len(rules) > 80 {
		t.Errorf("%d rules", len(rules))
	}
	t.Logf("%d rules", len(rules))
}

// TestPrctlRules: prctl is refused for PR_SET_SECCOMP alone, as the
// kernel reads the option (the low 32 bits), and allowed for every other
// option; seccomp(2) has no rule at all.
func TestPrctlRules(t *testing.T) {
	rules := prctlRules()
	option := func(v uint64) bool { return allowed(rules, v, 0, 0) }
	for _, v := range []uint64{unix.PR_SET_SECCOMP, 1<<32 | unix.PR_SET_SECCOMP, 0xffffffff00000000 | unix.PR_SET_SECCOMP} {
		if option(v) {
			t.Errorf("prctl(%#x) is allowed", v)
		}
	}
	for _, v := range []uint64{unix.PR_SET_NAME, unix.PR_SET_NO_NEW_PRIVS, unix.PR_GET_SECCOMP, unix.PR_SET_CHILD_SUBREAPER, unix.PR_SET_PDEATHSIG, 0, 0xffffffff} {
		if !option(v) {
			t.Errorf("prctl(%#x) is refused", v)
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 100000 {
		v := uint64(r.Uint32() % 64)
		if r.IntN(4) == 0 {
			v = r.Uint64()
		}
		if option(v) == (uint32(v) == unix.PR_SET_SECCOMP) {
			t.Fatalf("prctl(%#x): allowed %v", v, option(v))
		}
	}
	for _, rule := range SeccompProfile().Syscalls {
		if slices.Contains(rule.Names, "seccomp") {
			t.Errorf("a rule allows seccomp(2): %+v", rule)
		}
		if slices.Contains(rule.Names, "prctl") && len(rule.Args) == 0 {
			t.Errorf("a rule allows prctl whole: %v", rule.Names)
		}
	}
}

// TestSocketRules: socket is refused for AF_NETLINK with NETLINK_USERSOCK
// alone, as the kernel reads family and protocol (the low 32 bits), and
// allowed for every other family and netlink protocol.
func TestSocketRules(t *testing.T) {
	rules := socketRules()
	for _, c := range [][2]uint64{
		{unix.AF_NETLINK, unix.NETLINK_USERSOCK}, {1<<32 | unix.AF_NETLINK, unix.NETLINK_USERSOCK}, {unix.AF_NETLINK, 1<<63 | unix.NETLINK_USERSOCK},
	} {
		if allowed(rules, c[0], unix.SOCK_RAW, c[1]) {
			t.Errorf("socket(%#x, SOCK_RAW, %#x) is allowed", c[0], c[1])
		}
	}
	for _, c := range [][2]uint64{
		{unix.AF_NETLINK, unix.NETLINK_ROUTE}, {unix.AF_NETLINK, unix.NETLINK_GENERIC}, {unix.AF_NETLINK, unix.NETLINK_SOCK_DIAG},
		{unix.AF_INET, 0}, {unix.AF_INET6, unix.IPPROTO_UDP}, {unix.AF_UNIX, 0}, {unix.AF_INET, unix.NETLINK_USERSOCK},
	} {
		if !allowed(rules, c[0], unix.SOCK_DGRAM, c[1]) {
			t.Errorf("socket(%#x, SOCK_DGRAM, %#x) is refused", c[0], c[1])
		}
	}
	r := rand.New(rand.NewPCG(5, 6))
	for range 100000 {
		family, protocol := uint64(r.Uint32()%48), uint64(r.Uint32()%32)
		if r.IntN(4) == 0 {
			family, protocol = r.Uint64(), r.Uint64()
		}
		refuse := uint32(family) == unix.AF_NETLINK && uint32(protocol) == unix.NETLINK_USERSOCK
		if allowed(rules, family, unix.SOCK_RAW, protocol) == refuse {
			t.Fatalf("socket(%#x, SOCK_RAW, %#x): allowed %v", family, protocol, !refuse)
		}
	}
	t.Logf("%d rules", len(rules))
}
