#include "textflag.h"

// func int80(nr, a1, a2 uint32) int32
//
// The i386 system call entry point, reached from 64-bit code: eax is the
// i386 syscall number, ebx and ecx its first two arguments; eax comes back
// as the result or -errno. The kernel clears r8-r11 on the way out, which
// ABI0 lets an assembly function clobber.
TEXT ·int80(SB),NOSPLIT,$0-20
	MOVL	nr+0(FP), AX
	MOVL	a1+4(FP), BX
	MOVL	a2+8(FP), CX
	INT	$0x80
	MOVL	AX, ret+16(FP)
	RET
