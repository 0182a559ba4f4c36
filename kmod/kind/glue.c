// SPDX-License-Identifier: GPL-2.0
/*
 * The kernel module of module kind "@KIND@" (generated from
 * kmod/kind/glue.c): init hands the table the kind exports (l45_kind_v1,
 * struct KindV1 of modules/src/abi.rs) to l45.ko, exit takes it back.
 * l45.ko keeps this module loaded while a configured module uses the kind
 * and checks the table itself.
 */
#include <linux/module.h>
#include <linux/string.h>

/* The head of struct KindV1 (#[repr(C)]): enough to check the name. */
struct l45_kind_v1 {
	u32 abi_version;
	u32 params_size;
	u32 state_size;
	u32 flags;
	const u8 *name;
	size_t name_len;
};

extern const struct l45_kind_v1 l45_kind_v1;
int l45_register_kind(const struct l45_kind_v1 *table, struct module *owner);
void l45_unregister_kind(const struct l45_kind_v1 *table);

#define L45_KIND_NAME "@KIND@"

static int __init l45_kind_init(void)
{
	size_t n = strlen(L45_KIND_NAME);

	/* The module is named after the kind: the agent unloads it by name. */
	if (!l45_kind_v1.name || l45_kind_v1.name_len != n || memcmp(l45_kind_v1.name, L45_KIND_NAME, n)) {
		pr_err("@MODULE@: the kind's table does not name kind " L45_KIND_NAME "\n");
		return -EINVAL;
	}
	return l45_register_kind(&l45_kind_v1, THIS_MODULE);
}

static void __exit l45_kind_exit(void)
{
	l45_unregister_kind(&l45_kind_v1);
}

module_init(l45_kind_init);
module_exit(l45_kind_exit);
MODULE_LICENSE("GPL");
MODULE_AUTHOR("Layer 4.5");
MODULE_DESCRIPTION("Layer 4.5 module kind @KIND@ (a module image for l45.ko)");
