/*
 * A measuring aid, never shipped: preloaded into a benchmark, it turns fsync and fdatasync
 * into no-ops in the process whose executable's path contains SNAPTREE_NO_FSYNC_IN (the
 * benchmark itself), and leaves them alone in every other process (the qemu-img and
 * qemu-io children, which inherit the preload). It answers one question: how much of the
 * engine's time on QEMU work is waiting for syncs, and how much is left without them
 * (BENCHMARKS.md, "What the engine's share is made of").
 *
 *   cc -shared -fPIC -O2 -o /tmp/no_fsync.so benches/c/no_fsync.c -ldl
 *   SNAPTREE_NO_FSYNC_IN=qemu_overhead LD_PRELOAD=/tmp/no_fsync.so \
 *       target/release/deps/qemu_overhead-HASH --bench
 *
 * Nothing it measures is durable: never use it for anything but this question.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int in_target(void) {
    static int answer = -1;
    if (answer < 0) {
        const char *want = getenv("SNAPTREE_NO_FSYNC_IN");
        char exe[4096];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        exe[n > 0 ? n : 0] = '\0';
        answer = want != NULL && *want != '\0' && strstr(exe, want) != NULL;
    }
    return answer;
}

int fsync(int fd) {
    if (in_target()) {
        return 0;
    }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}

int fdatasync(int fd) {
    if (in_target()) {
        return 0;
    }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}
