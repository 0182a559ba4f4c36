// SPDX-License-Identifier: GPL-2.0
/*
 * Layer 4.5 kernel tap: the entry points of kind modules (module kinds
 * that are not built in, kmod/kind/). A kind module registers its table
 * (struct KindV1 of modules/src/abi.rs) at init and unregisters it at exit;
 * the registry and the checks are Rust (kinds.rs).
 *
 * A configured module of the kind holds a reference on the kind module
 * (try_module_get), so its exit only runs once no configured module uses
 * it. Unregistering then waits until no socket chain holds a copy: it
 * refreshes every tapped socket's chain (a revoked module leaves it), and
 * repeats while chains that were not yet in the socket table still hold
 * one. Locks as in shim.c: l45_hash_lock -> entry->lock -> l45_cfg_lock.
 */
#include <linux/module.h>
#include <linux/delay.h>
#include <linux/hashtable.h>
#include <linux/spinlock.h>

#include "l45.h"
#include "shim.h"

bool l45_owner_get(void *owner)
{
	return try_module_get(owner);
}

void l45_owner_put(void *owner)
{
	module_put(owner);
}

int l45_register_kind(const struct l45_kind_v1 *table, struct module *owner)
{
	int err;

	spin_lock(&l45_cfg_lock);
	err = l45_rs_kind_register(table, owner);
	spin_unlock(&l45_cfg_lock);
	return err;
}
EXPORT_SYMBOL_GPL(l45_register_kind);

/* Brings every tapped socket's chain up to date (a revoked module leaves
 * its chain; no module of an unregistered kind can join one). */
static void l45_refresh_all(void)
{
	struct l45_sk *e;
	int bkt;

	spin_lock(&l45_hash_lock);
	hash_for_each(l45_hash, bkt, e, node) {
		spin_lock(&e->lock);
		l45_refresh_locked(e, e->sk);
		spin_unlock(&e->lock);
	}
	spin_unlock(&l45_hash_lock);
}

void l45_unregister_kind(const struct l45_kind_v1 *table)
{
	int slot;
	unsigned int waited = 0;

	spin_lock(&l45_cfg_lock);
	slot = l45_rs_kind_unregister(table);
	spin_unlock(&l45_cfg_lock);
	if (slot < 0)
		return;
	for (;;) {
		l45_refresh_all();
		if (!l45_rs_kind_users(slot))
			break;
		/* A chain made just before the revoke but not yet in the
		 * socket table: it is there, or gone, within moments. */
		if (++waited % 1000 == 0)
			pr_warn("l45: kind unregistering, %u chain entries still hold it\n",
				l45_rs_kind_users(slot));
		msleep(5);
	}
	spin_lock(&l45_cfg_lock);
	l45_rs_kind_forget(slot);
	spin_unlock(&l45_cfg_lock);
	pr_info("l45: kind unregistered\n");
}
EXPORT_SYMBOL_GPL(l45_unregister_kind);
