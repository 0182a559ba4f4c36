// SPDX-License-Identifier: GPL-2.0
/*
 * Layer 4.5 kernel tap, C shim, TCP only:
 * - connections made before the module was loaded: the hooks see their
 *   calls (tcp_prot and tcpv6_prot are changed in place), so they are
 *   adopted at their first send or receive after the load, with the role
 *   their local port tells; one whose role cannot be told is left
 *   untapped, logged and counted (module parameters `adopted` and
 *   `bypassed`, read-only in /sys/module/l45/parameters, and the
 *   `bypassed` statistic of each module that selects it);
 * - stream-tag sends built from the application's own pages plus the tag
 *   (no copy of the application's bytes in the tap: TCP copies them once,
 *   as it does for any send), and stream-tag receives that TCP copies
 *   straight into the application's buffer, tags behind the payload;
 * - the stream receive path (bytes held for the application, MSG_PEEK,
 *   MSG_WAITALL).
 * Locks as in shim.c.
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/uio.h>
#include <linux/bvec.h>
#include <net/sock.h>
#include <net/inet_sock.h>
#include <net/inet_hashtables.h>
#include <net/inet6_hashtables.h>
#include <net/tcp.h>
#include <net/ipv6.h>

#include "l45.h"
#include "shim.h"

/* ---------- connections older than the module ---------- */

static atomic_t l45_adopted = ATOMIC_INIT(0);
static atomic_t l45_bypassed = ATOMIC_INIT(0);

static int l45_get_count(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%d\n", atomic_read((atomic_t *)kp->arg));
}

static const struct kernel_param_ops l45_count_ops = { .get = l45_get_count };
module_param_cb(adopted, &l45_count_ops, &l45_adopted, 0444);
MODULE_PARM_DESC(adopted, "TCP connections made before the load, tapped since their first call");
module_param_cb(bypassed, &l45_count_ops, &l45_bypassed, 0444);
MODULE_PARM_DESC(bypassed, "TCP connections made before the load, not tapped (role unknown)");

/* Whether a listening socket in sk's namespace takes connections to sk's
 * local address and port: then sk was accepted from it. */
static bool l45_has_listener(struct sock *sk)
{
	struct inet_sock *inet = inet_sk(sk);
	struct net *net = sock_net(sk);
	struct inet_hashinfo *h = net->ipv4.tcp_death_row.hashinfo;
	unsigned short port = ntohs(inet->inet_sport);
	struct sock *l;

	rcu_read_lock();
#if IS_ENABLED(CONFIG_IPV6)
	if (sk->sk_family == AF_INET6 && !ipv6_addr_v4mapped(&sk->sk_v6_daddr))
		l = inet6_lookup_listener(net, h, NULL, 0, &sk->sk_v6_daddr, inet->inet_dport,
					  &sk->sk_v6_rcv_saddr, port, sk->sk_bound_dev_if, 0);
	else
#endif
		l = __inet_lookup_listener(net, h, NULL, 0, inet->inet_daddr, inet->inet_dport,
					   inet->inet_rcv_saddr, port, sk->sk_bound_dev_if, 0);
	rcu_read_unlock();
	return l;
}

/* The role of a connection first seen after it was set up: server if a
 * listener takes connections on its local port, client if that port is in
 * the ephemeral range (connect picked it); otherwise unknown (a client
 * bound to a fixed port, or a server whose listener has closed). */
static u8 l45_role_of(struct sock *sk)
{
	int low, high, port = ntohs(inet_sk(sk)->inet_sport);

	if (l45_has_listener(sk))
		return 1;
	inet_sk_get_local_port_range(sk, &low, &high);
	return port >= low && port <= high ? 0 : L45_ROLE_UNKNOWN;
}

/* Adoptions logged one by one (of each kind); the others are counted only.
 * Not pr_info_ratelimited: it drops a message when two CPUs log at once. */
#define L45_ADOPT_LOG_MAX 64

