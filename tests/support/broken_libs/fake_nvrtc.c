/* A stand-in for libnvrtc.so that misbehaves the way broken installs do.
 *
 * Built by tests/support/native_fakes.py with gcc; one -D flag picks the fault:
 *   CTOR_ABORT      the library constructor calls abort()
 *   CTOR_EXIT42     the library constructor calls _exit(42)
 *   CTOR_MARKER=""  the constructor writes that file (proves the library was loaded)
 *   CALL_SEGV       nvrtcVersion dereferences NULL
 *   CALL_HANG       nvrtcVersion never returns
 *   COMPILE_SEGV    nvrtcCompileProgram dereferences NULL (the library passes the probe's
 *                   version and arch calls, then crashes when something compiles with it)
 * Without a fault it reports NVRTC 13.0 with a short arch list, and compiling for an arch
 * outside that list fails as NVRTC does, with its log line.  Other flags:
 *   CAPABLE         it lists sm_120, sm_121 and sm_103 too, and every compile succeeds (a
 *                   crafted library that passes every check a remedy or fetch makes)
 *   VERSION_MAJOR=12 VERSION_MINOR=9   the version it reports (default 13.0)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#ifdef CTOR_ABORT
__attribute__((constructor)) static void fault_at_load(void) { abort(); }
#endif
#ifdef CTOR_EXIT42
__attribute__((constructor)) static void fault_at_load(void) { _exit(42); }
#endif
#ifdef CTOR_MARKER
__attribute__((constructor)) static void mark_load(void) {
    FILE *f = fopen(CTOR_MARKER, "w");
    if (f) {
        fputs("fake libnvrtc constructor ran\n", f);
        fclose(f);
    }
}
#endif

static void misbehave(void) {
#ifdef CALL_SEGV
    *(volatile int *)0 = 1;
#endif
#ifdef CALL_HANG
    for (;;) pause();
#endif
}

#ifdef CAPABLE
static const int archs[] = {75, 80, 86, 89, 90, 100, 103, 120, 121};
#else
static const int archs[] = {75, 80, 86, 89, 90, 100, 120};
#endif
#ifndef VERSION_MAJOR
#define VERSION_MAJOR 13
#endif
#ifndef VERSION_MINOR
#define VERSION_MINOR 0
#endif

int nvrtcVersion(int *major, int *minor) {
    misbehave();
    *major = VERSION_MAJOR;
    *minor = VERSION_MINOR;
    return 0;
}

int nvrtcGetNumSupportedArchs(int *count) {
    *count = (int)(sizeof archs / sizeof archs[0]);
    return 0;
}

int nvrtcGetSupportedArchs(int *out) {
    for (unsigned i = 0; i < sizeof archs / sizeof archs[0]; i++) out[i] = archs[i];
    return 0;
}

#ifdef CAPABLE
static const char log_line[] = "";
#else
static const char log_line[] = "nvrtc: error: invalid value for --gpu-architecture (-arch)\n";
#endif

int nvrtcCreateProgram(void **program, const char *src, const char *name, int n,
                       const char *const *headers, const char *const *names) {
    (void)src; (void)name; (void)n; (void)headers; (void)names;
    static int dummy;
    *program = &dummy;
    return 0;
}

int nvrtcCompileProgram(void *program, int n, const char *const *options) {
    (void)program; (void)n; (void)options;
#ifdef COMPILE_SEGV
    *(volatile int *)0 = 1;
#endif
#ifdef CAPABLE
    return 0;
#else
    return 5; /* NVRTC_ERROR_INVALID_OPTION */
#endif
}

int nvrtcDestroyProgram(void **program) {
    *program = 0;
    return 0;
}

int nvrtcGetProgramLogSize(void *program, size_t *size) {
    (void)program;
    *size = sizeof log_line;
    return 0;
}

int nvrtcGetProgramLog(void *program, char *out) {
    (void)program;
    for (unsigned i = 0; i < sizeof log_line; i++) out[i] = log_line[i];
    return 0;
}

const char *nvrtcGetErrorString(int code) {
    (void)code;
    return "NVRTC_ERROR_FAKE";
}
