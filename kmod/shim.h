/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Layer 4.5 kernel tap: what the C shim's two files share (shim.c: hooks,
 * socket table, data path; nl.c: the generic netlink family). Not an ABI:
 * l45.h is the one shared with Rust and user space.
 */
#ifndef L45_SHIM_H
#define L45_SHIM_H

#include <linux/hashtable.h>
#include <linux/jump_label.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <net/sock.h>

#include "l45.h"

/* The entry of a socket the tap has seen. It lives in l45_hash (for the
 * SOCKETS dump and unloading) and in the socket's sk_user_data (below), so
 * the data path finds it without a lookup or a lock. */
struct l45_sk {
	struct hlist_node node;
	struct sock *sk;
	spinlock_t lock;		/* rs, plan, gen */
	void *rs;			/* Rust chain */
	u32 gen;			/* generation plan was computed at (read locklessly) */
	struct l45_plan plan;		/* what the data path must do (read locklessly: send, recv) */
	struct l45_view view;		/* at first sight */
	pid_t pid;
	u64 cookie;
	struct mutex rx_mutex;		/* rx*, rin*, eof */
	u8 *rx;				/* stream: bytes held for the application; datagram: chain output */
	size_t rx_len, rx_off, rx_cap;
	u8 *rin;			/* what came off the wire */
	size_t rin_cap;
	bool eof;
	struct mutex tx_mutex;		/* sin*, sout*, tx_off, tx_len */
	u8 *sin;			/* the application's bytes */
	size_t sin_cap;
	u8 *sout;			/* chain output; [tx_off, tx_len) not yet taken by TCP */
	size_t sout_cap, tx_off, tx_len;
	struct l45_tag_tx *tag_tx;	/* stream-tag sends built in place (shim_tcp.c) */
	struct l45_tag_rxd *tag_rxd;	/* stream-tag receives into the application's pages */
	bool bypassed;			/* a connection older than the module whose role is unknown */
};

/* Stream bytes run through a chain per step of a send or receive: the
 * entry's buffers are sized for this once, not per call. */
#define L45_CHUNK 65536
/* l45_track's role for a connection it must not tap (its role is unknown). */
#define L45_ROLE_UNKNOWN 2

extern struct hlist_head l45_hash[1 << 10];	/* seen sockets, by struct sock */
extern spinlock_t l45_hash_lock;		/* l45_hash */
extern spinlock_t l45_cfg_lock;		/* the Rust module table */
DECLARE_STATIC_KEY_FALSE(l45_configured);	/* at least one module registered */

/* Our end and the peer of `sk` now (shim.c). */
void l45_addrs(struct sock *sk, struct msghdr *msg, struct l45_sockaddr *local,
	       struct l45_sockaddr *remote);
/* Brings an entry's chain and plan up to date; e->lock held (shim.c). */
void l45_refresh_locked(struct l45_sk *e, struct sock *sk);

/* shim.c, for shim_tcp.c */
struct l45_sk *l45_track(struct sock *sk, u8 proto, u8 role, struct msghdr *msg, bool *created);
int l45_reserve(u8 **buf, size_t *cap, size_t need);
bool l45_send_retry(int ret);
void l45_view_of(struct sock *sk, u8 proto, u8 role, struct msghdr *msg, struct l45_view *v);
int l45_wait(struct sock *sk, long timeo, bool (*ready)(struct sock *, bool), bool tcp);
bool l45_rx_ready(struct sock *sk, bool tcp);
int l45_recv_kbuf(struct sock *sk, struct msghdr *msg, u8 *buf, size_t len, int flags,
		  int *addr_len, int (*orig)(struct sock *, struct msghdr *, size_t, int, int *));
/* shim_tcp.c: TCP connections made before the module was loaded (adopted
 * at their first call) and stream-tag sends built from the application's
 * own pages plus the tag. */
struct l45_sk *l45_adopt(struct sock *sk);
int l45_send_stream_tag(struct l45_sk *e, struct sock *sk, struct msghdr *msg, size_t size,
			const struct l45_plan *p, int (*orig)(struct sock *, struct msghdr *, size_t),
			bool *fallback);
bool l45_stream_tag_fits(const struct msghdr *msg, const struct l45_plan *p);
long l45_tag_scan(struct l45_sk *e, const struct l45_plan *p, const u8 *in, size_t n,
		  struct l45_tag_rx *st0);
long l45_tag_deliver(struct msghdr *msg, const struct l45_plan *p, const u8 *in, size_t n,
		     struct l45_tag_rx st, long plain);
int l45_recv_stream(struct l45_sk *e, struct sock *sk, struct msghdr *msg, size_t len, int flags,
		    int *addr_len, int (*orig)(struct sock *, struct msghdr *, size_t, int, int *));

/* The generic netlink family (nl.c). */
int l45_nl_init(void);
void l45_nl_exit(void);

#endif
