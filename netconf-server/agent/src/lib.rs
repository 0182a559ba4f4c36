//! The Layer 4.5 device agent: a NETCONF-over-SSH server for the
//! `layer45-customization` model that drives a tap backend.
//!
//! A request flows `ssh` → `session` (framing, hello) → `ops` (typed
//! request, NACM, one file per operation group) → `config::edit::compute`
//! (the change, by the native or the libyang engine) → `config::commit`
//! (tap prepare → persist → tap apply → swap → notify). `datastore` holds
//! the data, `state` the config-false data, `error` the one conversion to
//! `<rpc-error>`, `subscriptions` notifications (RFC 5277 with replay, RFC
//! 8639/8641 YANG-push).

pub mod agent;
pub mod callhome;
pub mod config;
pub mod datastore;
pub mod device_info;
pub mod error;
pub mod filter;
pub mod images;
#[allow(unsafe_code)]
pub mod memtrim;
pub mod metrics;
pub mod nacm;
pub mod narrow;
pub mod notify;
pub mod ops;
pub mod session;
pub mod sessions;
pub mod ssh;
pub mod state;
pub mod subscriptions;
mod sync;
#[cfg(test)]
mod testutil;
pub mod time;
pub mod yangerr;
