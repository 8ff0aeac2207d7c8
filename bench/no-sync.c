/* bench/store.sh: `no-sync COMMAND...` runs COMMAND with every fsync, fdatasync and syncfs
   answered "done" without doing anything, for measuring what a submit costs without its
   syncs: the floor no store design can go under. A seccomp filter (inherited by every child
   and thread, whatever library makes the call: libc or a raw syscall) returns 0 for them.
   Measurement only: a program run this way keeps nothing durable. */
#define _GNU_SOURCE
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_fsync, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_fdatasync, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_syncfs, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 0), /* "succeeded", not run */
    };
    struct sock_fprog program = { sizeof filter / sizeof filter[0], filter };
    if (argc < 2) { fprintf(stderr, "usage: no-sync COMMAND [ARGUMENT...]\n"); return 2; }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
        || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
        perror("no-sync: cannot install the seccomp filter");
        return 1;
    }
    execvp(argv[1], argv + 1);
    perror("no-sync: cannot run the command");
    return 127;
}