/* Logs an adoption; `n` is its number (the counter after it). */
static void l45_log_adopted(const struct l45_sk *e, int n)
{
	const struct l45_sockaddr *l = &e->view.local, *r = &e->view.remote;
	static const char *const what[] = { "tapped as a client", "tapped as a server",
					    "role unknown, not tapped" };

	if (n == L45_ADOPT_LOG_MAX + 1)
		pr_info("l45: more TCP connections made before the load: counted in /sys/module/l45/parameters/%s only\n",
			e->bypassed ? "bypassed" : "adopted");
	if (n > L45_ADOPT_LOG_MAX)
		return;
	if (l->family == 4)
		pr_info("l45: TCP %pI4:%u -> %pI4:%u (pid %d) was connected before the load: %s\n",
			l->addr, l->port, r->addr, r->port, e->pid, what[e->view.role]);
	else
		pr_info("l45: TCP [%pI6c]:%u -> [%pI6c]:%u (pid %d) was connected before the load: %s\n",
			l->addr, l->port, r->addr, r->port, e->pid, what[e->view.role]);
}

/* A TCP connection the tap has not seen at connect/accept: made before the
 * module was loaded (or its entry could not be allocated then). Returns
 * its new entry, or NULL (not a connection with data to move, a kernel
 * socket, sk_user_data taken, no memory). Process context, no lock held. */
struct l45_sk *l45_adopt(struct sock *sk)
{
	int state = READ_ONCE(sk->sk_state);
	struct l45_sk *e;
	bool new;

	if (sk->sk_kern_sock || READ_ONCE(sk->sk_user_data) ||
	    (state != TCP_ESTABLISHED && state != TCP_CLOSE_WAIT))
		return NULL;
	e = l45_track(sk, IPPROTO_TCP, l45_role_of(sk), NULL, &new);
	if (e && new) {
		l45_log_adopted(e, atomic_inc_return(e->bypassed ? &l45_bypassed : &l45_adopted));
		if (e->bypassed) {	/* each module that selects it counts it */
			spin_lock(&l45_cfg_lock);
			l45_rs_count_bypass(&e->view);
			spin_unlock(&l45_cfg_lock);
		}
	}
	return e && !e->bypassed ? e : NULL;
}

/* ---------- stream-tag sends built in place ----------
 * The application's bytes are pinned where they are (no copy), and TCP is
 * handed a bio_vec list of them with the tag between them every
 * `interval` bytes; TCP's own copy is the only one. Intervals below
 * L45_TAG_MIN_INTERVAL go through the module (one segment per few dozen
 * bytes costs more than copying), as do kernel-made and MSG_ZEROCOPY sends
 * (the tag's memory must not be lent to an skb). */
#define L45_TAG_MIN_INTERVAL 256
#define L45_TAG_STEP_TAGS 90	/* a step holds at most this many intervals */
#define L45_TAG_PAGES (L45_CHUNK / PAGE_SIZE + 4)
/* every page fragment, split by each tag, plus the tags */
#define L45_TAG_SEGS (L45_TAG_PAGES + 2 * (L45_TAG_STEP_TAGS + 1))
/* what a step puts on the wire at most (sout keeps what TCP did not take) */
#define L45_TAG_WIRE_MAX (L45_CHUNK + (L45_TAG_STEP_TAGS + 1) * 64)

struct l45_tag_tx {
	u8 tag[64];		/* first: never straddles a page (kmalloc of 4 KiB) */
	struct page *pages[L45_TAG_PAGES];
	struct {		/* one extraction: pages[page..], from off, len bytes */
		u32 page, off, len;
	} ext[L45_TAG_PAGES];
	struct bio_vec wire[L45_TAG_SEGS];
};

bool l45_stream_tag_fits(const struct msghdr *msg, const struct l45_plan *p)
{
	return p->interval >= L45_TAG_MIN_INTERVAL && user_backed_iter(&msg->msg_iter) &&
	       !(msg->msg_flags & MSG_ZEROCOPY);
}

/* Whether the plan `now` still has the stream tag `p` was made with, on
 * the receiving side (`recv`) or the sending one. */
