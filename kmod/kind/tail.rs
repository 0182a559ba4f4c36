
// ---- appended by the kernel build (kmod/kind/tail.rs) ----
// The kind crate, the SDK and the modules crate (the ABI) compile as one
// kernel crate whose root is the kind's lib.rs: the two dependencies are
// modules of it, under the names the kind's `use` lines give them (the
// build rewrites their own `crate::`/`$crate::` paths to match).
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
pub mod l45_modules;
