/* secretmem: maps and touches 64 KiB of memfd_secret(2) memory and prints
 * the host's DirectMap4k (/proc/meminfo) before and after. Each secret
 * page is taken out of the kernel's direct map, splitting the huge page
 * that held it, and the split is never undone: a task repeating it
 * degrades the TLB reach of the whole host until reboot, and no cgroup
 * or user namespace bounds it (RLIMIT_MEMLOCK alone caps one mapping). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "directmap.h"

#ifndef SYS_memfd_secret
#define SYS_memfd_secret 447
#endif

int main(void) {
	long before = directmap4k();
	int fd = syscall(SYS_memfd_secret, 0);
	if (fd < 0) {
		printf("memfd_secret: %s\n", strerror(errno));
		return 1;
	}
	if (ftruncate(fd, 65536) != 0) {
		printf("ftruncate: %s\n", strerror(errno));
		return 1;
	}
	char *p = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		printf("mmap: %s\n", strerror(errno));
		return 1;
	}
	for (int i = 0; i < 65536; i += 4096)
		p[i] = 1;
	printf("memfd_secret: ok; host DirectMap4k %ld kB before, %ld kB after\n", before, directmap4k());
	return 0;
}