static bool l45_same_tag(const struct l45_plan *now, const struct l45_plan *p, bool recv)
{
	return (recv ? now->recv : now->send) == L45_PLAN_STREAM_TAG &&
	       now->splice_id == p->splice_id &&
	       now->interval == p->interval && now->splice_len == p->splice_len &&
	       !memcmp(now->splice_bytes, p->splice_bytes, p->splice_len);
}

/* One step: up to `want` application bytes pinned, laid out with their
 * tags and sent. Returns the application bytes taken (TCP took them, or
 * what it did not take is kept in sout and sent first next time: *stop),
 * 0 with *fallback if the chain changed (nothing taken), or an error.
 * Caller holds tx_mutex. */
static int l45_tag_step(struct l45_sk *e, struct sock *sk, struct msghdr *msg, size_t want,
			const struct l45_plan *p,
			int (*orig)(struct sock *, struct msghdr *, size_t), bool *fallback,
			bool *stop)
{
	struct l45_tag_tx *t = e->tag_tx;
	size_t got = 0, wire_len = 0, off, left, take, in_page;
	unsigned int npages = 0, next = 0, nw = 0, k, pg;
	struct iov_iter saved, it;
	struct page **pp;
	ssize_t r = 0;
	s64 since;
	int ret;

	/* 1. Pin (may fault the pages in: no lock is held). */
	while (got < want && npages < L45_TAG_PAGES) {
		pp = &t->pages[npages];
		r = iov_iter_extract_pages(&msg->msg_iter, &pp, want - got, L45_TAG_PAGES - npages,
					   0, &off);
		if (r <= 0)
			break;
		t->ext[next].page = npages;
		t->ext[next].off = off;
		t->ext[next].len = r;
		next++;
		npages += DIV_ROUND_UP(off + r, PAGE_SIZE);
		got += r;
	}
	if (!got)
		return r < 0 ? r : -EFAULT;

	/* 2. The layout, where the module stands now. */
	spin_lock(&e->lock);
	l45_refresh_locked(e, sk);
	since = l45_same_tag(&e->plan, p, false) ? l45_rs_stream_since(e->rs, p->splice_id) : -1;
	if (since < 0) {
		spin_unlock(&e->lock);
		unpin_user_pages(t->pages, npages);
		iov_iter_revert(&msg->msg_iter, got);
		*fallback = true;
		return 0;
	}
	for (k = 0; k < next; k++) {
		pg = t->ext[k].page;
		off = t->ext[k].off;
		for (left = t->ext[k].len; left; left -= in_page, pg++, off = 0) {
			in_page = min_t(size_t, left, PAGE_SIZE - off);
			for (take = 0; take < in_page; ) {
				size_t n;

				if (since >= p->interval) {
					bvec_set_page(&t->wire[nw++], virt_to_page(t->tag),
						      p->splice_len, offset_in_page(t->tag));
					wire_len += p->splice_len;
					since = 0;
				}
				n = min_t(size_t, in_page - take, p->interval - since);
				bvec_set_page(&t->wire[nw++], t->pages[pg], n, off + take);
				take += n;
				since += n;
				wire_len += n;
			}
		}
	}
	l45_rs_stream_set(e->rs, p->splice_id, since);
	spin_unlock(&e->lock);
	l45_rs_count(p->splice_slot, p->splice_id, 0, wire_len);

	/* 3. Send. */
	iov_iter_bvec(&it, ITER_SOURCE, t->wire, nw, wire_len);
	saved = msg->msg_iter;
	msg->msg_iter = it;
	msg->msg_flags &= ~MSG_SPLICE_PAGES;
	ret = orig(sk, msg, wire_len);
	msg->msg_iter = saved;
	if (ret < 0 && !l45_send_retry(ret)) {
		spin_lock(&e->lock);
		l45_rs_error(e->rs);
		spin_unlock(&e->lock);
		unpin_user_pages(t->pages, npages);
		return ret;
	}
	if (ret < (int)wire_len) {
		/* TCP took part of it (or none: a full buffer, a signal): the
		 * tags are laid out, so keep the rest and send it first next
		 * time; the application has written these bytes. */
		ret = max(ret, 0);
		iov_iter_bvec(&it, ITER_SOURCE, t->wire, nw, wire_len);
		iov_iter_advance(&it, ret);
		e->tx_off = 0;
		WRITE_ONCE(e->tx_len, copy_from_iter(e->sout, wire_len - ret, &it));
		*stop = true;
	}
	unpin_user_pages(t->pages, npages);
	return got;
}

