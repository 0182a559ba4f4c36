//! How configuration changes: an operation's request becomes a [`delta::Delta`]
//! computed against its target ([`edit::compute`], the only place that picks
//! an engine), and a change of running goes through [`commit`] (tap prepare
//! → persist → tap apply → swap → notify), the only path by which running
//! or the tap changes.

pub mod commit;
pub mod delta;
pub mod edit;
