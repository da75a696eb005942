package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Attacks on what a host uid shares across tasks: per-user kernel counters
// and the host's kernel events. With a user namespace of its own a task's
// counters are its own (the kernel keeps them per user namespace), and the
// kernel sends uevents only to network namespaces its initial user
// namespace owns.

func init() {
	attacks["inotify-one"] = attack{"create one inotify instance", noArg(func() Report {
		fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
		if err == nil {
			unix.Close(fd)
		}
		return errnoReport(err)
	})}
	attacks["uevents"] = attack{"listen for the host's kernel uevents for ARG seconds (default 3)", listenUevents}
	attacks["mq-open"] = attack{"create a POSIX message queue (the kernel charges its bytes to host root too)", noArg(mqOpen)}
}

// holdInotify creates inotify instances until the kernel refuses one,
// prints its report (so a test knows the count is spent), and holds them
// until it is killed.
func holdInotify() {
	n := 0
	var err error
	for n < 1<<20 {
		if _, err = unix.InotifyInit1(unix.IN_CLOEXEC); err != nil {
			break
		}
		n++
	}
	r := errnoReport(err)
	r.Attack = "inotify-hold"
	r.Detail = fmt.Sprintf("holding %d inotify instances; the next: %v", n, err)
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
	// Hold the instances until the task is stopped.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, unix.SIGTERM, unix.SIGINT)
	<-stop
}

// listenUevents counts the kernel uevents that reach the task's network
// namespace in the given time.
func listenUevents(arg string) Report {
	secs := 3
	if arg != "" {
		if n, err := strconv.Atoi(arg); err == nil && n > 0 && n <= 60 {
			secs = n
		}
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return errnoReport(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		return errnoReport(err)
	}
	tv := unix.Timeval{Usec: 100000}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return errnoReport(err)
	}
	buf := make([]byte, 8192)
	var got []string
	for deadline := time.Now().Add(time.Duration(secs) * time.Second); time.Now().Before(deadline); {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return errnoReport(err)
		}
		if header, _, _ := strings.Cut(string(buf[:n]), "\x00"); strings.Contains(header, "@") {
			got = append(got, header)
		}
	}
	if len(got) == 0 {
		return Report{Blocked: true, Detail: fmt.Sprintf("no uevent in %d s", secs)}
	}
	return Report{Blocked: false, Detail: fmt.Sprintf("received %d host uevents, first %q", len(got), got[0])}
}

// mqOpen creates a POSIX message queue of the default size (10 messages of
// 8 KiB) and removes it again.
func mqOpen() Report {
	name, err := unix.BytePtrFromString("nsn-probe-mq")
	if err != nil {
		return errnoReport(err)
	}
	fd, _, errno := unix.Syscall6(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(name)), unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o600, 0, 0, 0)
	if errno != 0 {
		return errnoReport(errno)
	}
	unix.Close(int(fd))
	_, _, _ = unix.Syscall(unix.SYS_MQ_UNLINK, uintptr(unsafe.Pointer(name)), 0, 0)
	return Report{Blocked: false, Detail: "created a message queue"}
}