/* A send on a stream whose only module changing sends is a stream tag
 * (L45_PLAN_STREAM_TAG, l45_stream_tag_fits). Returns the application
 * bytes taken or an error; *fallback: the chain changed meanwhile, the
 * caller sends the rest through it. Caller holds tx_mutex, nothing is
 * pending. */
int l45_send_stream_tag(struct l45_sk *e, struct sock *sk, struct msghdr *msg, size_t size,
			const struct l45_plan *p, int (*orig)(struct sock *, struct msghdr *, size_t),
			bool *fallback)
{
	size_t done = 0, want;
	bool stop = false;
	int ret;

	BUILD_BUG_ON(sizeof(struct l45_tag_tx) > PAGE_SIZE);
	BUILD_BUG_ON(offsetof(struct l45_tag_tx, tag) != 0);
	*fallback = false;
	if (!e->tag_tx) {
		e->tag_tx = kmalloc(sizeof(*e->tag_tx), GFP_KERNEL);
		if (!e->tag_tx)
			return -ENOMEM;
	}
	ret = l45_reserve(&e->sout, &e->sout_cap, L45_TAG_WIRE_MAX);
	if (ret)
		return ret;
	memcpy(e->tag_tx->tag, p->splice_bytes, p->splice_len);
	while (done < size && !stop && !*fallback) {
		want = min3(size - done, (size_t)L45_CHUNK, (size_t)p->interval * L45_TAG_STEP_TAGS);
		ret = l45_tag_step(e, sk, msg, want, p, orig, fallback, &stop);
		if (ret < 0)
			return done ? done : ret;
		done += ret;
	}
	return done;
}

/* ---------- stream-tag receives stripped in place ----------
 * Once the module has recognised the opening tag, the shim finds the tags
 * in what TCP gave and copies only the bytes between them to the
 * application (no pass through the module's output buffer), keeping the
 * module's state as its own recv would. Before recognition, and with
 * bytes held or MSG_PEEK, the module does it (l45_recv_stream). */

/* Moves the module's receiving state past `in` (n bytes from TCP). Returns
 * the offset from which the bytes are the application's as they are (a
 * tag out of step: the module stops stripping there, and a stream that is
 * not tagged: 0; n if neither), with the state they start from in *st0;
 * or -1: the module decides (recognition pending, or the chain changed).
 * Caller holds e->lock. */
long l45_tag_scan(struct l45_sk *e, const struct l45_plan *p, const u8 *in, size_t n,
		  struct l45_tag_rx *st0)
{
	struct l45_tag_rx st;
	size_t at = 0, pos, m, ok;
	long plain = n;

	if (!l45_same_tag(&e->plan, p, true) || l45_rs_stream_rx(e->rs, p->splice_id, &st, 0) ||
	    st.recognition == L45_RECOG_UNKNOWN)
		return -1;
	*st0 = st;
	if (st.recognition == L45_RECOG_NOT_MINE)
		return 0;
	while (at < n) {
		if (st.tag_left) {
			pos = p->splice_len - st.tag_left;
			m = min_t(size_t, st.tag_left, n - at);
			ok = 0;
			if (!memcmp(in + at, p->splice_bytes + pos, m))
				ok = m;
			else
				while (in[at + ok] == p->splice_bytes[pos + ok])
					ok++;
			st.tag_left -= ok;
			at += ok;
			if (ok < m) {	/* out of step: stop stripping rather than eat data */
				st.recognition = L45_RECOG_NOT_MINE;
				plain = at;
				break;
			}
			continue;
		}
		m = min_t(size_t, st.until_tag, n - at);
		at += m;
		st.until_tag -= m;
		if (!st.until_tag) {
			st.tag_left = p->splice_len;
			st.until_tag = p->interval;
		}
	}
	l45_rs_stream_rx(e->rs, p->splice_id, &st, 1);
	return plain;
}

