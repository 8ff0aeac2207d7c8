/* bench/store.sh SLOW_SYNC_US=N: an LD_PRELOAD shim that models a slower disk. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
/* Adds a fixed latency (SLOW_SYNC_US, microseconds) to every fsync and fdatasync: a model of
   a disk whose flushes take that long, served concurrently (as a queue-depth disk does). */
static void pause_us(void) {
    const char *v = getenv("SLOW_SYNC_US");
    long us = v ? atol(v) : 0;
    if (us > 0) { struct timespec t = { us / 1000000, (us % 1000000) * 1000 }; nanosleep(&t, 0); }
}
int fsync(int fd) { static int (*real)(int); if (!real) real = dlsym(RTLD_NEXT, "fsync"); pause_us(); return real(fd); }
int fdatasync(int fd) { static int (*real)(int); if (!real) real = dlsym(RTLD_NEXT, "fdatasync"); pause_us(); return real(fd); }
