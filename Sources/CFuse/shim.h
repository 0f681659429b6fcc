#ifndef STASIS_CFUSE_SHIM_H
#define STASIS_CFUSE_SHIM_H
// libfuse 3's high-level API at version 3.5 (Debian 12 ships 3.14).
#define FUSE_USE_VERSION 35
#include <fuse.h>

// fuse_new is a macro over a versioned symbol at this API version; Swift imports no macros.
static inline struct fuse *stasis_fuse_new(struct fuse_args *args, const struct fuse_operations *ops, void *data) {
    return fuse_new(args, ops, sizeof(struct fuse_operations), data);
}

// The multi-threaded loop, also a macro over a versioned symbol; up to `idle` threads kept waiting.
static inline int stasis_fuse_loop_mt(struct fuse *f, unsigned idle) {
    struct fuse_loop_config config = { .clone_fd = 0, .max_idle_threads = idle };
    return fuse_loop_mt(f, &config);
}
#endif
