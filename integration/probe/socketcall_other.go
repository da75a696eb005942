//go:build !amd64

package main

import "golang.org/x/sys/unix"

// hasCompatABI: the i386 int $0x80 entry point and the x32 ABI exist only
// on x86_64; socketcall-32 and x32-getpid report themselves not applicable
// elsewhere.
const hasCompatABI = false

const map32Bit = 0

func forkInt80(nr, a1, a2 uint32, result *int32) (int, unix.Errno) { return 0, unix.ENOSYS }

func forkX32(nr uintptr, result *int32) (int, unix.Errno) { return 0, unix.ENOSYS }
