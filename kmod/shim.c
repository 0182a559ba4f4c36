// SPDX-License-Identifier: GPL-2.0
/*
 * Layer 4.5 kernel tap, C shim: what Linux 6.12's Rust bindings have no API
 * for. This file swaps the connect/accept/close/sendmsg/recvmsg of
 * tcp_prot, udp_prot and their IPv6 twins for wrappers, keeps the table of
 * sockets it has seen and moves bytes between the application's iov_iter
 * and kernel buffers; nl.c registers the generic netlink family "l45" and
 * answers challenges with the kernel crypto API. Matching, chains and the
 * module code are Rust (l45_main.rs and the shared modules/src sources).
 *
 * Locks, always taken in this order: l45_hash_lock -> sk_callback_lock,
 * and l45_hash_lock -> entry->lock -> l45_cfg_lock. All are spinlocks (the
 * callback lock an rwlock); nothing sleeps or allocates under them (module
 * code never allocates; buffers are allocated before). An entry's buffers
 * are guarded by its rx_mutex and tx_mutex, which may be held across the
 * real recvmsg/sendmsg (they are the entry's, so only callers on that
 * socket wait).
 */
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/hashtable.h>
#include <linux/spinlock.h>
#include <linux/mutex.h>
#include <linux/delay.h>
#include <linux/uio.h>
#include <linux/wait_bit.h>
#include <linux/random.h>
#include <linux/sched.h>
#include <linux/timekeeping.h>
#include <linux/scatterlist.h>
#include <crypto/aead.h>
#include <net/genetlink.h>
#include <net/sock.h>
#include <net/inet_sock.h>
#include <net/inet_connection_sock.h>
#include <net/request_sock.h>
#include <net/tcp.h>
#include <net/udp.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <linux/jump_label.h>
#include <linux/percpu.h>
#include <net/ipv6.h>

#include "l45.h"
#include "shim.h"

#if defined(CONFIG_PREEMPTION) && !defined(CONFIG_TASKS_RCU)
#error "unloading needs PREEMPT_NONE/VOLUNTARY or TASKS_RCU (see l45_shim_exit)"
#endif

#define L45_DGRAM_MAX 65536

/* One hooked struct proto and a copy of its original handlers. */
struct l45_hook {
	struct proto *prot;
	struct proto orig;
};

static struct l45_hook l45_tcp4, l45_udp4, l45_tcp6, l45_udp6;

DEFINE_HASHTABLE(l45_hash, 10);
DEFINE_SPINLOCK(l45_hash_lock);
DEFINE_SPINLOCK(l45_cfg_lock);
/* Calls inside the hooks, per CPU (an increment may be undone on another
 * CPU: only the sum means something, see l45_shim_exit). */
static DEFINE_PER_CPU(int, l45_inflight);
static int l45_unloading;
static atomic64_t l45_cookie = ATOMIC64_INIT(0);
static bool l45_hooked;
/* On while at least one module is registered: with none, the send and
 * receive hooks call the kernel's handler at once (sockets are still seen
 * once: TCP at connect/accept, UDP at its first call). */
DEFINE_STATIC_KEY_FALSE(l45_configured);

u64 l45_now_ns(void)
{
	return ktime_get_real_ns();
}

/* ---------- the entry in sk_user_data ----------
 * sk_user_data is the slot the kernel keeps for whoever owns a socket's
 * extra state (RPC, tunnels, BPF sockmap); application sockets normally
 * leave it empty. Ours is stored with bit 63 clear and bit 62 set: never a
 * canonical x86-64 address (kernel pointers have both set, user pointers
 * both clear), so it cannot be mistaken for anyone else's pointer, and
 * nobody else can mistake it for theirs (they only read what they stored).
 * SK_USER_DATA_NOCOPY keeps sk_clone_lock from copying it to a child. A
 * socket whose sk_user_data is taken already is not tapped. */
#ifndef CONFIG_X86_64
#error "the sk_user_data encoding assumes x86-64 canonical addresses"
#endif
#define L45_UD_TOP (3UL << 62)
#define L45_UD_MARK (1UL << 62)

static inline void *l45_ud(struct l45_sk *e)
{
	return (void *)(((unsigned long)e & ~L45_UD_TOP) | L45_UD_MARK | SK_USER_DATA_NOCOPY);
}

static inline struct l45_sk *l45_entry(const struct sock *sk)
{
	unsigned long v = (unsigned long)READ_ONCE(sk->sk_user_data);

	if ((v & L45_UD_TOP) != L45_UD_MARK)
		return NULL;
	return (struct l45_sk *)((v & ~SK_USER_DATA_NOCOPY) | L45_UD_TOP);
}

/* ---------- socket views ---------- */

static void l45_addr4(struct l45_sockaddr *a, __be32 ip, __be16 port)
{
	memset(a, 0, sizeof(*a));
	a->family = 4;
	a->port = ntohs(port);
	memcpy(a->addr, &ip, 4);
}

static void l45_addr6(struct l45_sockaddr *a, const struct in6_addr *ip, __be16 port)
{
	memset(a, 0, sizeof(*a));
	a->family = 6;
	a->port = ntohs(port);
	memcpy(a->addr, ip, 16);
}

/* Our end and the peer now (the peer of an unconnected send: its address).
 * A v4-mapped IPv6 address stays an IPv6 address here; matching treats it
 * as IPv4 (l45_main.rs, as the user-space tap does). */