/* Copies the application's bytes of `in` to msg, as l45_tag_scan laid
 * them out: the payload between the tags before `plain`, everything from
 * it. Returns the bytes copied or -EFAULT. No lock held (may fault). */
long l45_tag_deliver(struct msghdr *msg, const struct l45_plan *p, const u8 *in, size_t n,
		     struct l45_tag_rx st, long plain)
{
	size_t at = 0, k;
	long out = 0;

	if (st.recognition == L45_RECOG_NOT_MINE)
		plain = 0;
	while (at < plain) {
		if (st.tag_left) {
			k = min_t(size_t, st.tag_left, plain - at);
			st.tag_left -= k;
			at += k;
			continue;
		}
		k = min_t(size_t, st.until_tag, plain - at);
		if (copy_to_iter(in + at, k, &msg->msg_iter) != k)
			return -EFAULT;
		out += k;
		at += k;
		st.until_tag -= k;
		if (!st.until_tag) {
			st.tag_left = p->splice_len;
			st.until_tag = p->interval;
		}
	}
	k = n - plain;
	if (k && copy_to_iter(in + plain, k, &msg->msg_iter) != k)
		return -EFAULT;
	return out + k;
}

/* ---------- stream-tag receives into the application's buffer ----------
 * On a recognised stream, a receive into one user buffer (read, recv,
 * recvfrom, a one-element recvmsg: ITER_UBUF) hands TCP an iovec list
 * over that buffer: the payload between the tags goes straight where the
 * application wants it, contiguous from the start, and the tags behind
 * it, in the part of the buffer the receive does not return; TCP's copy
 * (copy_to_user, as untapped) is the only one, no page is pinned. The
 * tags are then read back (their bytes only) and checked. TCP is asked
 * for at most what the buffer holds, so a tag out of step is handled in
 * place: the bytes from its first wrong byte on, which the module hands
 * to the application as they came, are rebuilt in wire order and written
 * after the payload before them. At most 90 intervals a step, as for
 * sends. Smaller intervals, other buffers (readv, kernel-made), peeks
 * and held bytes go the way above (l45_tag_scan). */
#define L45_TAG_RX_MIN_INTERVAL 64
#define L45_TAG_RX_TAGS (L45_TAG_STEP_TAGS + 2)
#define L45_TAG_RX_SEGS (2 * L45_TAG_RX_TAGS + 1)

struct l45_tag_rxd {
	u8 tags[L45_TAG_RX_TAGS * 64];		/* what came where tags were due */
	struct iovec wire[L45_TAG_RX_SEGS];	/* payload spans, then tag spans, in wire order */
};

/* Lays out at most `room` wire bytes from state `st` over the user buffer
 * at `base`: payload spans from base on, tag spans after all of them
 * (from *tags_at). Returns the wire bytes laid out, their segments in *nw. */
static size_t l45_tag_rx_layout(struct l45_tag_rxd *t, const struct l45_plan *p,
				struct l45_tag_rx st, char __user *base, size_t room, unsigned int *nw,
				char __user **tags_at)
{
	size_t wire = 0, pay = 0, tags = 0, m;
	unsigned int n = 0, k, ntags = 0;

	while (wire < room && n < L45_TAG_RX_SEGS) {
		if (st.tag_left) {
			if (ntags == L45_TAG_RX_TAGS)
				break;
			m = min_t(size_t, st.tag_left, room - wire);
			t->wire[n].iov_base = NULL;	/* a tag: placed below */
			st.tag_left -= m;
			ntags++;
		} else {
			m = min_t(size_t, st.until_tag, room - wire);
			t->wire[n].iov_base = base + pay;
			pay += m;
			st.until_tag -= m;
			if (!st.until_tag) {
				st.tag_left = p->splice_len;
				st.until_tag = p->interval;
			}
		}
		t->wire[n++].iov_len = m;
		wire += m;
	}
	*tags_at = base + pay;
	for (k = 0; k < n; k++)
		if (!t->wire[k].iov_base) {
			t->wire[k].iov_base = base + pay + tags;
			tags += t->wire[k].iov_len;
		}
	*nw = n;
	return wire;
}

