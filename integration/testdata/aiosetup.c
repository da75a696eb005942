/* aiosetup: takes Linux AIO contexts (io_setup(2)) and prints the host-wide
 * count while it holds them. The count (fs.aio-nr, limit fs.aio-max-nr,
 * 65536 by default) is one for the whole host: no cgroup and no user
 * namespace bounds it, so a task that takes every context leaves every
 * other AIO user on the host with EAGAIN. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/aio_abi.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
	aio_context_t ctx = 0;
	if (syscall(SYS_io_setup, 4096, &ctx) < 0) {
		printf("io_setup: %s\n", strerror(errno));
		return 1;
	}
	char line[64] = "";
	FILE *f = fopen("/proc/sys/fs/aio-nr", "r");
	if (f && fgets(line, sizeof line, f))
		printf("io_setup: ok; host aio-nr %s", line);
	syscall(SYS_io_destroy, ctx);
	return 0;
}
