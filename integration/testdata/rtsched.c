/* rtsched asks for realtime scheduling (SCHED_FIFO, priority 50), which
 * runs ahead of every normal process on its CPU, and prints the policy
 * the kernel then reports for it, or why it was refused. */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

int main(void) {
	struct sched_param p = {.sched_priority = 50};
	if (sched_setscheduler(0, SCHED_FIFO, &p) < 0) {
		printf("sched_setscheduler: %s\n", strerror(errno));
		return 1;
	}
	printf("policy=%s\n", sched_getscheduler(0) == SCHED_FIFO ? "SCHED_FIFO" : "other");
	return 0;
}
