/* A TCP client for the bypass tests (tests/tap/test_bypass.py), built by the
 * test with gcc: statically (a program the tap cannot be preloaded into) or
 * dynamically (run under LD_PRELOAD), and with raw io_uring system calls
 * (no liburing) for the paths the tap cannot follow.
 *
 *   bypass_client MODE HOST PORT
 *   MODE plain          connect() and send() through libc
 *        uring-connect  socket() through libc, connect and send submitted
 *                       to an io_uring
 *        uring-send     connect() through libc, send submitted to an io_uring
 *
 * Prints "connected PORT" (its local port) once the request is sent, then
 * holds the connection until its standard input closes. Exits 77 when the
 * kernel refuses io_uring (io_uring_setup fails).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char REQUEST[] = "hello from bypass_client\n";

struct ring {
    int fd;
    unsigned *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
};

static int ring_setup(struct ring *r) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    r->fd = (int)syscall(SYS_io_uring_setup, 4, &p);
    if (r->fd < 0)
        return -1;
    size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    char *sq = mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                    IORING_OFF_SQ_RING);
    char *cq = mmap(NULL, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                    IORING_OFF_CQ_RING);
    r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
    if (sq == MAP_FAILED || cq == MAP_FAILED || r->sqes == MAP_FAILED) {
        perror("mmap io_uring");
        exit(1);
    }
    r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(sq + p.sq_off.array);
    r->cq_head = (unsigned *)(cq + p.cq_off.head);
    r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
    r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    return 0;
}

/* Submits one prepared SQE and waits for its completion; its result. */
static int ring_run(struct ring *r, const struct io_uring_sqe *sqe) {
    unsigned tail = *r->sq_tail;
    unsigned i = tail & *r->sq_mask;
    r->sqes[i] = *sqe;
    r->sq_array[i] = i;
    __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
    if (syscall(SYS_io_uring_enter, r->fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0) {
        perror("io_uring_enter");
        exit(1);
    }
    unsigned head = *r->cq_head;
    while (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE)) {
        if (syscall(SYS_io_uring_enter, r->fd, 0, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0) {
            perror("io_uring_enter");
            exit(1);
        }
    }
    int res = r->cqes[head & *r->cq_mask].res;
    __atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
    return res;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s plain|uring-connect|uring-send HOST PORT\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    int uring_connect = strcmp(mode, "uring-connect") == 0;
    int uring_send = uring_connect || strcmp(mode, "uring-send") == 0;
    if (!uring_send && strcmp(mode, "plain") != 0) {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    struct sockaddr_in peer;
    memset(&peer, 0, sizeof peer);
    peer.sin_family = AF_INET;
    peer.sin_port = htons((unsigned short)atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &peer.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", argv[2]);
        return 2;
    }
    struct ring r;
    if (uring_send && ring_setup(&r) < 0) {
        printf("io_uring unavailable: %s\n", strerror(errno));
        return 77;
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) {
        perror("socket");
        return 1;
    }
    struct io_uring_sqe sqe;
    if (uring_connect) {
        memset(&sqe, 0, sizeof sqe);
        sqe.opcode = IORING_OP_CONNECT;
        sqe.fd = s;
        sqe.addr = (unsigned long)&peer;
        sqe.off = sizeof peer;
        int res = ring_run(&r, &sqe);
        if (res < 0) {
            fprintf(stderr, "io_uring connect: %s\n", strerror(-res));
            return 1;
        }
    } else if (connect(s, (struct sockaddr *)&peer, sizeof peer) < 0) {
        perror("connect");
        return 1;
    }
    if (uring_send) {
        memset(&sqe, 0, sizeof sqe);
        sqe.opcode = IORING_OP_SEND;
        sqe.fd = s;
        sqe.addr = (unsigned long)REQUEST;
        sqe.len = sizeof REQUEST - 1;
        int res = ring_run(&r, &sqe);
        if (res != (int)(sizeof REQUEST - 1)) {
            fprintf(stderr, "io_uring send: %d\n", res);
            return 1;
        }
    } else if (send(s, REQUEST, sizeof REQUEST - 1, 0) != (ssize_t)(sizeof REQUEST - 1)) {
        perror("send");
        return 1;
    }
    struct sockaddr_in me;
    socklen_t len = sizeof me;
    if (getsockname(s, (struct sockaddr *)&me, &len) < 0) {
        perror("getsockname");
        return 1;
    }
    printf("connected %d\n", ntohs(me.sin_port));
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
    close(s);
    return 0;
}
