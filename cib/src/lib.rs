//! The customization information base (CIB). Being built (issue 4).
