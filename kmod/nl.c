// SPDX-License-Identifier: GPL-2.0
/*
 * Layer 4.5 kernel tap, C shim: the generic netlink family "l45" (register,
 * revoke, activate, deprecate, priority, report, sockets dump) and the
 * challenge answers with the kernel crypto API (gcm(aes)). The socket
 * hooks and the data path are in shim.c; lock order as documented there.
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

/* ---------- generic netlink ---------- */

static struct genl_family l45_family;

static const struct nla_policy l45_match_policy[L45_M_MAX + 1] = {
	[L45_M_PROTO] = NLA_POLICY_MAX(NLA_U8, 255),
	[L45_M_SRC_ADDR] = NLA_POLICY_RANGE(NLA_BINARY, 4, 16),
	[L45_M_SRC_PREFIX] = NLA_POLICY_MAX(NLA_U8, 128),
	[L45_M_DST_ADDR] = NLA_POLICY_RANGE(NLA_BINARY, 4, 16),
	[L45_M_DST_PREFIX] = NLA_POLICY_MAX(NLA_U8, 128),
	[L45_M_SRC_PORT] = { .type = NLA_U16 },
	[L45_M_DST_PORT] = { .type = NLA_U16 },
	[L45_M_THREAD] = { .type = NLA_NUL_STRING, .len = L45_NAME_LEN - 1 },
	[L45_M_PROCESS] = { .type = NLA_NUL_STRING, .len = L45_NAME_LEN - 1 },
};

static const struct nla_policy l45_param_policy[L45_P_MAX + 1] = {
	[L45_P_NAME] = { .type = NLA_NUL_STRING, .len = 64 },
	[L45_P_VALUE] = { .type = NLA_NUL_STRING, .len = 256 },
};

static const struct nla_policy l45_policy[L45_A_MAX + 1] = {
	[L45_A_ID] = { .type = NLA_U32 },
	[L45_A_KIND] = { .type = NLA_U16 },
	[L45_A_PRIORITY] = { .type = NLA_U16 },
	[L45_A_FLAGS] = NLA_POLICY_MASK(NLA_U8, L45_F_ALL),
	[L45_A_MATCH] = NLA_POLICY_NESTED(l45_match_policy),
	[L45_A_PARAMS] = NLA_POLICY_NESTED_ARRAY(l45_param_policy),
	[L45_A_KEY] = NLA_POLICY_EXACT_LEN(L45_KEY_LEN),
	[L45_A_VALUE] = NLA_POLICY_MAX(NLA_U8, 1),
	[L45_A_NONCE] = NLA_POLICY_EXACT_LEN(12),
	[L45_A_CIPHERTEXT] = NLA_POLICY_EXACT_LEN(32),
	[L45_A_REPLACE] = { .type = NLA_FLAG },
	[L45_A_KIND_NAME] = { .type = NLA_NUL_STRING, .len = L45_KIND_NAME_MAX },
	[L45_A_CHECK] = { .type = NLA_FLAG },
};

static int l45_prefix_from(struct l45_prefix *p, struct nlattr *addr, struct nlattr *prefix,
			   struct genl_info *info)
{
	int len;

	if (!addr) {
		if (prefix) {
			NL_SET_ERR_MSG_ATTR(info->extack, prefix, "prefix without address");
			return -EINVAL;
		}
		return 0;
	}
	len = nla_len(addr);
	if (len != 4 && len != 16) {
		NL_SET_ERR_MSG_ATTR(info->extack, addr, "address must be 4 or 16 bytes");
		return -EINVAL;
	}
	p->family = len == 4 ? 4 : 6;
	p->prefix = prefix ? nla_get_u8(prefix) : len * 8;
	if (p->prefix > len * 8) {
		NL_SET_ERR_MSG_ATTR(info->extack, prefix, "prefix longer than the address");
		return -EINVAL;
	}
	memcpy(p->addr, nla_data(addr), len);
	return 0;
}