/* Checks the tags among the `n` wire bytes received as l45_tag_rx_layout
 * laid them out (`tags`: the tag bytes, in order) and moves *st past
 * them. Returns the wire offset from which the bytes are the
 * application's as they came (a tag out of step), or n; *pay is the
 * payload before that offset. */
static size_t l45_tag_rx_check(const u8 *tags, const struct l45_plan *p, struct l45_tag_rx *st,
			       size_t n, size_t *pay)
{
	size_t at = 0, m, ok, pos;

	*pay = 0;
	while (at < n) {
		if (st->tag_left) {
			pos = p->splice_len - st->tag_left;
			m = min_t(size_t, st->tag_left, n - at);
			ok = m;
			if (memcmp(tags, p->splice_bytes + pos, m))
				for (ok = 0; tags[ok] == p->splice_bytes[pos + ok]; ok++)
					;
			tags += m;
			st->tag_left -= ok;
			at += ok;
			if (ok < m) {	/* out of step: stop stripping rather than eat data */
				st->recognition = L45_RECOG_NOT_MINE;
				return at;
			}
			continue;
		}
		m = min_t(size_t, st->until_tag, n - at);
		at += m;
		*pay += m;
		st->until_tag -= m;
		if (!st->until_tag) {
			st->tag_left = p->splice_len;
			st->until_tag = p->interval;
		}
	}
	return n;
}

/* One receive of at most `want` wire bytes (want is at most what the
 * application's buffer still takes) on a stream whose receiving side is
 * the stream tag `p`, straight into the application's buffer. Returns
 * what TCP's recvmsg returned (wire bytes, 0 at the end of the stream, or
 * an error), with the application's bytes delivered (msg advanced past
 * them) in *delivered; or, with *direct false, nothing was done
 * (recognition pending, the chain changed, a buffer this path does not
 * take): the caller goes through the entry's buffer. Caller holds
 * rx_mutex and no spinlock; flags have MSG_DONTWAIT and neither MSG_PEEK
 * nor MSG_WAITALL. */
