/* mqhold opens POSIX message queues (10 messages of 8192 bytes each, the
 * kernel's default size) until the kernel refuses one (at most 4096),
 * prints how many it holds and why the next failed, and holds them until
 * its standard input closes. Queue bytes count against RLIMIT_MSGQUEUE
 * per user, and in a user namespace against its creator's count too (host
 * root's, for runc's tasks).
 *
 * "mqhold once" opens and removes one queue and prints "once: ok" or why
 * not: what host root's own processes do. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
	struct mq_attr attr = {.mq_maxmsg = 10, .mq_msgsize = 8192};
	char name[64];
	if (argc > 1 && strcmp(argv[1], "once") == 0) {
		snprintf(name, sizeof name, "/mqhold-once-%d", getpid());
		mqd_t q = mq_open(name, O_CREAT | O_EXCL | O_RDWR, 0600, &attr);
		if (q == (mqd_t)-1) {
			printf("once: %s\n", strerror(errno));
			return 1;
		}
		mq_close(q);
		mq_unlink(name);
		printf("once: ok\n");
		return 0;
	}
	int n = 0, err = 0;
	while (n < 4096) {
		snprintf(name, sizeof name, "/mqhold-%d-%d", getpid(), n);
		mqd_t q = mq_open(name, O_CREAT | O_EXCL | O_RDWR, 0600, &attr);
		if (q == (mqd_t)-1) {
			err = errno;
			break;
		}
		n++;
	}
	printf("queues=%d errno=%s\n", n, err == EMFILE ? "EMFILE" : err ? strerror(err) : "none");
	fflush(stdout);
	char c;
	while (read(0, &c, 1) > 0) {
	}
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof name, "/mqhold-%d-%d", getpid(), i);
		mq_unlink(name);
	}
	return 0;
}