void l45_addrs(struct sock *sk, struct msghdr *msg, struct l45_sockaddr *local,
	       struct l45_sockaddr *remote)
{
	struct inet_sock *inet = inet_sk(sk);
	struct sockaddr *name = msg ? msg->msg_name : NULL;
	int namelen = msg ? msg->msg_namelen : 0;

	memset(remote, 0, sizeof(*remote));
#if IS_ENABLED(CONFIG_IPV6)
	if (sk->sk_family == AF_INET6) {
		l45_addr6(local, ipv6_addr_any(&sk->sk_v6_rcv_saddr) ? &inet6_sk(sk)->saddr :
				 &sk->sk_v6_rcv_saddr, inet->inet_sport);
		if (inet->inet_dport) {
			l45_addr6(remote, &sk->sk_v6_daddr, inet->inet_dport);
			return;
		}
		if (name && namelen >= sizeof(struct sockaddr_in6) && name->sa_family == AF_INET6) {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)name;

			l45_addr6(remote, &sin6->sin6_addr, sin6->sin6_port);
			return;
		}
	} else
#endif
	{
		l45_addr4(local, inet->inet_rcv_saddr ? inet->inet_rcv_saddr : inet->inet_saddr,
			  inet->inet_sport);
		if (inet->inet_dport) {
			l45_addr4(remote, inet->inet_daddr, inet->inet_dport);
			return;
		}
	}
	if (name && namelen >= sizeof(struct sockaddr_in) && name->sa_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)name;

		l45_addr4(remote, sin->sin_addr.s_addr, sin->sin_port);
	}
}

static void l45_names(struct l45_view *v)
{
	char buf[TASK_COMM_LEN];

	memset(v->thread, 0, sizeof(v->thread));
	memset(v->process, 0, sizeof(v->process));
	get_task_comm(buf, current);
	strscpy(v->thread, buf, sizeof(v->thread));
	__get_task_comm(buf, sizeof(buf), current->group_leader);
	strscpy(v->process, buf, sizeof(v->process));
}

/* The view of a socket now: addresses, role, calling thread. */
void l45_view_of(struct sock *sk, u8 proto, u8 role, struct msghdr *msg, struct l45_view *v)
{
	memset(v, 0, sizeof(*v));
	v->proto = proto;
	v->role = role;
	l45_addrs(sk, msg, &v->local, &v->remote);
	l45_names(v);
}

/* ---------- socket table ---------- */

static void l45_free_entry(struct l45_sk *e)
{
	l45_rs_sock_free(e->rs);
	kvfree(e->rx);
	kvfree(e->rin);
	kvfree(e->sin);
	kvfree(e->sout);
	kfree(e->tag_tx);
	kfree(e->tag_rxd);
	kfree(e);
}

/* Brings the chain up to the current configuration (revoke, priority,
 * activation, immediate attach) and recomputes the plan. Caller holds
 * e->lock. */
void l45_refresh_locked(struct l45_sk *e, struct sock *sk)
{
	struct l45_sockaddr local, remote;
	struct l45_view v;

	if (READ_ONCE(e->gen) == smp_load_acquire(&l45_rs_gen))
		return;
	if (e->bypassed) {	/* never tapped: its chain stays empty, its plan none */
		smp_store_release(&e->gen, READ_ONCE(l45_rs_gen));
		return;
	}
	/* Addresses may have changed since first sight (UDP bind/connect). */
	v = e->view;
	l45_addrs(sk, NULL, &local, &remote);
	if (remote.port)
		v.remote = remote;
	if (local.port)
		v.local = local;
	spin_lock(&l45_cfg_lock);
	l45_rs_sock_refresh(e->rs, &v);
	spin_unlock(&l45_cfg_lock);
	/* e->gen doubles as a sequence count for lockless readers of the plan
	 * (l45_plan_now): 0 (never a configuration generation) while it is
	 * rewritten, the generation it was made for afterwards. */
	WRITE_ONCE(e->gen, 0);
	smp_wmb();
	l45_rs_sock_plan(e->rs, &e->plan);
	smp_store_release(&e->gen, l45_rs_sock_gen(e->rs));
}

/* The entry's current plan: copied without the lock when it is current and
 * not being rewritten; otherwise refreshed under the lock. */
static void l45_plan_now(struct l45_sk *e, struct sock *sk, struct l45_plan *p)
{
	u32 g = smp_load_acquire(&e->gen);

	if (g && g == READ_ONCE(l45_rs_gen)) {
		*p = e->plan;
		smp_rmb();
		if (READ_ONCE(e->gen) == g)
			return;
	}
	spin_lock(&e->lock);
	l45_refresh_locked(e, sk);
	*p = e->plan;
	spin_unlock(&e->lock);
}

/* Whether a call in this direction goes straight to the kernel: the plan
 * is current and no module acts on it. No lock. */
static inline bool l45_passes(struct l45_sk *e, bool send)
{
	if (smp_load_acquire(&e->gen) != READ_ONCE(l45_rs_gen))
		return false;
	return !(send ? READ_ONCE(e->plan.send) : READ_ONCE(e->plan.recv));
}

/* First sight of a socket: a new entry with its chain, matched now.
 * Returns the entry (an existing one if another thread won; *created, if
 * asked, says which), or NULL: a kernel socket, sk_user_data owned by
 * someone else, or no memory. Role L45_ROLE_UNKNOWN: an entry that is
 * never tapped (bypassed). */
struct l45_sk *l45_track(struct sock *sk, u8 proto, u8 role, struct msghdr *msg, bool *created)
{
	struct l45_sk *e;