static int l45_tag_recv_direct(struct l45_sk *e, struct sock *sk, struct msghdr *msg,
			       size_t want, int flags, int *addr_len, const struct l45_plan *p,
			       int (*orig)(struct sock *, struct msghdr *, size_t, int, int *),
			       size_t *delivered, bool *direct)
{
	struct l45_tag_rxd *t = e->tag_rxd;
	struct l45_tag_rx st0, st;
	struct iov_iter saved, it;
	size_t room, plain, pay, tail, tag_bytes, at, m;
	char __user *base, *tags_at;
	unsigned int nw, k;
	bool ok;
	int n;

	*delivered = 0;
	*direct = false;
	/* (MSG_TRUNC on TCP discards the bytes: no tags to read back) */
	if (p->interval < L45_TAG_RX_MIN_INTERVAL || !iter_is_ubuf(&msg->msg_iter) ||
	    (flags & MSG_TRUNC))
		return 0;
	spin_lock(&e->lock);
	ok = l45_same_tag(&e->plan, p, true) && !l45_rs_stream_rx(e->rs, p->splice_id, &st0, 0) &&
	     st0.recognition != L45_RECOG_UNKNOWN;
	spin_unlock(&e->lock);
	if (!ok)
		return 0;
	*direct = true;
	if (st0.recognition == L45_RECOG_NOT_MINE) {	/* the bytes as they are */
		n = orig(sk, msg, want, flags, addr_len);
		*delivered = max(n, 0);
		return n;
	}
	if (!t) {
		t = kmalloc(sizeof(*t), GFP_KERNEL);
		if (!t)
			return -ENOMEM;
		e->tag_rxd = t;
	}
	want = min3(want, iov_iter_count(&msg->msg_iter), (size_t)p->interval * L45_TAG_STEP_TAGS);
	base = iter_iov_addr(&msg->msg_iter);
	room = l45_tag_rx_layout(t, p, st0, base, want, &nw, &tags_at);
	iov_iter_init(&it, ITER_DEST, t->wire, nw, room);
	saved = msg->msg_iter;
	msg->msg_iter = it;
	n = orig(sk, msg, room, flags, addr_len);
	msg->msg_iter = saved;
	if (n <= 0)
		return n;

	/* The tags' bytes lie behind all the payload laid out (contiguous,
	 * in order): read back those that came, check them. */
	for (k = 0, at = 0, tag_bytes = 0; k < nw && at < n; k++) {
		m = min_t(size_t, t->wire[k].iov_len, n - at);
		if (t->wire[k].iov_base >= (void __user *)tags_at)
			tag_bytes += m;
		at += m;
	}
	if (copy_from_user(t->tags, tags_at, tag_bytes))
		return -EFAULT;
	st = st0;
	plain = l45_tag_rx_check(t->tags, p, &st, n, &pay);
	tail = n - plain;
	if (tail) {	/* out of step: the rest in wire order, after the payload */
		iov_iter_init(&it, ITER_SOURCE, t->wire, nw, n);
		iov_iter_advance(&it, plain);
		if (copy_from_iter(e->rin, tail, &it) != tail)
			return -EFAULT;
	}
	iov_iter_advance(&msg->msg_iter, pay);
	if (tail && copy_to_iter(e->rin, tail, &msg->msg_iter) != tail)
		return -EFAULT;
	spin_lock(&e->lock);
	if (l45_same_tag(&e->plan, p, true))
		l45_rs_stream_rx(e->rs, p->splice_id, &st, 1);
	spin_unlock(&e->lock);
	*delivered = pay + tail;
	l45_rs_count(p->splice_slot, p->splice_id, 1, *delivered);
	return n;
}

/* ---------- stream receive ---------- */

/* Room for `need` more bytes after the held ones (moved to the front
 * first). Caller holds rx_mutex. */
static int l45_rx_room(struct l45_sk *e, size_t need)
{
	size_t held = e->rx_len - e->rx_off;
	u8 *nb;

	if (e->rx_cap - e->rx_len >= need)
		return 0;
	if (e->rx_off) {
		memmove(e->rx, e->rx + e->rx_off, held);
		e->rx_off = 0;
		WRITE_ONCE(e->rx_len, held);
		if (e->rx_cap - held >= need)
			return 0;
	}
	nb = kvmalloc(max_t(size_t, held + need, 4096), GFP_KERNEL);
	if (!nb)
		return -ENOMEM;
	if (held)
		memcpy(nb, e->rx, held);
	kvfree(e->rx);
	e->rx = nb;
	e->rx_cap = max_t(size_t, held + need, 4096);
	return 0;
}

/* A receive on a stream whose chain acts on receives, or that holds bytes
 * for the application. Returns what a recvmsg returns. */
