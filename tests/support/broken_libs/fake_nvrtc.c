/* A stand-in for libnvrtc.so that misbehaves the way broken installs do.
 *
 * Built by tests/support/native_fakes.py with gcc; one -D flag picks the fault:
 *   CTOR_ABORT      the library constructor calls abort()
 *   CTOR_EXIT42     the library constructor calls _exit(42)
 *   CTOR_MARKER=""  the constructor writes that file (proves the library was loaded)
 *   CALL_SEGV       nvrtcVersion dereferences NULL
 *   CALL_HANG       nvrtcVersion never returns
 * Without a fault it reports NVRTC 13.0 with a short arch list.
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

static const int archs[] = {75, 80, 86, 89, 90, 100, 120};

int nvrtcVersion(int *major, int *minor) {
    misbehave();
    *major = 13;
    *minor = 0;
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

const char *nvrtcGetErrorString(int code) {
    (void)code;
    return "NVRTC_ERROR_FAKE";
}