	if (created)
		*created = false;
	if (sk->sk_kern_sock || READ_ONCE(sk->sk_user_data))
		return l45_entry(sk);
	e = kzalloc(sizeof(*e), GFP_KERNEL);
	if (!e)
		return NULL;
	e->rs = l45_rs_sock_new(proto, role);
	if (!e->rs) {
		kfree(e);
		return NULL;
	}
	e->sk = sk;
	spin_lock_init(&e->lock);
	mutex_init(&e->rx_mutex);
	mutex_init(&e->tx_mutex);
	l45_view_of(sk, proto, role, msg, &e->view);
	e->pid = task_tgid_nr(current);
	e->cookie = atomic64_inc_return(&l45_cookie);

	e->bypassed = role == L45_ROLE_UNKNOWN;
	spin_lock(&e->lock);
	if (!e->bypassed) {
		spin_lock(&l45_cfg_lock);
		l45_rs_sock_refresh(e->rs, &e->view);
		spin_unlock(&l45_cfg_lock);
		l45_rs_sock_plan(e->rs, &e->plan);
		e->gen = l45_rs_sock_gen(e->rs);
	} else {
		e->gen = READ_ONCE(l45_rs_gen);
	}
	spin_unlock(&e->lock);

	spin_lock(&l45_hash_lock);
	write_lock_bh(&sk->sk_callback_lock);
	if (sk->sk_user_data) {
		write_unlock_bh(&sk->sk_callback_lock);
		spin_unlock(&l45_hash_lock);
		l45_free_entry(e);
		return l45_entry(sk);
	}
	/* (the entry is complete before it is published) */
	smp_store_release(&sk->sk_user_data, l45_ud(e));
	write_unlock_bh(&sk->sk_callback_lock);
	hash_add(l45_hash, &e->node, (unsigned long)sk);
	spin_unlock(&l45_hash_lock);
	if (created)
		*created = true;
	return e;
}

static void l45_untrack(struct sock *sk)
{
	struct l45_sk *e = l45_entry(sk);
	bool found = false;

	if (!e)
		return;
	spin_lock(&l45_hash_lock);
	if (!hlist_unhashed(&e->node)) {
		write_lock_bh(&sk->sk_callback_lock);
		if (sk->sk_user_data == l45_ud(e))
			WRITE_ONCE(sk->sk_user_data, NULL);
		write_unlock_bh(&sk->sk_callback_lock);
		hash_del(&e->node);
		found = true;
	}
	spin_unlock(&l45_hash_lock);
	if (found)
		l45_free_entry(e);
}

/* Grow-only buffer (never under a spinlock). */
int l45_reserve(u8 **buf, size_t *cap, size_t need)
{
	u8 *nb;

	if (*cap >= need)
		return 0;
	nb = kvmalloc(need, GFP_KERNEL);
	if (!nb)
		return -ENOMEM;
	kvfree(*buf);
	*buf = nb;
	*cap = need;
	return 0;
}

/* ---------- in-flight accounting (module unload) ---------- */

static inline void l45_enter(void)
{
	this_cpu_inc(l45_inflight);
}

static inline void l45_leave(void)
{
	this_cpu_dec(l45_inflight);
}

static int l45_inflight_sum(void)
{
	int cpu, n = 0;

	for_each_possible_cpu(cpu)
		n += READ_ONCE(per_cpu(l45_inflight, cpu));
	return n;
}

/* ---------- waiting for data ourselves ----------
 * A blocking receive or accept waits here, not inside the real handler, so
 * that module unload can end the wait (it then returns -EINTR) instead of
 * waiting for traffic that may never come. Unload wakes the sockets it
 * knows; the others notice within L45_WAIT_SLICE. */
#define L45_WAIT_SLICE (HZ / 4)

static bool l45_readable(struct sock *sk, bool tcp)
{
	if (READ_ONCE(sk->sk_err) || !skb_queue_empty_lockless(&sk->sk_receive_queue))
		return true;
	if (tcp)
		return (READ_ONCE(sk->sk_shutdown) & RCV_SHUTDOWN) ||
		       READ_ONCE(sk->sk_state) == TCP_CLOSE ||
		       READ_ONCE(sk->sk_state) == TCP_LISTEN;
	return !skb_queue_empty_lockless(&udp_sk(sk)->reader_queue);
}

int l45_wait(struct sock *sk, long timeo, bool (*ready)(struct sock *, bool), bool tcp)
{
	long r, slice;

	if (!timeo || ready(sk, tcp))
		return 0;
	for (;;) {
		slice = min_t(long, timeo, L45_WAIT_SLICE);
		r = wait_event_interruptible_timeout(*sk_sleep(sk),
						     ready(sk, tcp) || READ_ONCE(l45_unloading), slice);
		if (r < 0)
			return sock_intr_errno(timeo);
		if (ready(sk, tcp))
			return 0;
		if (READ_ONCE(l45_unloading))
			return -EINTR;
		if (timeo != MAX_SCHEDULE_TIMEOUT) {
			timeo -= slice - r;
			if (timeo <= 0)
				return -EAGAIN;
		}
	}
}

static bool l45_acceptable(struct sock *sk, bool unused)
{
	return !reqsk_queue_empty(&inet_csk(sk)->icsk_accept_queue) ||
	       READ_ONCE(sk->sk_state) != TCP_LISTEN || READ_ONCE(sk->sk_err);
}

/* ---------- send ---------- */

