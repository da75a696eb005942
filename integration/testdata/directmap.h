/* directmap.h: the host's DirectMap4k (/proc/meminfo, kB), which grows as
 * the kernel splits the huge pages of its direct map; -1 if unreadable. */
#include <stdio.h>

static long directmap4k(void) {
	char line[128];
	long kb = -1;
	FILE *f = fopen("/proc/meminfo", "r");
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "DirectMap4k: %ld kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb;
}