static int l45_nl_register(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr *tb[L45_M_MAX + 1];
	struct nlattr *pa, *ptb[L45_P_MAX + 1];
	struct l45_reg *r;
	const char *msg = NULL;
	int rem, err;

	if (GENL_REQ_ATTR_CHECK(info, L45_A_ID) || GENL_REQ_ATTR_CHECK(info, L45_A_KIND))
		return -EINVAL;
	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r)
		return -ENOMEM;
	r->id = nla_get_u32(info->attrs[L45_A_ID]);
	r->kind = nla_get_u16(info->attrs[L45_A_KIND]);
	r->priority = info->attrs[L45_A_PRIORITY] ? nla_get_u16(info->attrs[L45_A_PRIORITY]) : 0;
	r->flags = info->attrs[L45_A_FLAGS] ? nla_get_u8(info->attrs[L45_A_FLAGS]) : L45_F_ACTIVATED;
	/* (not NLM_F_REPLACE: strict generic netlink refuses that bit on a
	 * doit, it doubles as NLM_F_ROOT) */
	r->replace = nla_get_flag(info->attrs[L45_A_REPLACE]);
	r->check = nla_get_flag(info->attrs[L45_A_CHECK]);
	err = -EINVAL;
	if (r->id == 0) {
		NL_SET_ERR_MSG_ATTR(info->extack, info->attrs[L45_A_ID], "module id 0 is reserved");
		goto out;
	}
	if (info->attrs[L45_A_MATCH]) {
		err = nla_parse_nested(tb, L45_M_MAX, info->attrs[L45_A_MATCH], l45_match_policy,
				       info->extack);
		if (err)
			goto out;
		if (tb[L45_M_PROTO])
			r->rule.proto = nla_get_u8(tb[L45_M_PROTO]);
		err = -EINVAL;
		if (r->rule.proto != 0 && r->rule.proto != IPPROTO_TCP && r->rule.proto != IPPROTO_UDP) {
			NL_SET_ERR_MSG_ATTR(info->extack, tb[L45_M_PROTO], "protocol must be 0, 6 or 17");
			goto out;
		}
		err = l45_prefix_from(&r->rule.src, tb[L45_M_SRC_ADDR], tb[L45_M_SRC_PREFIX], info);
		if (err)
			goto out;
		err = l45_prefix_from(&r->rule.dst, tb[L45_M_DST_ADDR], tb[L45_M_DST_PREFIX], info);
		if (err)
			goto out;
		if (tb[L45_M_SRC_PORT]) {
			r->rule.flags |= L45_R_SPORT;
			r->rule.sport = nla_get_u16(tb[L45_M_SRC_PORT]);
		}
		if (tb[L45_M_DST_PORT]) {
			r->rule.flags |= L45_R_DPORT;
			r->rule.dport = nla_get_u16(tb[L45_M_DST_PORT]);
		}
		if (tb[L45_M_THREAD])
			nla_strscpy(r->rule.thread, tb[L45_M_THREAD], L45_NAME_LEN);
		if (tb[L45_M_PROCESS])
			nla_strscpy(r->rule.process, tb[L45_M_PROCESS], L45_NAME_LEN);
	}
	if (info->attrs[L45_A_PARAMS]) {
		nla_for_each_nested(pa, info->attrs[L45_A_PARAMS], rem) {
			err = -EINVAL;
			if (r->nparams == L45_MAX_PARAMS) {
				NL_SET_ERR_MSG_ATTR(info->extack, pa, "too many parameters");
				goto out;
			}
			err = nla_parse_nested(ptb, L45_P_MAX, pa, l45_param_policy, info->extack);
			if (err)
				goto out;
			err = -EINVAL;
			if (!ptb[L45_P_NAME] || !ptb[L45_P_VALUE]) {
				NL_SET_ERR_MSG_ATTR(info->extack, pa, "parameter needs a name and a value");
				goto out;
			}
			r->params[r->nparams].name = nla_data(ptb[L45_P_NAME]);
			r->params[r->nparams].name_len = strnlen(nla_data(ptb[L45_P_NAME]),
								 nla_len(ptb[L45_P_NAME]));
			r->params[r->nparams].value = nla_data(ptb[L45_P_VALUE]);
			r->params[r->nparams].value_len = strnlen(nla_data(ptb[L45_P_VALUE]),
								  nla_len(ptb[L45_P_VALUE]));
			r->nparams++;
		}
	}
	if (r->kind == 0) {
		/* a kind that is not built in, by name (kinds.rs) */
		err = -EINVAL;
		if (GENL_REQ_ATTR_CHECK(info, L45_A_KIND_NAME))
			goto out;
		r->kind_name = nla_data(info->attrs[L45_A_KIND_NAME]);
		r->kind_name_len = strnlen(nla_data(info->attrs[L45_A_KIND_NAME]),
					   nla_len(info->attrs[L45_A_KIND_NAME]));
	}
	if (info->attrs[L45_A_KEY]) {
		r->has_key = 1;
		memcpy(r->key, nla_data(info->attrs[L45_A_KEY]), L45_KEY_LEN);
	}
	spin_lock(&l45_cfg_lock);
	err = l45_rs_register(r, &msg);
	spin_unlock(&l45_cfg_lock);
	if (err == 1) {
		/* a new module: the data path hooks are on while any exists */
		static_branch_inc(&l45_configured);
		err = 0;
	}
	if (err && r->err_len && info->extack)
		/* the kind's own message (it lives in r, freed below: copied) */
		NL_SET_ERR_MSG_FMT(info->extack, "%.*s", (int)r->err_len, r->err);
	else if (err && msg && info->extack)
		info->extack->_msg = msg;	/* a static string owned by the module */