static int l45_send_kbuf(struct sock *sk, struct msghdr *msg, const u8 *buf, size_t len,
			 int (*orig)(struct sock *, struct msghdr *, size_t))
{
	struct kvec kv = { .iov_base = (void *)buf, .iov_len = len };
	struct iov_iter saved = msg->msg_iter;
	int ret;

	iov_iter_kvec(&msg->msg_iter, ITER_SOURCE, &kv, 1, len);
	msg->msg_flags &= ~MSG_SPLICE_PAGES;
	ret = orig(sk, msg, len);
	msg->msg_iter = saved;
	return ret;
}

/* Bytes a stream send left over last time go first. 0 when none is left.
 * Caller holds tx_mutex. */
static int l45_flush_tx(struct l45_sk *e, struct sock *sk, struct msghdr *msg,
			int (*orig)(struct sock *, struct msghdr *, size_t))
{
	int ret;

	while (e->tx_off < e->tx_len) {
		ret = l45_send_kbuf(sk, msg, e->sout + e->tx_off, e->tx_len - e->tx_off, orig);
		if (ret <= 0)
			return ret ? ret : -EAGAIN;
		e->tx_off += ret;
	}
	e->tx_off = 0;
	WRITE_ONCE(e->tx_len, 0);
	return 0;
}

/* A datagram with one fixed insertion: the application's bytes around the
 * inserted ones, copied once into the entry's buffer (a DNS query is a few
 * dozen bytes; corking it into three appends costs more than the copy).
 * Caller holds tx_mutex. */
static int l45_send_splice(struct l45_sk *e, struct sock *sk, struct msghdr *msg, size_t len,
			   const struct l45_plan *p,
			   int (*orig)(struct sock *, struct msghdr *, size_t))
{
	size_t at = p->splice_at, n = p->splice_len, out_len = len + n;
	int ret;

	if (len < p->splice_min || len > L45_DGRAM_MAX)
		return orig(sk, msg, len);
	ret = l45_reserve(&e->sout, &e->sout_cap, max_t(size_t, out_len, 512));
	if (ret)
		return ret;
	if (!copy_from_iter_full(e->sout, at, &msg->msg_iter) ||
	    !copy_from_iter_full(e->sout + at + n, len - at, &msg->msg_iter))
		return -EFAULT;
	memcpy(e->sout + at, p->splice_bytes, n);
	ret = l45_send_kbuf(sk, msg, e->sout, out_len, orig);
	if (ret < 0) {
		spin_lock(&e->lock);
		l45_rs_error(e->rs);
		spin_unlock(&e->lock);
		return ret;
	}
	l45_rs_count(p->splice_slot, p->splice_id, 0, out_len);
	return len;
}

/* A small datagram with one fixed insertion (a DNS query): built on the
 * stack, so no buffer and no mutex. */
#define L45_SMALL_DGRAM 512

static int l45_send_splice_small(struct l45_sk *e, struct sock *sk, struct msghdr *msg,
				 size_t len, const struct l45_plan *p,
				 int (*orig)(struct sock *, struct msghdr *, size_t))
{
	size_t at = p->splice_at, n = p->splice_len, out_len = len + n;
	u8 buf[L45_SMALL_DGRAM];
	int ret;

	if (len < p->splice_min || out_len > sizeof(buf))
		return orig(sk, msg, len);
	if (!copy_from_iter_full(buf, at, &msg->msg_iter) ||
	    !copy_from_iter_full(buf + at + n, len - at, &msg->msg_iter))
		return -EFAULT;
	memcpy(buf + at, p->splice_bytes, n);
	ret = l45_send_kbuf(sk, msg, buf, out_len, orig);
	if (ret < 0) {
		spin_lock(&e->lock);
		l45_rs_error(e->rs);
		spin_unlock(&e->lock);
		return ret;
	}
	l45_rs_count(p->splice_slot, p->splice_id, 0, out_len);
	return len;
}

bool l45_send_retry(int ret)
{
	return ret == -EAGAIN || ret == -EINTR || ret == -ERESTARTSYS;
}

/* The bytes through the chain: a datagram at once, a stream in steps of
 * L45_CHUNK. Caller holds tx_mutex and nothing is pending. */
static int l45_send_chain(struct l45_sk *e, struct sock *sk, struct msghdr *msg, size_t size,
			  bool tcp, int (*orig)(struct sock *, struct msghdr *, size_t))
{
	size_t done = 0, n, cap, out_len = 0;
	struct l45_view v;
	const u8 *out;
	u8 plan;
	int verdict, ret;

	if (!tcp && size > L45_DGRAM_MAX)
		return orig(sk, msg, size);
	l45_view_of(sk, tcp ? IPPROTO_TCP : IPPROTO_UDP, e->view.role, msg, &v);
	while (done < size || (!tcp && !done)) {
		n = tcp ? min_t(size_t, size - done, L45_CHUNK) : size;
		spin_lock(&e->lock);
		l45_refresh_locked(e, sk);
		plan = e->plan.send;
		cap = l45_rs_send_cap(e->rs, n);
		spin_unlock(&e->lock);
		if (plan < L45_PLAN_BYTES) {
			/* The chain changed under this call: the rest as it is. */
			ret = orig(sk, msg, size - done);
			return ret < 0 ? (done ? done : ret) : done + ret;
		}
		ret = l45_reserve(&e->sin, &e->sin_cap, max_t(size_t, n, tcp ? L45_CHUNK : 512));
		if (!ret)
			ret = l45_reserve(&e->sout, &e->sout_cap,
					  max3(cap, n, (size_t)(tcp ? L45_CHUNK : 512)));
		if (ret)
			return done ? done : ret;
		if (!copy_from_iter_full(e->sin, n, &msg->msg_iter))
			return done ? done : -EFAULT;
		spin_lock(&e->lock);
		verdict = l45_rs_send(e->rs, &v, e->sin, n, e->sout, cap, &out_len);
		spin_unlock(&e->lock);
		if (verdict == L45_V_DROP) {
			done += n;
			if (!tcp)
				break;
			continue;
		}
		out = e->sout;
		if (verdict != L45_V_CUSTOMIZED) {
			out = e->sin;
			out_len = n;
		}
		ret = l45_send_kbuf(sk, msg, out, out_len, orig);
		if (ret < 0 && !(tcp && l45_send_retry(ret))) {
			spin_lock(&e->lock);
			l45_rs_error(e->rs);
			spin_unlock(&e->lock);
			return done ? done : ret;
		}
		if (tcp && ret < (int)out_len) {
			/* TCP took part of it (or none: a full buffer, a signal):
			 * the chain has run on these bytes, so keep the rest and
			 * send it first next time; the application has written
			 * them. */
			ret = max(ret, 0);
			if (out == e->sin)
				memcpy(e->sout, e->sin + ret, out_len - ret);
			e->tx_off = out == e->sin ? 0 : ret;
			WRITE_ONCE(e->tx_len, out == e->sin ? out_len - ret : out_len);
			return done + n;
		}
		done += n;
		if (!tcp)
			break;
	}
	return done;
}

