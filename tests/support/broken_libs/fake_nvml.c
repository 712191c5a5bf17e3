/* A stand-in for libnvidia-ml.so.1 that misbehaves or lies the way broken drivers do.
 *
 * Built by tests/support/native_fakes.py with gcc; -D flags pick the behaviour:
 *   CALL_SEGV         nvmlInit_v2 dereferences NULL
 *   CALL_HANG         nvmlInit_v2 never returns
 *   GPU_COUNT=n       nvmlDeviceGetCount_v2 reports n GPUs (default 1; 4294967295u lies)
 *   CC_MAJOR, CC_MINOR  the compute capability every GPU reports (default 12.1)
 */
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#ifndef GPU_COUNT
#define GPU_COUNT 1u
#endif
#ifndef CC_MAJOR
#define CC_MAJOR 12
#endif
#ifndef CC_MINOR
#define CC_MINOR 1
#endif

int nvmlInit_v2(void) {
#ifdef CALL_SEGV
    *(volatile int *)0 = 1;
#endif
#ifdef CALL_HANG
    for (;;) pause();
#endif
    return 0;
}

int nvmlShutdown(void) { return 0; }

const char *nvmlErrorString(int code) {
    (void)code;
    return "NVML_ERROR_FAKE";
}

int nvmlSystemGetDriverVersion(char *buffer, unsigned size) {
    snprintf(buffer, size, "999.99");
    return 0;
}

int nvmlSystemGetCudaDriverVersion_v2(int *version) {
    *version = 13000;
    return 0;
}

int nvmlDeviceGetCount_v2(unsigned *count) {
    *count = GPU_COUNT;
    return 0;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned index, void **handle) {
    *handle = (void *)(uintptr_t)(index + 1);
    return 0;
}

int nvmlDeviceGetCudaComputeCapability(void *handle, int *major, int *minor) {
    (void)handle;
    *major = CC_MAJOR;
    *minor = CC_MINOR;
    return 0;
}

int nvmlDeviceGetName(void *handle, char *buffer, unsigned size) {
    snprintf(buffer, size, "Fake GPU %u", (unsigned)(uintptr_t)handle - 1u);
    return 0;
}

int nvmlDeviceGetUUID(void *handle, char *buffer, unsigned size) {
    snprintf(buffer, size, "GPU-fake-%u", (unsigned)(uintptr_t)handle);
    return 0;
}
