/* seccompfilter: loads seccomp filters of its own, each a classic BPF
 * program the kernel JIT-compiles into executable pages (splitting the
 * host's direct map and spending the host-wide net.core.bpf_jit_limit,
 * as socket filters do). It prints what each way of loading one gets,
 * then loads 4090-instruction allow-all filters until the kernel's
 * per-thread limit and prints how many it holds; other prctl options must
 * keep working. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define N 4090
static struct sock_filter prog[N];

static void report(const char *what, long r) {
	printf("%s: %s\n", what, r == 0 ? "ok" : strerror(errno));
}

int main(void) {
	for (int i = 0; i < N - 1; i++)
		prog[i] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0);
	prog[N - 1] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	struct sock_fprog fp = {.len = N, .filter = prog};
	report("set-name", prctl(PR_SET_NAME, "probe", 0, 0, 0));
	report("no-new-privs", prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
	report("seccomp", syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fp));
	report("prctl-seccomp", prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fp, 0, 0));
	/* The kernel reads the option as an int: the high bits are not its. */
	report("prctl-seccomp-high", syscall(SYS_prctl, (long)((1UL << 32) | PR_SET_SECCOMP), (long)SECCOMP_MODE_FILTER, &fp, 0L, 0L));
	int held = 0;
	while (held < 16 && syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fp) == 0)
		held++;
	printf("held %d more filters\n", held);
	return 0;
}