static int l45_sendmsg_common(struct sock *sk, struct msghdr *msg, size_t size, u8 proto,
			      int (*orig)(struct sock *, struct msghdr *, size_t))
{
	bool tcp = proto == IPPROTO_TCP;
	struct l45_plan p;
	struct l45_sk *e;
	int ret;

	if (READ_ONCE(l45_unloading))
		return orig(sk, msg, size);
	e = l45_entry(sk);
	if (!e)
		e = tcp ? l45_adopt(sk) : l45_track(sk, proto, 0, msg, NULL);
	if (!e)
		return orig(sk, msg, size);
	if (l45_passes(e, true) && !(tcp && READ_ONCE(e->tx_len)))
		return orig(sk, msg, size);

	l45_plan_now(e, sk, &p);
	if (p.send && p.delay_ms) {
		msleep_interruptible(p.delay_ms);	/* no lock is held */
		/* the delaying module counts the bytes it held back, as the
		 * user-space tap does (and so is not idle while it delays) */
		l45_rs_count(p.delay_slot, p.delay_id, 0, size);
	}
	if (p.send < L45_PLAN_BYTES && !(tcp && READ_ONCE(e->tx_len)))
		return orig(sk, msg, size);	/* bytes untouched: no buffer, no mutex */
	if (p.send == L45_PLAN_SPLICE && size + p.splice_len <= L45_SMALL_DGRAM)
		return l45_send_splice_small(e, sk, msg, size, &p, orig);

	mutex_lock(&e->tx_mutex);
	if (tcp && e->tx_len) {
		ret = l45_flush_tx(e, sk, msg, orig);
		if (ret < 0)
			goto out;
	}
	switch (p.send) {
	case L45_PLAN_SPLICE:
		ret = l45_send_splice(e, sk, msg, size, &p, orig);
		break;
	case L45_PLAN_STREAM_TAG:
		if (l45_stream_tag_fits(msg, &p)) {
			bool fallback;
			int more;

			ret = l45_send_stream_tag(e, sk, msg, size, &p, orig, &fallback);
			if (ret < 0 || !fallback)
				break;
			/* the chain changed meanwhile: the rest through it */
			more = l45_send_chain(e, sk, msg, size - ret, tcp, orig);
			ret = more < 0 ? (ret ? ret : more) : ret + more;
			break;
		}
		fallthrough;
	case L45_PLAN_BYTES:
		ret = l45_send_chain(e, sk, msg, size, tcp, orig);
		break;
	default:	/* nothing, or a delay: the application's bytes as they are */
		ret = orig(sk, msg, size);
	}
out:
	mutex_unlock(&e->tx_mutex);
	return ret;
}

/* ---------- receive ---------- */

int l45_recv_kbuf(struct sock *sk, struct msghdr *msg, u8 *buf, size_t len, int flags,
			 int *addr_len,
			 int (*orig)(struct sock *, struct msghdr *, size_t, int, int *))
{
	struct kvec kv = { .iov_base = buf, .iov_len = len };
	struct iov_iter saved = msg->msg_iter;
	int ret;

	iov_iter_kvec(&msg->msg_iter, ITER_DEST, &kv, 1, len);
	ret = orig(sk, msg, len, flags, addr_len);
	msg->msg_iter = saved;
	return ret;
}

bool l45_rx_ready(struct sock *sk, bool tcp)
{
	return l45_readable(sk, tcp);
}

