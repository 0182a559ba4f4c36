// SPDX-License-Identifier: GPL-2.0

//! The registry of module kinds that are not built in: a kind module
//! (`l45_kind_<name>.ko`, built from `kmod/kind/`) hands its
//! [`abi::KindV1`] table to `l45_register_kind` (kinds.c) at init and takes
//! it back with `l45_unregister_kind` at exit. A REGISTER request naming
//! the kind (`L45_A_KIND` 0, `L45_A_KIND_NAME`) builds its `Instance` from
//! the registry.
//!
//! Lifetime: every configured module of an external kind holds a reference
//! on the kind module (`try_module_get`, dropped at revoke or when a
//! replace changes the kind), so `rmmod` of the kind fails while one is
//! configured. Chains keep a copy of a revoked module until their next
//! call; `ATTACHED` counts those copies per kind without a lock, and
//! unregistering waits until every chain has let go (kinds.c refreshes
//! every socket's chain, so idle sockets do not hold it up). After that no
//! code of the kind can run: module code only runs from a chain, under the
//! socket entry's lock.
//!
//! The registry itself is guarded by `l45_cfg_lock` like the module table.

use super::*;
use l45mod::abi::{self, ExternalKind, KindV1};

/// Kinds loaded at once.
pub const MAX_KINDS: usize = 16;

extern "C" {
    /// `try_module_get(owner)` (kinds.c): false while the module unloads.
    fn l45_owner_get(owner: *mut c_void) -> bool;
    /// `module_put(owner)` (kinds.c).
    fn l45_owner_put(owner: *mut c_void);
}

#[derive(Clone, Copy)]
struct Registered {
    kind: ExternalKind,
    owner: *mut c_void,
}

static REGISTRY: Global<[Option<Registered>; MAX_KINDS]> =
    Global(UnsafeCell::new([const { None }; MAX_KINDS]));

/// Per registry slot: the table it was registered with (null when free)
/// and how many chain entries hold an instance of it. Read without a lock
/// by `attached`/`detached`; the table is only cleared once the count is 0.
struct Users {
    table: core::sync::atomic::AtomicPtr<KindV1>,
    attached: AtomicU32,
}

static USERS: [Users; MAX_KINDS] = [const {
    Users {
        table: core::sync::atomic::AtomicPtr::new(core::ptr::null_mut()),
        attached: AtomicU32::new(0),
    }
}; MAX_KINDS];

/// # Safety
/// The caller holds `l45_cfg_lock` for as long as it uses the reference.
unsafe fn registry() -> &'static mut [Option<Registered>; MAX_KINDS] {
    // SAFETY: exclusive access is guaranteed by the caller's lock.
    unsafe { &mut *REGISTRY.0.get() }
}

fn users_of(kind: &Kind) -> Option<&'static Users> {
    let Kind::External(k) = kind else {
        return None;
    };
    let table = k.table() as *const KindV1 as *mut KindV1;
    USERS
        .iter()
        .find(|u| u.table.load(Ordering::Acquire) == table)
}

/// A chain entry took an instance of `kind` (sock lock held).
pub fn attached(kind: &Kind) {
    if let Some(u) = users_of(kind) {
        u.attached.fetch_add(1, Ordering::AcqRel);
    }
}

