// SPDX-License-Identifier: GPL-2.0

//! The kernel module of one module kind that is not built in, generated
//! from `kmod/kind/l45_kind.rs` by `kmod/kind/build.sh` (or the NCO's
//! `images::kernel_build`): the kind crate's source and the modules crate
//! (its ABI, `modules/src/abi.rs`) compiled into one kernel crate. Init
//! hands the kind's exported `l45_kind_v1` table to l45.ko, exit takes it
//! back (l45.ko keeps this module loaded while a configured module uses
//! the kind).

// The kind's source names the ABI crate `l45_modules` (and the SDK
// `l45_kind_sdk`) as a cargo build does: here both names are this crate,
// whose root re-exports them.
extern crate self as l45_modules;

#[allow(
    dead_code,
    unused_attributes,
    unused_imports,
    unreachable_pub,
    missing_docs,
    clippy::all,
    rust_2018_idioms
)]
#[path = "l45_modules/lib.rs"]
mod l45mod;
#[allow(unused_imports)]
pub use l45mod::*;

// @SDK@

#[allow(
    dead_code,
    unused_attributes,
    unreachable_pub,
    missing_docs,
    clippy::all,
    rust_2018_idioms
)]
#[path = "kind/lib.rs"]
mod kind;

/// The kind's name, as module entries and the image store name it.
const KIND_NAME: &str = "@KIND@";

extern "C" {
    /// The table the kind exports (the SDK's `export_kind!`).
    static l45_kind_v1: abi::KindV1;
    /// `owner` is this module's `struct module` (opaque here).
    fn l45_register_kind(
        table: *const abi::KindV1,
        owner: *mut core::ffi::c_void,
    ) -> core::ffi::c_int;
    fn l45_unregister_kind(table: *const abi::KindV1);
}

kernel::prelude::module! {
    type: L45Kind,
    name: "@MODULE@",
    author: "Layer 4.5",
    description: "Layer 4.5 module kind @KIND@ (a module image for l45.ko)",
    license: "GPL",
}

struct L45Kind;

impl kernel::Module for L45Kind {
    fn init(module: &'static kernel::ThisModule) -> kernel::error::Result<Self> {
        let table = &raw const l45_kind_v1;
        // SAFETY: a static of this module; reading its name fields only.
        let (name, len) = unsafe { ((*table).name, (*table).name_len) };
        // SAFETY: a non-null name of `len` bytes in this module's rodata
        // (checked again, with the rest of the table, by l45.ko).
        let name = (!name.is_null()).then(|| unsafe { core::slice::from_raw_parts(name, len) });
        // The module is named after the kind: the agent unloads it by name.
        if name != Some(KIND_NAME.as_bytes()) {
            kernel::pr_err!("the kind's table is not named {}\n", KIND_NAME);
            return Err(kernel::error::code::EINVAL);
        }
        // SAFETY: the table and this module stay valid until exit, which
        // unregisters it first.
        kernel::error::to_result(unsafe { l45_register_kind(table, module.as_ptr().cast()) })?;
        Ok(L45Kind)
    }
}

impl Drop for L45Kind {
    fn drop(&mut self) {
        // SAFETY: registered at init; l45.ko waits until no chain uses it.
        unsafe { l45_unregister_kind(&raw const l45_kind_v1) };
    }
}