static int l45_recv_dgram(struct l45_sk *e, struct sock *sk, struct msghdr *msg, size_t len,
			  int flags, int *addr_len, const struct l45_plan *p,
			  int (*orig)(struct sock *, struct msghdr *, size_t, int, int *))
{
	size_t growth, cap = 0, out_len = 0, at = p->splice_at, k = p->splice_len, c1;
	struct l45_view v;
	const u8 *out;
	int n, verdict, ret;
	long timeo = sock_rcvtimeo(sk, flags & MSG_DONTWAIT);
	bool splice = p->recv == L45_PLAN_SPLICE;

	if (mutex_lock_interruptible(&e->rx_mutex))
		return -ERESTARTSYS;
	ret = l45_reserve(&e->rin, &e->rin_cap, L45_DGRAM_MAX);
	if (ret)
		goto out;
	if (!splice) {
		spin_lock(&e->lock);
		growth = l45_rs_recv_growth(e->rs);
		spin_unlock(&e->lock);
		cap = L45_DGRAM_MAX + growth + 128;
		ret = l45_reserve(&e->rx, &e->rx_cap, cap);
		if (ret)
			goto out;
		l45_view_of(sk, IPPROTO_UDP, e->view.role, NULL, &v);
	}
	for (;;) {
		ret = l45_wait(sk, timeo, l45_rx_ready, false);
		if (ret)
			goto out;
		n = l45_recv_kbuf(sk, msg, e->rin, L45_DGRAM_MAX,
				  (flags & ~(MSG_TRUNC | MSG_WAITALL)) | MSG_DONTWAIT, addr_len, orig);
		if (n == -EAGAIN && timeo)
			continue;
		if (n < 0) {
			ret = n;
			goto out;
		}
		if (flags & MSG_PEEK) {	/* documented: a peek shows the wire bytes */
			verdict = L45_V_ORIGINAL;
		} else if (splice) {
			/* The one insertion: recognised, it is delivered without
			 * the inserted bytes; otherwise dropped (what the
			 * module's own recv does on a server, Splice docs). */
			if (n >= p->splice_min + k && !memcmp(e->rin + at, p->splice_bytes, k)) {
				verdict = L45_V_CUSTOMIZED;
				out_len = n - k;
				l45_rs_count(p->splice_slot, p->splice_id, 1, out_len);
			} else {
				verdict = L45_V_DROP;
				l45_rs_count(p->splice_slot, p->splice_id, 2, 0);
			}
		} else {
			spin_lock(&e->lock);
			verdict = l45_rs_recv(e->rs, &v, e->rin, n, e->rx, cap, &out_len);
			spin_unlock(&e->lock);
		}
		if (verdict == L45_V_DROP) {
			if (!timeo) {
				ret = -EAGAIN;
				goto out;
			}
			continue;
		}
		break;
	}
	msg->msg_flags &= ~MSG_TRUNC;
	if (verdict != L45_V_CUSTOMIZED) {
		out = e->rin;
		out_len = n;
	} else {
		out = splice ? e->rin : e->rx;
	}
	n = min(out_len, len);
	if (verdict == L45_V_CUSTOMIZED && splice) {
		/* the bytes before the insertion, then those after it */
		c1 = min_t(size_t, at, n);
		if (copy_to_iter(out, c1, &msg->msg_iter) != c1 ||
		    copy_to_iter(out + at + k, n - c1, &msg->msg_iter) != n - c1) {
			ret = -EFAULT;
			goto out;
		}
	} else if (copy_to_iter(out, n, &msg->msg_iter) != n) {
		ret = -EFAULT;
		goto out;
	}
	if (out_len > len)
		msg->msg_flags |= MSG_TRUNC;
	ret = (flags & MSG_TRUNC) ? out_len : n;
out:
	mutex_unlock(&e->rx_mutex);
	return ret;
}

static int l45_recvmsg_common(struct sock *sk, struct msghdr *msg, size_t len, int flags,
			      int *addr_len, u8 proto,
			      int (*orig)(struct sock *, struct msghdr *, size_t, int, int *))
{
	bool tcp = proto == IPPROTO_TCP;
	struct l45_plan p;
	struct l45_sk *e;
	int ret;

	if (flags & (MSG_ERRQUEUE | MSG_OOB))
		return orig(sk, msg, len, flags, addr_len);
	if (READ_ONCE(l45_unloading))
		goto straight;	/* do not block inside the real handler while the module goes */
	e = l45_entry(sk);
	if (!e)
		e = tcp ? l45_adopt(sk) : l45_track(sk, proto, 1, NULL, NULL);
	if (!e)
		goto straight;
	if (l45_passes(e, false) && !(tcp && READ_ONCE(e->rx_len)))
		goto straight;
	l45_plan_now(e, sk, &p);
	if (tcp && (p.recv || READ_ONCE(e->rx_len)))
		return l45_recv_stream(e, sk, msg, len, flags, addr_len, orig);
	if (!tcp && p.recv)
		return l45_recv_dgram(e, sk, msg, len, flags, addr_len, &p, orig);
straight:
	ret = l45_wait(sk, sock_rcvtimeo(sk, flags & MSG_DONTWAIT), l45_rx_ready, tcp);
	return ret ? ret : orig(sk, msg, len, flags, addr_len);
}

/* ---------- the hooks ----------
 * With no module registered (the static key off) a send or receive costs
 * the key test, the in-flight count and (UDP) a look at sk_user_data,
 * unless a stream still has bytes the tap holds from before the last
 * module went (they go first). */

/* With no module registered a UDP socket is still seen at its first call
 * (an entry, once), so that modules registered later treat it as the live
 * socket it is (only `attach immediate` ones join it); so is a TCP
 * connection made before the module was loaded (shim_tcp.c). Later calls
 * cost one load of sk_user_data. */
static inline void l45_first_sight(struct sock *sk, u8 proto, u8 role, struct msghdr *msg)
{
	if (likely(READ_ONCE(sk->sk_user_data)) || READ_ONCE(l45_unloading))
		return;
	if (proto == IPPROTO_UDP)
		l45_track(sk, proto, role, msg, NULL);
	else
		l45_adopt(sk);
}

