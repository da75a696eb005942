/* nlqueue: opens 200 NETLINK_USERSOCK sockets and queues 1 KiB messages
 * to each from one sender socket until the kernel refuses more, then
 * prints the bytes queued. The queued messages are kernel memory that no
 * memory cgroup is charged for, so a task under a small memory limit can
 * hold far more than its limit. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/netlink.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SOCKETS 200

int main(void) {
	int rx[SOCKETS];
	unsigned int ports[SOCKETS];
	for (int i = 0; i < SOCKETS; i++) {
		rx[i] = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_USERSOCK);
		if (rx[i] < 0) {
			printf("netlink-usersock: %s\n", strerror(errno));
			return 0;
		}
		int size = 1 << 20;
		setsockopt(rx[i], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
		struct sockaddr_nl a = {.nl_family = AF_NETLINK};
		socklen_t len = sizeof a;
		if (bind(rx[i], (struct sockaddr *)&a, sizeof a) != 0 || getsockname(rx[i], (struct sockaddr *)&a, &len) != 0) {
			printf("bind: %s\n", strerror(errno));
			return 1;
		}
		ports[i] = a.nl_pid;
	}
	int tx = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_USERSOCK);
	struct sockaddr_nl self = {.nl_family = AF_NETLINK};
	bind(tx, (struct sockaddr *)&self, sizeof self);
	char msg[1024];
	memset(msg, 'x', sizeof msg);
	struct nlmsghdr *h = (struct nlmsghdr *)msg;
	h->nlmsg_len = sizeof msg;
	long long queued = 0;
	for (int i = 0; i < SOCKETS; i++) {
		struct sockaddr_nl to = {.nl_family = AF_NETLINK, .nl_pid = ports[i]};
		while (sendto(tx, msg, sizeof msg, MSG_DONTWAIT, (struct sockaddr *)&to, sizeof to) == sizeof msg)
			queued += sizeof msg;
	}
	printf("netlink-usersock: ok; queued %lld bytes in %d sockets\n", queued, SOCKETS);
	return 0;
}
