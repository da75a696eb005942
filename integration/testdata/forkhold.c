/* forkhold forks children that wait for their parent's end, until the
 * kernel refuses a fork (at most 200), prints how many it forked and why
 * the next failed, and holds them until its standard input closes. The
 * pids cgroup limit counts the task's processes, RLIMIT_NPROC its uid's. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(void) {
	pid_t self = getpid();
	int n = 0, err = 0;
	while (n < 200) {
		pid_t pid = fork();
		if (pid < 0) {
			err = errno;
			break;
		}
		if (pid == 0) {
			/* The child ends with its parent, whatever ends that. */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != self)
				_exit(0);
			for (;;)
				pause();
		}
		n++;
	}
	printf("forked=%d errno=%s\n", n, err == EAGAIN ? "EAGAIN" : err ? strerror(err) : "none");
	fflush(stdout);
	char c;
	while (read(0, &c, 1) > 0) {
	}
	return 0; /* the children's death signal ends them */
}
