/* A stand-in for NVIDIA's libnvidia-ml.so.1, for gpucheck on machines without
 * a GPU: it names the GPUs whose device nodes the calling process can see,
 * as NVML would through the driver. */
#include <stdio.h>
#include <unistd.h>

static const char *uuids[] = {
	"GPU-11111111-1111-1111-1111-111111111111",
	"GPU-22222222-2222-2222-2222-222222222222",
};

int fake_nvml_list(void)
{
	char node[32];
	int seen = 0;
	for (int i = 0; i < (int)(sizeof uuids / sizeof uuids[0]); i++) {
		snprintf(node, sizeof node, "/dev/nvidia%d", i);
		if (access(node, F_OK) == 0) {
			printf("GPU %d: Fake GPU (UUID: %s)\n", seen++, uuids[i]);
		}
	}
	return seen;
}