int l45_recv_stream(struct l45_sk *e, struct sock *sk, struct msghdr *msg, size_t len, int flags,
		    int *addr_len, int (*orig)(struct sock *, struct msghdr *, size_t, int, int *))
{
	bool peek = flags & MSG_PEEK;
	size_t copied = 0, growth, cap, out_len, want, delivered;
	struct l45_tag_rx st0;
	struct l45_plan tp;
	struct l45_view v;
	int n, verdict, rflags, ret = 0;
	bool direct;
	long timeo = sock_rcvtimeo(sk, flags & MSG_DONTWAIT), plain, got;

	if (mutex_lock_interruptible(&e->rx_mutex))
		return -ERESTARTSYS;
	l45_view_of(sk, IPPROTO_TCP, e->view.role, NULL, &v);
	for (;;) {
		size_t avail = e->rx_len - e->rx_off;

		/* With MSG_PEEK the bytes stay held; a peek returns what is held. */
		if (avail) {
			size_t n2 = min(avail, len - copied);

			if (copy_to_iter(e->rx + e->rx_off, n2, &msg->msg_iter) != n2) {
				ret = copied ? copied : -EFAULT;
				goto out;
			}
			copied += n2;
			if (!peek)
				e->rx_off += n2;
			if (e->rx_off == e->rx_len) {
				e->rx_off = 0;
				WRITE_ONCE(e->rx_len, 0);
			}
			if (peek || copied == len || !(flags & MSG_WAITALL)) {
				ret = copied;
				goto out;
			}
		}
		if (e->eof) {
			ret = copied;
			goto out;
		}
		ret = l45_wait(sk, timeo, l45_rx_ready, true);
		if (ret) {
			ret = copied ? copied : ret;
			goto out;
		}
		spin_lock(&e->lock);
		l45_refresh_locked(e, sk);
		growth = l45_rs_recv_growth(e->rs);
		tp = e->plan;
		spin_unlock(&e->lock);
		/* Take from the kernel at most what the application still wants
		 * minus what modules may release on top of their input (bytes
		 * they held while recognising a signature): then nothing is left
		 * over in our buffer, which poll() cannot see, unless the
		 * application reads fewer bytes than that at a time. */
		want = len - copied > growth ? len - copied - growth : 1;
		want = min_t(size_t, want, L45_CHUNK);
		cap = want + growth + 128;
		if (l45_reserve(&e->rin, &e->rin_cap, L45_CHUNK) || l45_rx_room(e, cap)) {
			ret = copied ? copied : -ENOMEM;
			goto out;
		}
		rflags = (flags & ~(MSG_PEEK | MSG_WAITALL)) | MSG_DONTWAIT;
		direct = false;
		if (tp.recv == L45_PLAN_STREAM_TAG && !peek && !e->rx_len)
			n = l45_tag_recv_direct(e, sk, msg, want, rflags, addr_len, &tp, orig,
						&delivered, &direct);
		if (!direct)
			n = l45_recv_kbuf(sk, msg, e->rin, want, rflags, addr_len, orig);
		if (n == -EAGAIN && timeo)
			continue;	/* another reader took it; wait again */
		if (n < 0) {
			ret = copied ? copied : n;
			goto out;
		}
		if (direct && n) {	/* in the application's buffer already */
			copied += delivered;
			if (copied == len || (copied && !(flags & MSG_WAITALL))) {
				ret = copied;
				goto out;
			}
			continue;
		}
		/* The chain writes straight after the held bytes; a stream tag
		 * that has recognised its stream is stripped in place instead
		 * (nothing held: the bytes go to the application directly). */
		plain = -1;
		spin_lock(&e->lock);
		if (n == 0) {
			out_len = l45_rs_recv_eof(e->rs, e->rx + e->rx_len, cap);
			verdict = L45_V_CUSTOMIZED;
			e->eof = true;
		} else if (tp.recv == L45_PLAN_STREAM_TAG && !peek && !e->rx_len &&
			   (plain = l45_tag_scan(e, &tp, e->rin, n, &st0)) >= 0) {
			verdict = L45_V_CUSTOMIZED;
		} else {
			verdict = l45_rs_recv(e->rs, &v, e->rin, n, e->rx + e->rx_len, cap, &out_len);
		}
		spin_unlock(&e->lock);
		if (plain >= 0) {
			got = l45_tag_deliver(msg, &tp, e->rin, n, st0, plain);
			if (got < 0) {
				ret = copied ? copied : got;
				goto out;
			}
			if (st0.recognition == L45_RECOG_MINE)
				l45_rs_count(tp.splice_slot, tp.splice_id, 1, got);
			copied += got;
			if (copied == len || (copied && !(flags & MSG_WAITALL))) {
				ret = copied;
				goto out;
			}
			continue;
		}
		if (verdict == L45_V_DROP)
			continue;
		if (verdict != L45_V_CUSTOMIZED) {
			memcpy(e->rx + e->rx_len, e->rin, n);
			out_len = n;
		}
		WRITE_ONCE(e->rx_len, e->rx_len + out_len);
	}
out:
	mutex_unlock(&e->rx_mutex);
	return ret;
}
