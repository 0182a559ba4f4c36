/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Layer 4.5 kernel tap: what the C shim (shim.c) and the Rust part
 * (l45_main.rs) share. The netlink numbering is the wire ABI documented in
 * docs/kernel-tap.md and mirrored in tap/kernel/src/nl.rs.
 */
#ifndef L45_H
#define L45_H

#include <linux/types.h>

#define L45_GENL_NAME "l45"
#define L45_GENL_VERSION 1

#define L45_MAX_MODULES 64
#define L45_MAX_CHAIN 8
#define L45_MAX_PARAMS 16
#define L45_NAME_LEN 16
#define L45_KEY_LEN 32
#define L45_KIND_NAME_MAX 64	/* l45_modules::abi::NAME_MAX */
#define L45_REG_ERR_LEN 96	/* l45_modules::abi::ERROR_MAX */

enum l45_cmd {
	L45_CMD_UNSPEC,
	L45_CMD_REGISTER,	/* new module; with L45_A_REPLACE updates one in place */
	L45_CMD_REVOKE,
	L45_CMD_ACTIVATE,
	L45_CMD_DEPRECATE,
	L45_CMD_PRIORITY,
	L45_CMD_REPORT,		/* doit with L45_A_ID, or dump of every module */
	L45_CMD_CHALLENGE,
	L45_CMD_SOCKETS,	/* dump of tapped sockets */
	__L45_CMD_MAX,
};

enum l45_attr {
	L45_A_UNSPEC,
	L45_A_ID,		/* u32 */
	L45_A_KIND,		/* u16, l45_modules::Kind::code */
	L45_A_PRIORITY,		/* u16 */
	L45_A_FLAGS,		/* u8, L45_F_* */
	L45_A_MATCH,		/* nested, L45_M_* */
	L45_A_PARAMS,		/* nested array of nested L45_P_* */
	L45_A_KEY,		/* binary, 32 bytes */
	L45_A_VALUE,		/* u8: 0 or 1 (activate, deprecate) */
	L45_A_STATS,		/* nested, L45_S_* */
	L45_A_NONCE,		/* binary, 12 bytes */
	L45_A_CIPHERTEXT,	/* binary */
	L45_A_SOCKET,		/* nested, L45_K_* */
	L45_A_PAD,
	L45_A_REPLACE,		/* flag: REGISTER updates an existing id in place */
	L45_A_KIND_NAME,	/* string: a loaded kind's name, with L45_A_KIND 0 */
	L45_A_CHECK,		/* flag: REGISTER only checks (kind, parameters); changes nothing */
	__L45_A_MAX,
};
#define L45_A_MAX (__L45_A_MAX - 1)

#define L45_F_ACTIVATED 1
#define L45_F_DEPRECATED 2
#define L45_F_IMMEDIATE 4
#define L45_F_ALL 7

enum l45_match_attr {
	L45_M_UNSPEC,
	L45_M_PROTO,		/* u8: 0 any, 6 tcp, 17 udp */
	L45_M_SRC_ADDR,		/* binary, 4 or 16 bytes */
	L45_M_SRC_PREFIX,	/* u8 */
	L45_M_DST_ADDR,
	L45_M_DST_PREFIX,
	L45_M_SRC_PORT,		/* u16 */
	L45_M_DST_PORT,		/* u16 */
	L45_M_THREAD,		/* NUL-terminated string, <= 15 bytes */
	L45_M_PROCESS,
	__L45_M_MAX,
};
#define L45_M_MAX (__L45_M_MAX - 1)

enum l45_param_attr {
	L45_P_UNSPEC,
	L45_P_NAME,		/* NUL-terminated string */
	L45_P_VALUE,		/* NUL-terminated string */
	__L45_P_MAX,
};
#define L45_P_MAX (__L45_P_MAX - 1)

enum l45_stats_attr {
	L45_S_UNSPEC,
	L45_S_SOCKETS,		/* u32 */
	L45_S_BYTES_SENT,	/* u64, customized bytes each way */
	L45_S_BYTES_RECEIVED,
	L45_S_MESSAGES_SENT,
	L45_S_MESSAGES_RECEIVED,
	L45_S_DROPS,
	L45_S_ERRORS,
	L45_S_ACTIVE_TS,	/* u64, ns since the epoch, 0 = never */
	L45_S_PAD,
	L45_S_BYPASSED,		/* u64, connections older than the module it selects, not tapped */
	__L45_S_MAX,
};

