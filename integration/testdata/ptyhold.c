/* ptyhold: opens pseudo-terminals (/dev/ptmx) until it has 64 or the
 * kernel refuses one, and prints how many it held and why it stopped.
 * Every devpts instance but the host's draws on one host-wide count
 * (kernel.pty.max less kernel.pty.reserve). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

int main(void) {
	int n = 0;
	const char *why = "cap";
	for (; n < 64; n++) {
		if (open("/dev/ptmx", O_RDWR | O_NOCTTY) < 0) {
			why = strerror(errno);
			break;
		}
	}
	printf("ptys: %d (%s)\n", n, why);
	return 0;
}
