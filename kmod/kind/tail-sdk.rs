#[allow(
    dead_code,
    unused_attributes,
    unused_imports,
    unreachable_pub,
    missing_docs,
    clippy::all,
    rust_2018_idioms
)]
#[path = "l45_kind_sdk/lib.rs"]
pub mod l45_kind_sdk;
