/* clonens: a raw clone(2) with CLONE_NEWUSER, flags in argument 0 and no
 * new stack in argument 1, as a single-threaded C program can make it (a Go
 * probe cannot: its runtime's own clones pass a stack in argument 1). The
 * child prints its effective capabilities in the new user namespace. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
	long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
	if (pid < 0) {
		printf("clone: %s\n", strerror(errno));
		return 1;
	}
	if (pid == 0) {
		char line[256];
		FILE *f = fopen("/proc/self/status", "r");
		while (f && fgets(line, sizeof line, f))
			if (strncmp(line, "CapEff:", 7) == 0)
				fputs(line, stdout);
		fflush(stdout);
		_exit(0);
	}
	int status;
	waitpid(pid, &status, 0);
	printf("clone: ok\n");
	return 0;
}