out:
	kfree_sensitive(r);
	return err;
}

static int l45_nl_id(struct genl_info *info, u32 *id)
{
	if (GENL_REQ_ATTR_CHECK(info, L45_A_ID))
		return -EINVAL;
	*id = nla_get_u32(info->attrs[L45_A_ID]);
	return 0;
}

static int l45_unknown(struct genl_info *info, int err)
{
	if (err == -ENOENT)
		NL_SET_ERR_MSG_ATTR(info->extack, info->attrs[L45_A_ID], "no module with this id");
	return err;
}

static int l45_nl_revoke(struct sk_buff *skb, struct genl_info *info)
{
	u32 id;
	int err = l45_nl_id(info, &id);

	if (err)
		return err;
	spin_lock(&l45_cfg_lock);
	err = l45_rs_revoke(id);
	spin_unlock(&l45_cfg_lock);
	if (!err)
		static_branch_dec(&l45_configured);
	return l45_unknown(info, err);
}

static int l45_nl_set(struct genl_info *info, int what, int attr)
{
	u32 id, value;
	int err = l45_nl_id(info, &id);

	if (err)
		return err;
	if (GENL_REQ_ATTR_CHECK(info, attr))
		return -EINVAL;
	value = attr == L45_A_PRIORITY ? nla_get_u16(info->attrs[attr]) : nla_get_u8(info->attrs[attr]);
	spin_lock(&l45_cfg_lock);
	err = l45_rs_set(id, what, value);
	spin_unlock(&l45_cfg_lock);
	return l45_unknown(info, err);
}

static int l45_nl_activate(struct sk_buff *skb, struct genl_info *info)
{
	return l45_nl_set(info, L45_SET_ACTIVATED, L45_A_VALUE);
}

static int l45_nl_deprecate(struct sk_buff *skb, struct genl_info *info)
{
	return l45_nl_set(info, L45_SET_DEPRECATED, L45_A_VALUE);
}

static int l45_nl_priority(struct sk_buff *skb, struct genl_info *info)
{
	return l45_nl_set(info, L45_SET_PRIORITY, L45_A_PRIORITY);
}

