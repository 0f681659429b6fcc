#define _GNU_SOURCE
#include "CStasis.h"
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <linux/random.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

int cshim_ioctl_ptr(int fd, unsigned long req, void *arg) { return ioctl(fd, req, arg); }

int cshim_mount(const char *src, const char *tgt, const char *type, unsigned long flags, const char *data) {
    return mount(src, tgt, type, flags, data);
}
int cshim_umount(const char *tgt, int flags) { return umount2(tgt, flags); }

// What switch_root does: make newroot the root of the file system tree for us and our children.
int cshim_switch_root(const char *newroot) {
    if (chdir(newroot) < 0) return -1;
    if (mount(newroot, "/", NULL, MS_MOVE, NULL) < 0) return -1;
    if (chroot(".") < 0) return -1;
    return chdir("/");
}

int cshim_finit_module(int fd) { return (int)syscall(SYS_finit_module, fd, "", 0); }
// microvm has no ACPI power-off path the guest kernel can use, so end the VM with a reset
// (the kernel is booted with reboot=t: a triple fault) and let QEMU's -no-reboot turn that
// into an exit.
int cshim_poweroff(void) { sync(); return reboot(RB_AUTOBOOT); }
int cshim_sethostname(const char *name, size_t len) { return sethostname(name, len); }

int cshim_wifexited(int status) { return WIFEXITED(status); }
int cshim_wexitstatus(int status) { return WEXITSTATUS(status); }
int cshim_wifsignaled(int status) { return WIFSIGNALED(status); }
int cshim_wtermsig(int status) { return WTERMSIG(status); }

int cshim_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
int cshim_set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int cshim_sigchld_fd(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0) return -1;
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

void cshim_drain_signalfd(int fd) {
    struct signalfd_siginfo info[16];
    while (read(fd, info, sizeof(info)) > 0) {}
}

static const char *find_path(char *const envp[]) {
    for (char *const *e = envp; e && *e; e++)
        if (strncmp(*e, "PATH=", 5) == 0) return *e + 5;
    return "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
}

// Runs in the child between fork and exec: only async-signal-safe calls.
static void child_exec(char *const argv[], char *const envp[], const char *cwd, int uid, int gid,
                       int in, int out, int err, int report) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    setsid();
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) goto fail;
    if (gid >= 0) {
        gid_t g = (gid_t)gid;
        if (setgroups(1, &g) < 0 || setgid(g) < 0) goto fail;
    }
    if (uid >= 0 && setuid((uid_t)uid) < 0) goto fail;
    if (cwd && *cwd && chdir(cwd) < 0) goto fail;
    const char *file = argv[0];
    if (strchr(file, '/')) {
        execve(file, argv, envp);
    } else {
        const char *path = find_path(envp);
        char buf[4096];
        int saved = ENOENT;
        while (*path) {
            const char *colon = strchr(path, ':');
            size_t dirlen = colon ? (size_t)(colon - path) : strlen(path);
            size_t filelen = strlen(file);
            if (dirlen + filelen + 2 < sizeof(buf)) {
                memcpy(buf, path, dirlen);
                buf[dirlen] = '/';
                memcpy(buf + dirlen + 1, file, filelen + 1);
                execve(buf, argv, envp);
                if (errno != ENOENT && errno != ENOTDIR) saved = errno;
            }
            if (!colon) break;
            path = colon + 1;
        }
        errno = saved;
    }
fail:;
    int e = errno;
    ssize_t ignored = write(report, &e, sizeof(e));
    (void)ignored;
    _exit(127);
}

pid_t cshim_spawn(char *const argv[], char *const envp[], const char *cwd, int uid, int gid,
                  int stdin_fd, int stdout_fd, int stderr_fd, int *err_out) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) < 0) { *err_out = errno; return -1; }
    // vfork: under TCG copying the agent's page tables for fork() costs milliseconds per exec.
    // The child only makes async-signal-safe system calls on its own stack before exec or _exit.
    pid_t pid = vfork();
    if (pid < 0) {
        *err_out = errno;
        close(report[0]); close(report[1]);
        return -1;
    }
    if (pid == 0) child_exec(argv, envp, cwd, uid, gid, stdin_fd, stdout_fd, stderr_fd, report[1]);
    close(report[1]);
    int e = 0;
    ssize_t n;
    do { n = read(report[0], &e, sizeof(e)); } while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == (ssize_t)sizeof(e)) {
        int status;
        waitpid(pid, &status, 0);
        *err_out = e;
        return -1;
    }
    *err_out = 0;
    return pid;
}

static int inet_ioctl(unsigned long req, struct ifreq *ifr) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    int rc = ioctl(s, req, ifr);
    int e = errno;
    close(s);
    errno = e;
    return rc;
}

int cshim_if_up(const char *ifname) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
    if (inet_ioctl(SIOCGIFFLAGS, &ifr) < 0) return -1;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    return inet_ioctl(SIOCSIFFLAGS, &ifr);
}

static void set_sockaddr(struct sockaddr *sa, uint32_t addr) {
    struct sockaddr_in *in = (struct sockaddr_in *)sa;
    memset(in, 0, sizeof(*in));
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = htonl(addr);
}

int cshim_if_set_ipv4(const char *ifname, uint32_t addr, uint32_t netmask) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
    set_sockaddr(&ifr.ifr_addr, addr);
    if (inet_ioctl(SIOCSIFADDR, &ifr) < 0) return -1;
    set_sockaddr(&ifr.ifr_netmask, netmask);
    return inet_ioctl(SIOCSIFNETMASK, &ifr);
}

int cshim_route_add_default(uint32_t gateway) {
    struct rtentry rt;
    memset(&rt, 0, sizeof(rt));
    set_sockaddr(&rt.rt_dst, 0);
    set_sockaddr(&rt.rt_genmask, 0);
    set_sockaddr(&rt.rt_gateway, gateway);
    rt.rt_flags = RTF_UP | RTF_GATEWAY;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    int rc = ioctl(s, SIOCADDRT, &rt);
    int e = errno;
    close(s);
    errno = e;
    if (rc < 0 && e == EEXIST) return 0;
    return rc;
}

int cshim_add_entropy_and_reseed(const uint8_t *bytes, size_t len) {
    if (len > 512) len = 512;
    int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    struct { int entropy_count; int buf_size; uint8_t buf[512]; } req;
    req.entropy_count = (int)(len * 8);
    req.buf_size = (int)len;
    memcpy(req.buf, bytes, len);
    int rc = ioctl(fd, RNDADDENTROPY, &req);
    if (rc == 0) rc = ioctl(fd, RNDRESEEDCRNG);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

// A fully static Swift executable aborts before main() ("Unable to obtain Swift runtime path")
// when /proc is not mounted: its runtime reads /proc/self/exe. As PID 1 in an initramfs nothing
// has mounted /proc yet, so do it in a constructor that runs before the Swift runtime's.
__attribute__((constructor(101))) static void cshim_early_mount_proc(void) {
    if (getpid() != 1 || access("/proc/self/exe", F_OK) == 0) return;
    mkdir("/proc", 0555);
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
}