static inline bool l45_stream_holds(struct sock *sk, u8 proto)
{
	struct l45_sk *e;

	if (proto != IPPROTO_TCP)
		return false;
	e = l45_entry(sk);
	return e && (READ_ONCE(e->rx_len) || READ_ONCE(e->tx_len));
}

static __always_inline int l45_send_hook(struct sock *sk, struct msghdr *msg, size_t size,
					 u8 proto, int (*orig)(struct sock *, struct msghdr *, size_t))
{
	int ret;

	l45_enter();
	if (static_branch_unlikely(&l45_configured) || l45_stream_holds(sk, proto)) {
		ret = l45_sendmsg_common(sk, msg, size, proto, orig);
	} else {
		l45_first_sight(sk, proto, 0, msg);
		ret = orig(sk, msg, size);
	}
	l45_leave();
	return ret;
}

static __always_inline int l45_recv_hook(struct sock *sk, struct msghdr *msg, size_t len,
					 int flags, int *addr_len, u8 proto,
					 int (*orig)(struct sock *, struct msghdr *, size_t, int,
						     int *))
{
	int ret;

	l45_enter();
	if (static_branch_unlikely(&l45_configured) || l45_stream_holds(sk, proto)) {
		ret = l45_recvmsg_common(sk, msg, len, flags, addr_len, proto, orig);
	} else {
		l45_first_sight(sk, proto, 1, NULL);
		ret = (flags & (MSG_ERRQUEUE | MSG_OOB)) ? 0 :
		      l45_wait(sk, sock_rcvtimeo(sk, flags & MSG_DONTWAIT), l45_rx_ready,
			       proto == IPPROTO_TCP);
		if (!ret)
			ret = orig(sk, msg, len, flags, addr_len);
	}
	l45_leave();
	return ret;
}

static int l45_connect_hook(struct sock *sk, struct sockaddr *uaddr, int addr_len,
			    int (*orig)(struct sock *, struct sockaddr *, int))
{
	int ret;

	l45_enter();
	ret = orig(sk, uaddr, addr_len);
	/* Called under lock_sock: sleeping allocation is allowed. */
	if (!ret && !READ_ONCE(l45_unloading) && !l45_entry(sk))
		l45_track(sk, IPPROTO_TCP, 0, NULL, NULL);
	l45_leave();
	return ret;
}

static struct sock *l45_accept_hook(struct sock *sk, struct proto_accept_arg *arg,
				    struct sock *(*orig)(struct sock *, struct proto_accept_arg *))
{
	struct sock *newsk;
	int err;

	l45_enter();
	err = l45_wait(sk, sock_rcvtimeo(sk, arg->flags & O_NONBLOCK), l45_acceptable, true);
	if (err && err != -EAGAIN) {
		arg->err = err;
		l45_leave();
		return NULL;
	}
	newsk = orig(sk, arg);
	if (newsk && !READ_ONCE(l45_unloading))
		l45_track(newsk, IPPROTO_TCP, 1, NULL, NULL);
	l45_leave();
	return newsk;
}

static void l45_close_hook(struct sock *sk, long timeout, void (*orig)(struct sock *, long))
{
	l45_enter();
	l45_untrack(sk);
	orig(sk, timeout);
	l45_leave();
}

/* One set of handlers per hooked struct proto (each calls its own
 * originals). */
#define L45_TCP_HOOKS(h)								\
static int h##_sendmsg(struct sock *sk, struct msghdr *msg, size_t size)		\
{ return l45_send_hook(sk, msg, size, IPPROTO_TCP, h.orig.sendmsg); }			\
static int h##_recvmsg(struct sock *sk, struct msghdr *msg, size_t len, int flags,	\
		       int *addr_len)							\
{ return l45_recv_hook(sk, msg, len, flags, addr_len, IPPROTO_TCP, h.orig.recvmsg); }	\
static int h##_connect(struct sock *sk, struct sockaddr *uaddr, int addr_len)		\
{ return l45_connect_hook(sk, uaddr, addr_len, h.orig.connect); }			\
static struct sock *h##_accept(struct sock *sk, struct proto_accept_arg *arg)		\
{ return l45_accept_hook(sk, arg, h.orig.accept); }					\
static void h##_close(struct sock *sk, long timeout)					\
{ l45_close_hook(sk, timeout, h.orig.close); }

#define L45_UDP_HOOKS(h)								\
static int h##_sendmsg(struct sock *sk, struct msghdr *msg, size_t size)		\
{ return l45_send_hook(sk, msg, size, IPPROTO_UDP, h.orig.sendmsg); }			\
static int h##_recvmsg(struct sock *sk, struct msghdr *msg, size_t len, int flags,	\
		       int *addr_len)							\
{ return l45_recv_hook(sk, msg, len, flags, addr_len, IPPROTO_UDP, h.orig.recvmsg); }	\
static void h##_close(struct sock *sk, long timeout)					\
{ l45_close_hook(sk, timeout, h.orig.close); }

L45_TCP_HOOKS(l45_tcp4)
L45_TCP_HOOKS(l45_tcp6)
L45_UDP_HOOKS(l45_udp4)
L45_UDP_HOOKS(l45_udp6)

/* ---------- init / exit ---------- */

/* The struct proto of a kernel-made socket: 6.12 exports tcp_prot and
 * udp_prot but not tcpv6_prot and udpv6_prot. */
static struct proto *l45_prot_of(int family, int type, int protocol)
{
	struct socket *sock;
	struct proto *p;

