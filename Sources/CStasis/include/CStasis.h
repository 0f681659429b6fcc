#pragma once
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

// Small C helpers for what Swift cannot call directly: variadic ioctl and syscalls, function-like
// macros (wait status), and fork/exec with everything a guest process needs set up in between.

// ---- mounts, modules, power
int cshim_mount(const char *src, const char *tgt, const char *type, unsigned long flags, const char *data);
int cshim_umount(const char *tgt, int flags);
int cshim_switch_root(const char *newroot);
int cshim_finit_module(int fd);
int cshim_poweroff(void);
int cshim_sethostname(const char *name, size_t len);

// ---- processes
// fork + exec: new session, fds 0/1/2 from the given fds, chdir, groups/gid/uid, PATH lookup in envp.
// Returns the pid; on failure returns -1 and puts the errno of the failed step in *err_out
// (exec failure is detected synchronously through a close-on-exec pipe).
pid_t cshim_spawn(char *const argv[], char *const envp[], const char *cwd, int uid, int gid,
                  int stdin_fd, int stdout_fd, int stderr_fd, int *err_out);
int cshim_wifexited(int status);
int cshim_wexitstatus(int status);
int cshim_wifsignaled(int status);
int cshim_wtermsig(int status);
// Blocks SIGCHLD and returns a nonblocking, close-on-exec signalfd that reports it.
int cshim_sigchld_fd(void);
// Reads and discards pending signalfd records.
void cshim_drain_signalfd(int fd);
int cshim_pipe_cloexec(int fds[2]);
int cshim_set_nonblocking(int fd);

// ---- network (IPv4, host byte order addresses)
int cshim_if_up(const char *ifname);
int cshim_if_set_ipv4(const char *ifname, uint32_t addr, uint32_t netmask);
int cshim_route_add_default(uint32_t gateway);

// ---- entropy
// RNDADDENTROPY with the given bytes credited fully, then RNDRESEEDCRNG.
int cshim_add_entropy_and_reseed(const uint8_t *bytes, size_t len);

// ---- userfaultfd (restore from the snapshot store, later)
int cshim_ioctl_ptr(int fd, unsigned long req, void *arg);
