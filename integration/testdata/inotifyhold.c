// inotifyhold creates inotify instances until the kernel refuses one (at
// most 4096), prints how many it holds and why the next failed, and holds
// them until its standard input closes.
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

int main(void) {
	int n = 0, err = 0;
	while (n < 4096) {
		if (inotify_init1(IN_CLOEXEC) < 0) {
			err = errno;
			break;
		}
		n++;
	}
	printf("instances=%d errno=%s\n", n, err == EMFILE ? "EMFILE" : err ? strerror(err) : "none");
	fflush(stdout);
	char c;
	while (read(0, &c, 1) > 0) {
	}
	return 0;
}
