//! `install-module` inputs by SHA-256, kept for the life of the NCO
//! process (`images/install.rs` fills and reads it; `Nco` holds it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// `install-module` inputs by SHA-256, built once per process: a wave to
/// many devices reads and encodes an image once.
#[derive(Default)]
pub(crate) struct InputCache(Mutex<HashMap<String, Arc<String>>>);

impl InputCache {
    pub(crate) fn get(&self, sha256: &str) -> Option<Arc<String>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sha256)
            .cloned()
    }

    pub(crate) fn put(&self, sha256: &str, input: Arc<String>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sha256.to_string(), input);
    }
}