static int l45_put_stats(struct sk_buff *skb, const struct l45_stats *st, u32 portid, u32 seq,
			 int flags)
{
	struct nlattr *nest;
	void *hdr = genlmsg_put(skb, portid, seq, &l45_family, flags, L45_CMD_REPORT);

	if (!hdr)
		return -EMSGSIZE;
	if (nla_put_u32(skb, L45_A_ID, st->id) || nla_put_u16(skb, L45_A_KIND, st->kind) ||
	    nla_put_u16(skb, L45_A_PRIORITY, st->priority) || nla_put_u8(skb, L45_A_FLAGS, st->flags))
		goto cancel;
	nest = nla_nest_start(skb, L45_A_STATS);
	if (!nest)
		goto cancel;
	if (nla_put_u32(skb, L45_S_SOCKETS, st->sockets) ||
	    nla_put_u64_64bit(skb, L45_S_BYTES_SENT, st->bytes_sent, L45_S_PAD) ||
	    nla_put_u64_64bit(skb, L45_S_BYTES_RECEIVED, st->bytes_received, L45_S_PAD) ||
	    nla_put_u64_64bit(skb, L45_S_MESSAGES_SENT, st->messages_sent, L45_S_PAD) ||
	    nla_put_u64_64bit(skb, L45_S_MESSAGES_RECEIVED, st->messages_received, L45_S_PAD) ||
	    nla_put_u64_64bit(skb, L45_S_DROPS, st->drops, L45_S_PAD) ||
	    nla_put_u64_64bit(skb, L45_S_ERRORS, st->errors, L45_S_PAD) ||
	    nla_put_u64_64bit(skb, L45_S_ACTIVE_TS, st->active_ts, L45_S_PAD) ||
	    nla_put_u64_64bit(skb, L45_S_BYPASSED, st->bypassed, L45_S_PAD))
		goto cancel;
	nla_nest_end(skb, nest);
	genlmsg_end(skb, hdr);
	return 0;
cancel:
	genlmsg_cancel(skb, hdr);
	return -EMSGSIZE;
}

