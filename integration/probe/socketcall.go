package main

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// i386 system call numbers (arch/x86/entry/syscalls/syscall_32.tbl) and
// socketcall's sub-call and arguments (linux/net.h, linux/socket.h).
const (
	i386Getpid     = 20
	i386Socketcall = 102
	sysSocket      = 1 // socketcall's SYS_SOCKET
	afVsock        = 40
	sockStream     = 1
)

// notWritten marks the result slot before the child runs: no i386 syscall
// returns it (results are fds, pids or -errno).
const notWritten = math.MinInt32

// compatOutcome is how one i386 system call in a forked child ended.
type compatOutcome struct {
	signal unix.Signal // non-zero: the child was killed by it
	ret    int32       // otherwise eax: the result, or -errno
}

func (o compatOutcome) errno() unix.Errno {
	if o.signal == 0 && o.ret < 0 {
		return unix.Errno(-o.ret)
	}
	return 0
}

func (o compatOutcome) String() string {
	switch {
	case o.signal != 0:
		return "killed by " + unix.SignalName(o.signal)
	case o.ret < 0:
		return unix.ErrnoName(o.errno())
	default:
		return fmt.Sprintf("returned %d", o.ret)
	}
}

// compatCall makes one system call in a child that fork starts (forkInt80
// or forkX32), result being a slot in memory the child shares with this
// process, and says how the child ended.
func compatCall(fork func(result *int32) (int, unix.Errno), result *int32) (compatOutcome, error) {
	*result = notWritten
	pid, errno := fork(result)
	if errno != 0 {
		return compatOutcome{}, fmt.Errorf("fork: %w", errno)
	}
	ws, err := wait(pid)
	if err != nil {
		return compatOutcome{}, err
	}
	switch {
	case ws.Signaled():
		return compatOutcome{signal: ws.Signal()}, nil
	case ws.Exited() && ws.ExitStatus() == 0 && *result != notWritten:
		return compatOutcome{ret: *result}, nil
	}
	return compatOutcome{}, fmt.Errorf("child ended with wait status %#x and no result", uint32(ws))
}

// wait reaps child pid.
func wait(pid int) (unix.WaitStatus, error) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("wait4: %w", err)
		}
		return ws, nil
	}
}

// socketcall32 creates a vsock socket through the i386 socketcall
// multiplexer from this 64-bit process: a seccomp profile that lists the
// compat architectures lets socketcall through unfiltered, though its
// native socket rule refuses AF_VSOCK. An i386 getpid first tells "the
// compat entry point is closed" apart from "vsock is refused".
//
// Blocked: the socketcall child was killed (SIGSYS: the filter's bad-arch
// action; SIGSEGV: the kernel has no i386 entry point) or refused with
// EPERM/ENOSYS. Not blocked: an fd, or any other
// errno (EAFNOSUPPORT where the kernel has no vsock): the call reached the
// kernel's socket code past seccomp.
func socketcall32() Report {
	if !hasCompatABI {
		return Report{Blocked: true, Detail: "not applicable: no i386 entry point on " + runtime.GOARCH}
	}
	// socketcall's args pointer is 32 bits wide: the page must lie below
	// 4 GiB. Shared, so the children's results land here too.
	page, err := unix.Mmap(-1, 0, unix.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS|map32Bit)
	if err != nil {
		return Report{Detail: "mmap MAP_32BIT: " + err.Error()}
	}
	defer unix.Munmap(page)
	addr := uintptr(unsafe.Pointer(&page[0]))
	if addr+uintptr(len(page)) > 1<<32 {
		return Report{Detail: fmt.Sprintf("mmap MAP_32BIT gave %#x, above 4 GiB", addr)}
	}
	for i, v := range []uint32{afVsock, sockStream, 0} {
		binary.NativeEndian.PutUint32(page[4*i:], v)
	}
	result := (*int32)(unsafe.Pointer(&page[16]))

	getpid, err := compatCall(func(res *int32) (int, unix.Errno) { return forkInt80(i386Getpid, 0, 0, res) }, result)
	if err != nil {
		return Report{Detail: "i386 getpid: " + err.Error()}
	}
	sock, err := compatCall(func(res *int32) (int, unix.Errno) { return forkInt80(i386Socketcall, sysSocket, uint32(addr), res) }, result)
	if err != nil {
		return Report{Detail: "i386 socketcall: " + err.Error()}
	}
	r := Report{}
	var verdict string
	switch errno := sock.errno(); {
	case sock.signal == unix.SIGSEGV:
		// int $0x80 faulted before any syscall code ran: this kernel
		// (no IA32 emulation, or ia32_emulation=0) has no i386 entry.
		r.Blocked, r.Signal = true, unix.SignalName(sock.signal)
		verdict = "no i386 entry point: int $0x80 faulted (killed by SIGSEGV)"
	case sock.signal != 0:
		r.Blocked, r.Signal = true, unix.SignalName(sock.signal)
		verdict = "blocked: " + sock.String()
	case errno == unix.EPERM || errno == unix.ENOSYS:
		r.Blocked, r.Errno = true, unix.ErrnoName(errno)
		verdict = "blocked: " + r.Errno
	case errno != 0:
		r.Errno = unix.ErrnoName(errno)
		verdict = "reached kernel: " + r.Errno
	default:
		verdict = fmt.Sprintf("ALLOWED: socketcall returned fd %d", sock.ret)
	}
	r.Detail = fmt.Sprintf("i386 socketcall(SYS_SOCKET, AF_VSOCK, SOCK_STREAM): %s; i386 getpid: %s", verdict, getpid)
	return r
}

// x32Getpid makes getpid through the x32 ABI: the x86_64 entry point with
// bit 30 set in the syscall number. seccomp sees architecture x86_64 and
// that number; a libseccomp filter without SCMP_ARCH_X32 gives it the
// bad-architecture action, as it would an i386 call. Unlike int $0x80 it
// needs no i386 entry in the kernel, so it shows that action where the
// i386 one is absent.
//
// Blocked: the child was killed (SIGSYS) or refused with EPERM/ENOSYS
// (ENOSYS is also a kernel without the x32 ABI answering: then the call
// passed seccomp and there was nothing behind it). Not blocked: a pid.
func x32Getpid() Report {
	if !hasCompatABI {
		return Report{Blocked: true, Detail: "not applicable: no x32 ABI on " + runtime.GOARCH}
	}
	page, err := unix.Mmap(-1, 0, unix.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		return Report{Detail: "mmap: " + err.Error()}
	}
	defer unix.Munmap(page)
	o, err := compatCall(func(res *int32) (int, unix.Errno) { return forkX32(unix.SYS_GETPID, res) }, (*int32)(unsafe.Pointer(&page[0])))
	if err != nil {
		return Report{Detail: "x32 getpid: " + err.Error()}
	}
	switch errno := o.errno(); {
	case o.signal != 0:
		return Report{Blocked: true, Signal: unix.SignalName(o.signal), Detail: "x32 getpid: blocked: " + o.String()}
	case errno == unix.EPERM || errno == unix.ENOSYS:
		return Report{Blocked: true, Errno: unix.ErrnoName(errno), Detail: "x32 getpid: blocked: " + o.String()}
	case errno != 0:
		return Report{Errno: unix.ErrnoName(errno), Detail: "x32 getpid: reached kernel: " + o.String()}
	}
	return Report{Detail: "x32 getpid: ALLOWED: " + o.String()}
}
