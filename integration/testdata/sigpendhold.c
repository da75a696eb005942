/* sigpendhold queues real-time signals to itself (blocked, so they stay
 * pending) until the kernel refuses one (at most 200000), prints how many
 * it holds and why the next failed, and holds them until its standard
 * input closes. Pending signals count against RLIMIT_SIGPENDING per user,
 * and in a user namespace against its creator's count too (host root's,
 * for runc's tasks).
 *
 * "sigpendhold once" queues one signal and prints "once: ok" or why not:
 * what host root's own processes do. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGRTMIN);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0) {
		printf("sigprocmask: %s\n", strerror(errno));
		return 1;
	}
	union sigval v = {.sival_int = 0};
	if (argc > 1 && strcmp(argv[1], "once") == 0) {
		if (sigqueue(getpid(), SIGRTMIN, v) < 0) {
			printf("once: %s\n", strerror(errno));
			return 1;
		}
		printf("once: ok\n");
		return 0;
	}
	int n = 0, err = 0;
	while (n < 200000) {
		if (sigqueue(getpid(), SIGRTMIN, v) < 0) {
			err = errno;
			break;
		}
		n++;
	}
	printf("signals=%d errno=%s\n", n, err == EAGAIN ? "EAGAIN" : err ? strerror(err) : "none");
	fflush(stdout);
	char c;
	while (read(0, &c, 1) > 0) {
	}
	return 0;
}