static int l45_nl_report(struct sk_buff *skb, struct genl_info *info)
{
	struct l45_stats st;
	struct sk_buff *msg;
	u32 id;
	int slot, err = l45_nl_id(info, &id);

	if (err)
		return err;
	spin_lock(&l45_cfg_lock);
	slot = l45_rs_find(id);
	if (slot >= 0)
		err = l45_rs_stats(slot, &st);
	spin_unlock(&l45_cfg_lock);
	if (slot < 0)
		return l45_unknown(info, -ENOENT);
	if (err)
		return err;
	msg = genlmsg_new(NLMSG_GOODSIZE, GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	err = l45_put_stats(msg, &st, info->snd_portid, info->snd_seq, 0);
	if (err) {
		nlmsg_free(msg);
		return err;
	}
	return genlmsg_reply(msg, info);
}

static int l45_nl_report_dump(struct sk_buff *skb, struct netlink_callback *cb)
{
	struct l45_stats st;
	long slot;
	int err;

	for (slot = cb->args[0]; slot < L45_MAX_MODULES; slot++) {
		spin_lock(&l45_cfg_lock);
		err = l45_rs_stats(slot, &st);
		spin_unlock(&l45_cfg_lock);
		if (err)
			continue;
		if (l45_put_stats(skb, &st, NETLINK_CB(cb->skb).portid, cb->nlh->nlmsg_seq,
				  NLM_F_MULTI))
			break;
	}
	cb->args[0] = slot;
	return skb->len;
}

static int l45_put_addr(struct sk_buff *skb, int type, const struct l45_sockaddr *a)
{
	return nla_put(skb, type, a->family == 6 ? 16 : 4, a->addr);
}

static int l45_put_sock(struct sk_buff *skb, struct l45_sk *e, u32 portid, u32 seq)
{
	struct nlattr *nest;
	struct l45_sockaddr local, remote;
	u32 ids[L45_MAX_CHAIN];
	u32 n;
	void *hdr = genlmsg_put(skb, portid, seq, &l45_family, NLM_F_MULTI, L45_CMD_SOCKETS);

	if (!hdr)
		return -EMSGSIZE;
	spin_lock(&e->lock);
	l45_refresh_locked(e, e->sk);	/* report the chain as configured now */
	n = l45_rs_sock_ids(e->rs, ids);
	spin_unlock(&e->lock);
	l45_addrs(e->sk, NULL, &local, &remote);
	nest = nla_nest_start(skb, L45_A_SOCKET);
	if (!nest)
		goto cancel;
	if (nla_put_u64_64bit(skb, L45_K_COOKIE, e->cookie, L45_K_PAD) ||
	    nla_put_u8(skb, L45_K_PROTO, e->view.proto) || nla_put_u8(skb, L45_K_ROLE, e->view.role) ||
	    l45_put_addr(skb, L45_K_LOCAL_ADDR, &local) ||
	    nla_put_u16(skb, L45_K_LOCAL_PORT, local.port) ||
	    nla_put_u32(skb, L45_K_PID, e->pid) ||
	    nla_put_string(skb, L45_K_THREAD, e->view.thread) ||
	    nla_put_string(skb, L45_K_PROCESS, e->view.process) ||
	    nla_put(skb, L45_K_MODULES, n * sizeof(u32), ids))
		goto cancel;
	if (remote.family &&
	    (l45_put_addr(skb, L45_K_REMOTE_ADDR, &remote) ||
	     nla_put_u16(skb, L45_K_REMOTE_PORT, remote.port)))
		goto cancel;
	nla_nest_end(skb, nest);
	genlmsg_end(skb, hdr);
	return 0;
cancel:
	genlmsg_cancel(skb, hdr);
	return -EMSGSIZE;
}

static int l45_nl_sockets_dump(struct sk_buff *skb, struct netlink_callback *cb)
{
	long bkt, idx;
	struct l45_sk *e;
	bool full = false;

	spin_lock(&l45_hash_lock);
	for (bkt = cb->args[0]; bkt < HASH_SIZE(l45_hash) && !full; bkt++) {
		idx = 0;
		hlist_for_each_entry(e, &l45_hash[bkt], node) {
			if (idx++ < cb->args[1] || e->bypassed)	/* bypassed: not tapped */
				continue;
			if (l45_put_sock(skb, e, NETLINK_CB(cb->skb).portid, cb->nlh->nlmsg_seq)) {
				full = true;
				cb->args[1] = idx - 1;
				break;
			}
		}
		if (full)
			break;
		cb->args[1] = 0;
	}
	spin_unlock(&l45_hash_lock);
	cb->args[0] = bkt;
	return skb->len;
}

/* AES-256-GCM in place over buf (len bytes of text; decrypt: followed by the
 * 16-byte tag). */
static int l45_gcm(const u8 *key, const u8 *nonce, const u8 *aad, unsigned int aad_len, u8 *buf,
		   unsigned int len, bool enc)
{
	struct crypto_aead *tfm;
	struct aead_request *req;
	struct scatterlist sg[2];
	DECLARE_CRYPTO_WAIT(wait);
	u8 *iv = NULL, *ad = NULL;
	int err;

	tfm = crypto_alloc_aead("gcm(aes)", 0, 0);
	if (IS_ERR(tfm))
		return PTR_ERR(tfm);
	err = crypto_aead_setkey(tfm, key, L45_KEY_LEN);
	if (!err)
		err = crypto_aead_setauthsize(tfm, 16);
	if (err)
		goto free_tfm;
	req = aead_request_alloc(tfm, GFP_KERNEL);
	iv = kmemdup(nonce, 12, GFP_KERNEL);
	ad = kmemdup(aad, aad_len, GFP_KERNEL);
	err = -ENOMEM;
	if (!req || !iv || !ad)
		goto free_req;
	sg_init_table(sg, 2);
	sg_set_buf(&sg[0], ad, aad_len);
	sg_set_buf(&sg[1], buf, len + 16);
	aead_request_set_callback(req, CRYPTO_TFM_REQ_MAY_SLEEP | CRYPTO_TFM_REQ_MAY_BACKLOG,
				  crypto_req_done, &wait);
	aead_request_set_ad(req, aad_len);
	aead_request_set_crypt(req, sg, sg, enc ? len : len + 16, iv);
	err = crypto_wait_req(enc ? crypto_aead_encrypt(req) : crypto_aead_decrypt(req), &wait);
free_req:
	aead_request_free(req);
	kfree(iv);
	kfree(ad);
free_tfm:
	crypto_free_aead(tfm);
	return err;
}

static int l45_nl_challenge(struct sk_buff *skb, struct genl_info *info)
{
	u8 key[L45_KEY_LEN], aad[17], nonce[12];
	u8 *buf;
	struct sk_buff *msg;
	void *hdr;
	u32 id;
	__be32 idbe;
	int err = l45_nl_id(info, &id);

	if (err)
		return err;
	if (GENL_REQ_ATTR_CHECK(info, L45_A_NONCE) || GENL_REQ_ATTR_CHECK(info, L45_A_CIPHERTEXT))
		return -EINVAL;
	spin_lock(&l45_cfg_lock);
	err = l45_rs_key(id, key);
	spin_unlock(&l45_cfg_lock);
	if (err == -ENOKEY)
		NL_SET_ERR_MSG(info->extack, "module has no security key");
	if (err)
		return l45_unknown(info, err);
	idbe = cpu_to_be32(id);
	buf = kzalloc(64, GFP_KERNEL);
	if (!buf) {
		err = -ENOMEM;
		goto out;
	}
	/* NCO -> module: AES-256-GCM(key, nonce, challenge(16), "l45-challenge" || id). */
	memcpy(aad, "l45-challenge", 13);
	memcpy(aad + 13, &idbe, 4);
	memcpy(buf, nla_data(info->attrs[L45_A_CIPHERTEXT]), 32);
	err = l45_gcm(key, nla_data(info->attrs[L45_A_NONCE]), aad, 17, buf, 16, false);
	if (err) {
		if (err == -EBADMSG)
			NL_SET_ERR_MSG(info->extack, "challenge does not authenticate");
		goto out;
	}
	/* module -> NCO: fresh nonce, AES-256-GCM(key, nonce', challenge || id,
	 * "l45-response" || id). */
	memcpy(buf + 16, &idbe, 4);
	memcpy(aad, "l45-response", 12);
	memcpy(aad + 12, &idbe, 4);
	get_random_bytes(nonce, sizeof(nonce));
	err = l45_gcm(key, nonce, aad, 16, buf, 20, true);
	if (err)
		goto out;
	err = -ENOMEM;
	msg = genlmsg_new(NLMSG_GOODSIZE, GFP_KERNEL);
	if (!msg)
		goto out;
	hdr = genlmsg_put_reply(msg, info, &l45_family, 0, L45_CMD_CHALLENGE);
	if (!hdr || nla_put_u32(msg, L45_A_ID, id) || nla_put(msg, L45_A_NONCE, 12, nonce) ||
	    nla_put(msg, L45_A_CIPHERTEXT, 36, buf)) {
		nlmsg_free(msg);
		err = -EMSGSIZE;
		goto out;
	}
	genlmsg_end(msg, hdr);
	err = genlmsg_reply(msg, info);
out:
	memzero_explicit(key, sizeof(key));
	kfree_sensitive(buf);
	return err;
}

static const struct genl_ops l45_ops[] = {
	{ .cmd = L45_CMD_REGISTER, .doit = l45_nl_register, .flags = GENL_ADMIN_PERM },
	{ .cmd = L45_CMD_REVOKE, .doit = l45_nl_revoke, .flags = GENL_ADMIN_PERM },
	{ .cmd = L45_CMD_ACTIVATE, .doit = l45_nl_activate, .flags = GENL_ADMIN_PERM },
	{ .cmd = L45_CMD_DEPRECATE, .doit = l45_nl_deprecate, .flags = GENL_ADMIN_PERM },
	{ .cmd = L45_CMD_PRIORITY, .doit = l45_nl_priority, .flags = GENL_ADMIN_PERM },
	{ .cmd = L45_CMD_REPORT, .doit = l45_nl_report, .dumpit = l45_nl_report_dump,
	  .flags = GENL_ADMIN_PERM },
	{ .cmd = L45_CMD_CHALLENGE, .doit = l45_nl_challenge, .flags = GENL_ADMIN_PERM },
	{ .cmd = L45_CMD_SOCKETS, .dumpit = l45_nl_sockets_dump, .flags = GENL_ADMIN_PERM },
};

static struct genl_family l45_family __ro_after_init = {
	.name = L45_GENL_NAME,
	.version = L45_GENL_VERSION,
	.maxattr = L45_A_MAX,
	.policy = l45_policy,
	.module = THIS_MODULE,
	.ops = l45_ops,
	.n_ops = ARRAY_SIZE(l45_ops),
	.parallel_ops = true,
};

int l45_nl_init(void)
{
	return genl_register_family(&l45_family);
}

void l45_nl_exit(void)
{
	genl_unregister_family(&l45_family);
}
