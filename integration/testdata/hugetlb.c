/* hugetlb: maps one 2 MiB hugetlb page each way a task can ask for one
 * (mmap MAP_HUGETLB, also with bits above the low 32 of its flags set;
 * memfd_create MFD_HUGETLB; shmget SHM_HUGETLB), touches it, and prints
 * "WAY: ok" or the error; then the same calls without the flag, which must
 * keep working, and the host's free hugetlb pages (/proc/meminfo) before
 * and while held. hugetlb pages come from the host's pool, or with
 * vm.nr_overcommit_hugepages from its free memory, and no memory cgroup
 * is charged for them. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <unistd.h>

#define HUGE (2UL << 20)

static long hugefree(void) {
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	long v = -1;
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "HugePages_Free: %ld", &v) == 1)
			break;
	fclose(f);
	return v;
}

static void report(const char *way, void *p) {
	if (p == MAP_FAILED || p == NULL) {
		printf("%s: %s\n", way, strerror(errno));
		return;
	}
	memset(p, 1, 4096);
	printf("%s: ok\n", way);
}

int main(void) {
	long before = hugefree();
	report("mmap-hugetlb", mmap(NULL, HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0));
	report("mmap-hugetlb-high", (void *)syscall(SYS_mmap, NULL, HUGE, PROT_READ | PROT_WRITE,
		(1UL << 32) | MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0));
	int fd = memfd_create("nsn-hugetlb", MFD_HUGETLB);
	if (fd < 0)
		printf("memfd-hugetlb: %s\n", strerror(errno));
	else if (ftruncate(fd, HUGE) != 0)
		printf("memfd-hugetlb: ftruncate: %s\n", strerror(errno));
	else
		report("memfd-hugetlb", mmap(NULL, HUGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
	int id = shmget(IPC_PRIVATE, HUGE, IPC_CREAT | SHM_HUGETLB | 0600);
	if (id < 0) {
		printf("shm-hugetlb: %s\n", strerror(errno));
	} else {
		void *p = shmat(id, NULL, 0);
		shmctl(id, IPC_RMID, NULL);
		report("shm-hugetlb", p == (void *)-1 ? MAP_FAILED : p);
	}
	long held = hugefree();

	report("mmap", mmap(NULL, HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
	fd = memfd_create("nsn-plain", 0);
	printf("memfd: %s\n", fd < 0 ? strerror(errno) : "ok");
	id = shmget(IPC_PRIVATE, 65536, IPC_CREAT | 0600);
	printf("shm: %s\n", id < 0 ? strerror(errno) : "ok");
	if (id >= 0)
		shmctl(id, IPC_RMID, NULL);
	printf("hugepages free: %ld before, %ld held\n", before, held);
	return 0;
}