enum l45_sock_attr {
	L45_K_UNSPEC,
	L45_K_COOKIE,		/* u64 */
	L45_K_PROTO,		/* u8 */
	L45_K_ROLE,		/* u8: 0 client, 1 server */
	L45_K_LOCAL_ADDR,	/* binary 4 or 16 */
	L45_K_LOCAL_PORT,	/* u16 */
	L45_K_REMOTE_ADDR,
	L45_K_REMOTE_PORT,
	L45_K_PID,		/* u32 */
	L45_K_THREAD,		/* string */
	L45_K_PROCESS,		/* string */
	L45_K_MODULES,		/* binary, u32 ids in chain order */
	L45_K_PAD,
	__L45_K_MAX,
};

/* ---- shared with Rust (#[repr(C)] mirrors in l45_main.rs) ---- */

struct l45_sockaddr {
	u8 family;		/* 0 unknown, 4, 6 */
	u8 pad;
	u16 port;		/* host order */
	u8 addr[16];
};

struct l45_view {
	u8 proto;		/* 6 or 17 */
	u8 role;		/* 0 client, 1 server */
	u8 pad[2];
	struct l45_sockaddr local;
	struct l45_sockaddr remote;
	u8 thread[L45_NAME_LEN];
	u8 process[L45_NAME_LEN];
};

struct l45_prefix {
	u8 family;		/* 0 = wildcard */
	u8 prefix;
	u8 addr[16];
};

#define L45_R_SPORT 1
#define L45_R_DPORT 2
struct l45_rule {
	u8 proto;
	u8 flags;
	u16 sport;
	u16 dport;
	struct l45_prefix src;
	struct l45_prefix dst;
	u8 thread[L45_NAME_LEN];
	u8 process[L45_NAME_LEN];
};

struct l45_param {
	const u8 *name;
	u32 name_len;
	const u8 *value;
	u32 value_len;
};

struct l45_reg {
	u32 id;
	u16 kind;
	u16 priority;
	u8 flags;
	u8 has_key;
	u8 replace;
	u8 nparams;
	struct l45_rule rule;
	struct l45_param params[L45_MAX_PARAMS];
	u8 key[L45_KEY_LEN];
	const u8 *kind_name;	/* with kind 0: a kind from the registry (kinds.rs) */
	u32 kind_name_len;
	u32 err_len;		/* out: a kind parser's message, not NUL-terminated */
	u8 err[L45_REG_ERR_LEN];
	u8 check;		/* L45_A_CHECK: build the instance, register nothing */
};

struct l45_stats {
	u32 id;
	u16 kind;
	u16 priority;
	u8 flags;
	u8 has_key;
	u8 pad[2];
	u32 sockets;
	u64 bytes_sent;
	u64 bytes_received;
	u64 messages_sent;
	u64 messages_received;
	u64 drops;
	u64 errors;
	u64 active_ts;
	u64 bypassed;
};

/* What a socket's chain needs from the data path, per direction
 * (l45_rs_sock_plan; recomputed when the chain is refreshed). */
#define L45_PLAN_NONE 0		/* no module acts: the call goes straight through */
#define L45_PLAN_DELAY 1	/* rate limits only: a delay, bytes untouched */
#define L45_PLAN_BYTES 2	/* the bytes go through the chain */
#define L45_PLAN_SPLICE 3	/* one fixed insertion, done by the shim */
#define L45_PLAN_STREAM_TAG 4	/* a stream tag alone: the shim inserts (send) or strips (recv) the tags */

struct l45_plan {
	u8 send;		/* L45_PLAN_* */
	u8 recv;
	u8 splice_len;		/* the inserted bytes (datagram sockets) */
	u8 pad;
	u16 splice_at;
	u16 splice_min;		/* shorter datagrams are sent as they are */
	u32 delay_ms;
	u32 splice_slot;	/* the module doing the insertion, for its counters */
	u32 splice_id;
	u32 interval;		/* L45_PLAN_STREAM_TAG: payload bytes between tags */
	u8 splice_bytes[64];	/* the inserted bytes (the tag for L45_PLAN_STREAM_TAG) */
	u32 delay_slot;		/* the rate limit doing the delay, for its counters */
	u32 delay_id;
};

