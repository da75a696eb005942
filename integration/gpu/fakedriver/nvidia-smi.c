/* A stand-in for nvidia-smi -L: a dynamically linked binary that loads
 * "libnvidia-ml.so.1" by soname at run time, as the real one does, so a
 * rootfs that lacks the C library, the soname link or the library path
 * fails here the way it would with NVIDIA's. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
	if (argc != 2 || strcmp(argv[1], "-L") != 0) {
		fprintf(stderr, "usage: nvidia-smi -L\n");
		return 2;
	}
	void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW);
	if (lib == NULL) {
		fprintf(stderr, "NVIDIA-SMI couldn't find libnvidia-ml.so library: %s\n", dlerror());
		return 12;
	}
	int (*list)(void) = (int (*)(void))dlsym(lib, "fake_nvml_list");
	if (list == NULL) {
		fprintf(stderr, "%s\n", dlerror());
		return 12;
	}
	if (list() == 0) {
		fprintf(stderr, "No devices were found\n");
		return 6;
	}
	return 0;
}
