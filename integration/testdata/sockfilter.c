/* sockfilter: attaches classic BPF programs to sockets (setsockopt
 * SO_ATTACH_FILTER), which the kernel JIT-compiles into executable pages:
 * each splits huge pages of the host's direct map for good and spends the
 * host-wide net.core.bpf_jit_limit. It prints what each way of attaching
 * gets, then attaches a 4090-instruction program to up to 64 sockets and
 * prints how many held one and the host's DirectMap4k before and after;
 * other socket options must keep working. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "directmap.h"

#define N 4090
static struct sock_filter prog[N];

static void report(const char *what, long r) {
	printf("%s: %s\n", what, r == 0 ? "ok" : strerror(errno));
}

int main(void) {
	for (int i = 0; i < N - 1; i++)
		prog[i] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_IMM, i);
	prog[N - 1] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, 0xffff);
	struct sock_fprog fp = {.len = N, .filter = prog};
	int s = socket(AF_UNIX, SOCK_DGRAM, 0);
	report("attach", setsockopt(s, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof fp));
	/* The kernel reads level as an int: the high bits are not its. */
	report("attach-high-level", syscall(SYS_setsockopt, s, (long)((1UL << 32) | SOL_SOCKET), (long)SO_ATTACH_FILTER, &fp, (long)sizeof fp));
	report("reuseport-cbpf", setsockopt(s, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &fp, sizeof fp));
	int size = 65536;
	report("rcvbuf", setsockopt(s, SOL_SOCKET, SO_RCVBUF, &size, sizeof size));
	int one = 1;
	int s6 = socket(AF_INET6, SOCK_STREAM, 0);
	report("v6only", s6 < 0 ? -1 : setsockopt(s6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one));
	long before = directmap4k();
	int held = 0;
	for (int i = 0; i < 64; i++) {
		int t = socket(AF_UNIX, SOCK_DGRAM, 0);
		if (t < 0 || setsockopt(t, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof fp) != 0)
			break;
		held++;
	}
	printf("held %d filters; host DirectMap4k %ld kB before, %ld kB after\n", held, before, directmap4k());
	return 0;
}