/* A stream tag's receiving side (l45_rs_stream_rx): the shim strips the
 * tags itself while the stream is recognised. */
#define L45_RECOG_UNKNOWN 0	/* the opening tag not seen yet: the module decides */
#define L45_RECOG_MINE 1
#define L45_RECOG_NOT_MINE 2	/* not a tagged stream (or out of step): bytes as they are */

struct l45_tag_rx {
	u8 recognition;		/* L45_RECOG_* */
	u8 tag_left;		/* bytes of the current tag still to strip */
	u8 pad[2];
	u32 until_tag;		/* payload bytes until the next tag */
};

/* Verdicts of l45_rs_send / l45_rs_recv. */
#define L45_V_ORIGINAL 0
#define L45_V_CUSTOMIZED 1
#define L45_V_DROP 2

/* Implemented in Rust. Functions marked "cfg" need l45_cfg_lock held;
 * "sock" need the socket entry's lock held. */
int l45_rs_register(struct l45_reg *r, const char **msg);		/* cfg; 1 = new id */
int l45_rs_revoke(u32 id);						/* cfg */
int l45_rs_set(u32 id, int what, u32 value);				/* cfg */
int l45_rs_stats(u32 slot, struct l45_stats *out);			/* cfg */
int l45_rs_find(u32 id);						/* cfg */
int l45_rs_key(u32 id, u8 *key);					/* cfg */
u32 l45_rs_generation(void);
extern u32 l45_rs_gen;	/* the configuration generation (an AtomicU32 in Rust) */
void l45_rs_sock_plan(const void *s, struct l45_plan *out);		/* sock */
void l45_rs_count(u32 slot, u32 id, int what, size_t n);
void *l45_rs_sock_new(u8 proto, u8 role);
void l45_rs_sock_free(void *s);
u32 l45_rs_sock_gen(const void *s);					/* sock */
void l45_rs_sock_refresh(void *s, const struct l45_view *v);		/* sock + cfg */
size_t l45_rs_send_cap(const void *s, size_t len);			/* sock */
size_t l45_rs_recv_growth(const void *s);				/* sock */
int l45_rs_send(void *s, const struct l45_view *v, const u8 *in, size_t len,
		u8 *out, size_t cap, size_t *out_len);			/* sock */
int l45_rs_recv(void *s, const struct l45_view *v, const u8 *in, size_t len,
		u8 *out, size_t cap, size_t *out_len);			/* sock */
size_t l45_rs_recv_eof(void *s, u8 *out, size_t cap);			/* sock */
u32 l45_rs_sock_ids(const void *s, u32 *ids);				/* sock */
void l45_rs_error(void *s);						/* sock */
s64 l45_rs_stream_since(void *s, u32 id);				/* sock */
void l45_rs_stream_set(void *s, u32 id, u32 since);			/* sock */
int l45_rs_stream_rx(void *s, u32 id, struct l45_tag_rx *st, int write);	/* sock */
void l45_rs_count_bypass(const struct l45_view *v);			/* cfg */

/* Kinds that are not built in (kinds.rs, kinds.c). The table is a
 * struct KindV1 (modules/src/abi.rs); only Rust looks inside. */
struct l45_kind_v1;
int l45_rs_kind_register(const struct l45_kind_v1 *table, void *owner);	/* cfg */
int l45_rs_kind_unregister(const struct l45_kind_v1 *table);		/* cfg; slot */
u32 l45_rs_kind_users(u32 slot);
void l45_rs_kind_forget(u32 slot);					/* cfg */
bool l45_owner_get(void *owner);
void l45_owner_put(void *owner);
/* Exported to kind modules (EXPORT_SYMBOL_GPL). */
int l45_register_kind(const struct l45_kind_v1 *table, struct module *owner);
void l45_unregister_kind(const struct l45_kind_v1 *table);

#define L45_SET_ACTIVATED 1
#define L45_SET_DEPRECATED 2
#define L45_SET_PRIORITY 3

/* Implemented in C. */
int l45_shim_init(void);
void l45_shim_exit(void);
u64 l45_now_ns(void);

#endif
