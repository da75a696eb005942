// Command nsn-probe runs inside an nsn-run container and tries one named
// attack per invocation, reporting what happened as one JSON object. It is
// built static (CGO_ENABLED=0) and packed into test and demo images by our
// own image builder. `nsn-probe all` runs every attack, one JSON line each.
// Two workloads serve the limit tests: `alloc MB` touches MB mebibytes of
// memory and reports, `spin SECONDS` keeps one CPU busy for that long.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Report is what one attack did. Blocked is the verdict: the attack got
// nothing. Errno names the error the kernel returned, if any.
type Report struct {
	Attack  string `json:"attack"`
	Blocked bool   `json:"blocked"`
	Errno   string `json:"errno,omitempty"`
	Detail  string `json:"detail,omitempty"`
}

type attack struct {
	what string
	run  func() Report
}

var attacks = map[string]attack{
	"identity":    {"runs as non-root with no capabilities, no_new_privs and seccomp", identity},
	"write-root":  {"write a file in /", func() Report { return errnoReport(os.WriteFile("/pwned", []byte("x"), 0o644)) }},
	"write-etc":   {"append to /etc/passwd", writeEtc},
	"mount":       {"mount a tmpfs", func() Report { return errnoReport(unix.Mount("none", "/tmp", "tmpfs", 0, "")) }},
	"unshare-net": {"create a network namespace", func() Report { return errnoReport(unix.Unshare(unix.CLONE_NEWNET)) }},
	"unshare-user": {"create a user namespace", func() Report {
		return errnoReport(unix.Unshare(unix.CLONE_NEWUSER))
	}},
	"network": {"connect to 1.1.1.1:53 over TCP", func() Report {
		conn, err := net.DialTimeout("tcp", "1.1.1.1:53", 2*time.Second)
		if err == nil {
			conn.Close()
		}
		return errnoReport(err)
	}},
	"mknod": {"create a block device node", func() Report {
		return errnoReport(unix.Mknod("/tmp/sda", unix.S_IFBLK|0o600, int(unix.Mkdev(8, 0))))
	}},
	"exec-tmp": {"run a binary copied to /tmp", execTmp},
}

func main() {
	if len(os.Args) == 3 {
		workload(os.Args[1], os.Args[2])
		return
	}
	if len(os.Args) != 2 {
		usage()
	}
	name := os.Args[1]
	if name == "all" {
		names := make([]string, 0, len(attacks))
		for n := range attacks {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			emit(run(n))
		}
		return
	}
	if _, ok := attacks[name]; !ok {
		usage()
	}
	emit(run(name))
}

// workload runs alloc or spin.
func workload(name, arg string) {
	n, err := strconv.Atoi(arg)
	if err != nil || n < 0 {
		usage()
	}
	switch name {
	case "alloc":
		// Touch every page so the memory is really charged to the cgroup.
		var keep [][]byte
		for i := 0; i < n; i++ {
			b := make([]byte, 1<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
		}
		fmt.Printf("allocated %d MiB\n", len(keep))
	case "spin":
		end := time.Now().Add(time.Duration(n) * time.Second)
		x := 0
		for time.Now().Before(end) {
			x++
		}
		fmt.Printf("spun %d s\n", n)
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: nsn-probe ATTACK|all\n       nsn-probe alloc MB | spin SECONDS")
	for n, a := range attacks {
		fmt.Fprintf(os.Stderr, "  %-13s %s\n", n, a.what)
	}
	os.Exit(2)
}

func run(name string) Report {
	r := attacks[name].run()
	r.Attack = name
	return r
}

func emit(r Report) {
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
}

// errnoReport judges an attack by its error: any error blocks it.
func errnoReport(err error) Report {
	if err == nil {
		return Report{Blocked: false, Detail: "succeeded"}
	}
	r := Report{Blocked: true, Detail: err.Error()}
	var errno unix.Errno
	if errors.As(err, &errno) {
		r.Errno = unix.ErrnoName(errno)
	}
	return r
}

func writeEtc() Report {
	f, err := os.OpenFile("/etc/passwd", os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err == nil {
		f.Close()
	}
	return errnoReport(err)
}

func execTmp() Report {
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		return Report{Blocked: false, Detail: "cannot read own binary: " + err.Error()}
	}
	if err := os.WriteFile("/tmp/probe-copy", self, 0o755); err != nil {
		return Report{Blocked: false, Detail: "cannot write /tmp: " + err.Error()}
	}
	return errnoReport(unix.Exec("/tmp/probe-copy", []string{"probe-copy", "identity"}, nil))
}

// identity reads the process's credentials and security state from
// /proc/self/status.
func identity() Report {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return Report{Detail: err.Error()}
	}
	fields := map[string]string{}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	uid := strings.Fields(fields["Uid"])
	gid := strings.Fields(fields["Gid"])
	detail := fmt.Sprintf("uid=%s gid=%s CapEff=%s CapPrm=%s CapBnd=%s CapAmb=%s NoNewPrivs=%s Seccomp=%s",
		first(uid), first(gid), fields["CapEff"], fields["CapPrm"], fields["CapBnd"], fields["CapAmb"], fields["NoNewPrivs"], fields["Seccomp"])
	zero := "0000000000000000"
	blocked := first(uid) != "0" && first(gid) != "0" &&
		fields["CapEff"] == zero && fields["CapPrm"] == zero && fields["CapBnd"] == zero && fields["CapAmb"] == zero &&
		fields["NoNewPrivs"] == "1" && fields["Seccomp"] == "2"
	return Report{Blocked: blocked, Detail: detail}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}