	if (sock_create_kern(&init_net, family, type, protocol, &sock))
		return NULL;
	p = READ_ONCE(sock->sk->sk_prot);
	sock_release(sock);
	return p;
}

static void l45_hook_tcp(struct l45_hook *h, struct proto *prot,
			 int (*sendmsg)(struct sock *, struct msghdr *, size_t),
			 int (*recvmsg)(struct sock *, struct msghdr *, size_t, int, int *),
			 int (*connect)(struct sock *, struct sockaddr *, int),
			 struct sock *(*accept)(struct sock *, struct proto_accept_arg *),
			 void (*close)(struct sock *, long))
{
	h->prot = prot;
	h->orig = *prot;
	WRITE_ONCE(prot->sendmsg, sendmsg);
	WRITE_ONCE(prot->recvmsg, recvmsg);
	WRITE_ONCE(prot->connect, connect);
	WRITE_ONCE(prot->accept, accept);
	WRITE_ONCE(prot->close, close);
}

static void l45_hook_udp(struct l45_hook *h, struct proto *prot,
			 int (*sendmsg)(struct sock *, struct msghdr *, size_t),
			 int (*recvmsg)(struct sock *, struct msghdr *, size_t, int, int *),
			 void (*close)(struct sock *, long))
{
	h->prot = prot;
	h->orig = *prot;
	WRITE_ONCE(prot->sendmsg, sendmsg);
	WRITE_ONCE(prot->recvmsg, recvmsg);
	WRITE_ONCE(prot->close, close);
}

static void l45_unhook(struct l45_hook *h)
{
	if (!h->prot)
		return;
	WRITE_ONCE(h->prot->sendmsg, h->orig.sendmsg);
	WRITE_ONCE(h->prot->recvmsg, h->orig.recvmsg);
	WRITE_ONCE(h->prot->connect, h->orig.connect);
	WRITE_ONCE(h->prot->accept, h->orig.accept);
	WRITE_ONCE(h->prot->close, h->orig.close);
}

int l45_shim_init(void)
{
	struct proto *tcp6 = l45_prot_of(AF_INET6, SOCK_STREAM, IPPROTO_TCP);
	struct proto *udp6 = l45_prot_of(AF_INET6, SOCK_DGRAM, IPPROTO_UDP);
	int err;

	if (!tcp6 || !udp6) {
		pr_err("l45: no IPv6 TCP/UDP sockets to hook\n");
		return -EAFNOSUPPORT;
	}
	err = l45_nl_init();
	if (err)
		return err;
	l45_hook_tcp(&l45_tcp4, &tcp_prot, l45_tcp4_sendmsg, l45_tcp4_recvmsg, l45_tcp4_connect,
		     l45_tcp4_accept, l45_tcp4_close);
	l45_hook_tcp(&l45_tcp6, tcp6, l45_tcp6_sendmsg, l45_tcp6_recvmsg, l45_tcp6_connect,
		     l45_tcp6_accept, l45_tcp6_close);
	l45_hook_udp(&l45_udp4, &udp_prot, l45_udp4_sendmsg, l45_udp4_recvmsg, l45_udp4_close);
	l45_hook_udp(&l45_udp6, udp6, l45_udp6_sendmsg, l45_udp6_recvmsg, l45_udp6_close);
	l45_hooked = true;
	pr_info("l45: tap on TCP and UDP over IPv4 and IPv6, generic netlink family %s\n",
		L45_GENL_NAME);
	return 0;
}

void l45_shim_exit(void)
{
	struct l45_sk *e;
	struct hlist_node *tmp;
	HLIST_HEAD(dead);
	int bkt;

	/* 0. No more configuration requests or dumps. */
	l45_nl_exit();
	if (l45_hooked) {
		/* 1. New calls pass through; waiters in l45_wait wake up;
		 * sockets forget their entries (which stay allocated until
		 * every call still using one has left, step 3). */
		WRITE_ONCE(l45_unloading, 1);
		smp_mb();
		spin_lock(&l45_hash_lock);
		hash_for_each(l45_hash, bkt, e, node) {
			write_lock_bh(&e->sk->sk_callback_lock);
			if (e->sk->sk_user_data == l45_ud(e))
				WRITE_ONCE(e->sk->sk_user_data, NULL);
			write_unlock_bh(&e->sk->sk_callback_lock);
			wake_up_interruptible_all(sk_sleep(e->sk));
		}
		spin_unlock(&l45_hash_lock);
		/* 2. Give the handlers back. */
		l45_unhook(&l45_tcp4);
		l45_unhook(&l45_tcp6);
		l45_unhook(&l45_udp4);
		l45_unhook(&l45_udp6);
		/* 3. A caller that loaded one of our pointers but has not yet
		 * counted itself in cannot sleep in between (PREEMPT_NONE), so
		 * after a grace period every such caller is counted and the
		 * count only falls. Then wait for the calls still running in
		 * our code (waiters notice the unload within L45_WAIT_SLICE). */
#ifdef CONFIG_TASKS_RCU
		synchronize_rcu_tasks();
#else
		synchronize_rcu();
#endif
		while (l45_inflight_sum())
			msleep(5);
		l45_hooked = false;
	}
	spin_lock(&l45_hash_lock);
	hash_for_each_safe(l45_hash, bkt, tmp, e, node) {
		hash_del(&e->node);
		hlist_add_head(&e->node, &dead);
	}
	spin_unlock(&l45_hash_lock);
	/* The entries are off the table; free them outside the lock. */
	hlist_for_each_entry_safe(e, tmp, &dead, node)
		l45_free_entry(e);
}
