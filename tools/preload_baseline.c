/* Reference preload libraries for tools/bench_tap.py --attribution: what
 * any LD_PRELOAD library costs, to set the user-space tap's overhead against.
 *   -DEMPTY: a library with no interposed symbol (one more object for the
 *            dynamic linker to search at every symbol lookup);
 *   otherwise: plain pass-through wrappers of the calls dig and dnsmasq make
 *            per query (dlsym(RTLD_NEXT) once, then an indirect call).
 * Build: cc -O2 -shared -fPIC [-DEMPTY] -o X.so preload_baseline.c -ldl */
#define _GNU_SOURCE
#ifdef EMPTY
int l45_preload_baseline_empty;
#else
#include <dlfcn.h>
#include <poll.h>
#include <stdarg.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define NEXT(name)                                                             \
  static typeof(&name) real;                                                   \
  if (!real)                                                                   \
    real = (typeof(&name))dlsym(RTLD_NEXT, #name)

int socket(int d, int t, int p) { NEXT(socket); return real(d, t, p); }
int connect(int fd, const struct sockaddr *a, socklen_t l) { NEXT(connect); return real(fd, a, l); }
int close(int fd) { NEXT(close); return real(fd); }
int epoll_ctl(int e, int op, int fd, struct epoll_event *ev) { NEXT(epoll_ctl); return real(e, op, fd, ev); }
int epoll_wait(int e, struct epoll_event *ev, int m, int t) { NEXT(epoll_wait); return real(e, ev, m, t); }
ssize_t recvmsg(int fd, struct msghdr *m, int f) { NEXT(recvmsg); return real(fd, m, f); }
ssize_t sendmsg(int fd, const struct msghdr *m, int f) { NEXT(sendmsg); return real(fd, m, f); }
int sendmmsg(int fd, struct mmsghdr *v, unsigned n, int f) { NEXT(sendmmsg); return real(fd, v, n, f); }
ssize_t read(int fd, void *b, size_t n) { NEXT(read); return real(fd, b, n); }
ssize_t write(int fd, const void *b, size_t n) { NEXT(write); return real(fd, b, n); }
int poll(struct pollfd *p, nfds_t n, int t) { NEXT(poll); return real(p, n, t); }

long syscall(long n, ...) {
  va_list ap;
  long a[6];
  va_start(ap, n);
  for (int i = 0; i < 6; i++)
    a[i] = va_arg(ap, long);
  va_end(ap);
  static long (*real)(long, ...);
  if (!real)
    real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
  return real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}

int ioctl(int fd, unsigned long r, ...) {
  va_list ap;
  va_start(ap, r);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  static int (*real)(int, unsigned long, ...);
  if (!real)
    real = (int (*)(int, unsigned long, ...))dlsym(RTLD_NEXT, "ioctl");
  return real(fd, r, arg);
}
#endif
