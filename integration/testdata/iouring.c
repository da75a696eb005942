/* iouring sets up an io_uring instance (io_uring_setup(2)) and submits one
 * no-op through io_uring_enter(2) without liburing: the kernel's io_uring
 * code, a large and often-exploited attack surface (its own page-cache
 * and file paths, run by kernel workers), reached from the task. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
	struct io_uring_params p;
	memset(&p, 0, sizeof p);
	int fd = syscall(__NR_io_uring_setup, 4, &p);
	if (fd < 0) {
		printf("io_uring_setup: %s\n", strerror(errno));
		return 1;
	}
	size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	char *sq = mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
	struct io_uring_sqe *sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
					 MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
	if (sq == MAP_FAILED || sqes == MAP_FAILED) {
		printf("mmap: %s\n", strerror(errno));
		return 1;
	}
	unsigned *tail = (unsigned *)(sq + p.sq_off.tail), *mask = (unsigned *)(sq + p.sq_off.ring_mask);
	unsigned *array = (unsigned *)(sq + p.sq_off.array);
	unsigned idx = *tail & *mask;
	memset(&sqes[idx], 0, sizeof sqes[idx]);
	sqes[idx].opcode = IORING_OP_NOP;
	array[idx] = idx;
	__atomic_store_n(tail, *tail + 1, __ATOMIC_RELEASE);
	int n = syscall(__NR_io_uring_enter, fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0);
	if (n < 0) {
		printf("io_uring_enter: %s\n", strerror(errno));
		return 1;
	}
	printf("io_uring: ok, %d submitted\n", n);
	return 0;
}