/// A chain entry let go of an instance of `kind`.
pub fn detached(kind: &Kind) {
    if let Some(u) = users_of(kind) {
        let _ = u
            .attached
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

/// The registered kind called `name` (cfg lock held).
pub fn by_name(name: &[u8]) -> Option<ExternalKind> {
    // SAFETY: the caller holds the cfg lock.
    let r = unsafe { registry() };
    r.iter()
        .flatten()
        .find(|k| k.kind.name().as_bytes() == name)
        .map(|k| k.kind)
}

/// Takes a reference on the module of `kind` for a configured module
/// (cfg lock held). False when the kind is not registered or its module
/// is unloading.
pub fn pin(kind: &Kind) -> bool {
    let Kind::External(k) = kind else {
        return true;
    };
    // SAFETY: the caller holds the cfg lock.
    let r = unsafe { registry() };
    match r.iter().flatten().find(|e| e.kind == *k) {
        // SAFETY: the owner is the live module that registered the kind
        // (it unregisters before it goes).
        Some(e) => unsafe { l45_owner_get(e.owner) },
        None => false,
    }
}

/// Drops the reference `pin` took (cfg lock held).
pub fn unpin(kind: &Kind) {
    let Kind::External(k) = kind else {
        return;
    };
    // SAFETY: the caller holds the cfg lock.
    let r = unsafe { registry() };
    if let Some(e) = r.iter().flatten().find(|e| e.kind == *k) {
        // SAFETY: a reference taken by `pin` for this owner.
        unsafe { l45_owner_put(e.owner) };
    }
}

/// Registers a kind table: 0, or a negative errno (the reason is logged).
///
/// # Safety
/// `table` is null or points to a `KindV1` that stays valid until
/// `l45_rs_kind_unregister` of it has returned and no chain holds it
/// (kinds.c waits for that); `owner` is the module it lives in. cfg lock
/// held.
#[no_mangle]
pub unsafe extern "C" fn l45_rs_kind_register(table: *const KindV1, owner: *mut c_void) -> c_int {
    // SAFETY: the caller's guarantee covers ExternalKind::new's: the table
    // is used only while registered or held by a chain (see the module doc).
    let kind = match unsafe { ExternalKind::new(table) } {
        Ok(k) => k,
        Err(e) => {
            pr_err!("kind table refused: {}\n", e);
            return -EINVAL;
        }
    };
    // SAFETY: cfg lock held (contract).
    let r = unsafe { registry() };
    if r.iter().flatten().any(|e| e.kind.name() == kind.name()) {
        pr_err!("kind {} is registered already\n", kind.name());
        return -EEXIST;
    }
    // A slot is free once its last user has left (see `l45_rs_kind_forget`).
    let free = (0..MAX_KINDS)
        .find(|&i| r[i].is_none() && USERS[i].table.load(Ordering::Acquire).is_null());
    let Some(slot) = free else {
        pr_err!(
            "kind {}: registry full ({} kinds)\n",
            kind.name(),
            MAX_KINDS
        );
        return -ENOSPC;
    };
    USERS[slot].attached.store(0, Ordering::Release);
    USERS[slot].table.store(
        kind.table() as *const KindV1 as *mut KindV1,
        Ordering::Release,
    );
    r[slot] = Some(Registered { kind, owner });
    pr_info!(
        "kind {} registered (ABI {})\n",
        kind.name(),
        abi::ABI_VERSION
    );
    0
}

/// Takes a kind out of the registry (no new module can name it) and
/// returns its slot, or -ENOENT. Its users are waited for by the caller
/// (`l45_rs_kind_users`, then `l45_rs_kind_forget`).
///
/// cfg lock held.
#[no_mangle]
pub extern "C" fn l45_rs_kind_unregister(kind_table: *const KindV1) -> c_int {
    // SAFETY: the shim calls this with the cfg lock held.
    let r = unsafe { registry() };
    for (slot, e) in r.iter_mut().enumerate() {
        if e.is_some_and(|e| core::ptr::eq(e.kind.table(), kind_table)) {
            // No configured module can still use it: each holds a
            // reference on the kind's module, which is unloading.
            // SAFETY: cfg lock held (as above).
            let t = unsafe { table() };
            if t.specs.iter().flatten().any(|s| match s.instance.kind {
                Kind::External(k) => core::ptr::eq(k.table(), kind_table),
                _ => false,
            }) {
                pr_err!("kind unregistered while a module uses it\n");
            }
            *e = None;
            return slot as c_int;
        }
    }
    -ENOENT
}

/// Chain entries still holding an instance of the kind in `slot`.
#[no_mangle]
pub extern "C" fn l45_rs_kind_users(slot: u32) -> u32 {
    USERS
        .get(slot as usize)
        .map_or(0, |u| u.attached.load(Ordering::Acquire))
}

/// Frees `slot` once its kind has no users left (cfg lock held).
#[no_mangle]
pub extern "C" fn l45_rs_kind_forget(slot: u32) {
    if let Some(u) = USERS.get(slot as usize) {
        u.table.store(core::ptr::null_mut(), Ordering::Release);
    }
}
