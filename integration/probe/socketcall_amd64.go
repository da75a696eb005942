package main

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// hasCompatABI: x86_64 kernels (built with IA32 emulation) also take i386
// system calls, through int $0x80, from a 64-bit process.
const hasCompatABI = true

// map32Bit asks mmap for an address below 4 GiB.
const map32Bit = unix.MAP_32BIT

// int80 makes i386 system call nr with arguments a1, a2 (socketcall_amd64.s).
//
//go:noescape
func int80(nr, a1, a2 uint32) int32

// defaultAction is the kernel's struct sigaction (handler, flags, restorer,
// mask) for SIG_DFL: all zero. A global, so the forked child takes its
// address without allocating.
var defaultAction [4]uintptr

// forkInt80 forks and, in the child, makes i386 system call nr, stores its
// result at *result (shared memory: the parent reads it after the child
// ends) and exits. The parent gets the child's pid.
//
// Why a raw fork and not a re-executed probe: a foreign-architecture syscall
// under runc's filter gets libseccomp's default bad-arch action,
// SECCOMP_RET_KILL_THREAD, and the kernel sends SIGSYS for it only when the
// killed thread is the process's last; in a multi-threaded Go process the
// one thread would vanish silently and the probe hang. The forked child is a
// copy of this one thread. nosplit, and nothing but raw syscalls and int80
// after the fork: the child has no Go runtime to call into. The child
// resets SIGSEGV first: a kernel without the i386 entry point answers
// int $0x80 with a general protection fault, and Go's handler would turn
// that into a stack dump and exit status 2 instead of a plain SIGSEGV.
//
//go:nosplit
func forkInt80(nr, a1, a2 uint32, result *int32) (pid int, errno unix.Errno) {
	r1, _, e := unix.RawSyscall6(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	if r1 != 0 {
		return int(r1), 0
	}
	unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(unix.SIGSEGV), uintptr(unsafe.Pointer(&defaultAction)), 0, 8, 0, 0)
	*result = int80(nr, a1, a2)
	unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
	return 0, 0 // not reached
}

// x32SyscallBit marks an x32 system call on the x86_64 entry point.
const x32SyscallBit = 0x40000000

// forkX32 forks and, in the child, makes x32 system call nr with no
// arguments, stores its result (or -errno) at *result and exits, as
// forkInt80 does.
//
//go:nosplit
func forkX32(nr uintptr, result *int32) (pid int, errno unix.Errno) {
	r1, _, e := unix.RawSyscall6(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	if r1 != 0 {
		return int(r1), 0
	}
	r, _, e := unix.RawSyscall(x32SyscallBit|nr, 0, 0, 0)
	if e != 0 {
		*result = -int32(e)
	} else {
		*result = int32(r)
	}
	unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
	return 0, 0 // not reached
}
