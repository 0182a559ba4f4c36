//! The kernel tap's netlink attribute parsing (`tap/kernel/src/nl.rs`):
//! attributes of replies from the `l45` family, nested as the report and
//! socket dumps nest them, read with the typed getters; and the builder's
//! attributes parse back to what was put in.
#![no_main]

use l45_fuzz::Cursor;
use l45_tap_kernel::nl::{self, Attrs};

fn walk(data: &[u8], depth: usize) {
    for (ty, payload) in nl::parse_attrs(data) {
        let _ = nl::attr_u8(data, ty);
        let _ = nl::attr_u16(data, ty);
        let _ = nl::attr_u32(data, ty);
        let _ = nl::attr_u64(data, ty);
        let _ = nl::attr_str(data, ty);
        if depth < 3 {
            walk(payload, depth + 1);
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    walk(data, 0);

    let mut c = Cursor::new(data);
    let mut put = Vec::new();
    let mut attrs = Attrs::new();
    while !c.is_empty() && put.len() < 64 {
        let ty = c.u16() & 0x3fff;
        let len = usize::from(c.u8());
        let payload = c.take(len);
        attrs.put(ty, payload);
        put.push((ty, payload));
    }
    let got: Vec<(u16, &[u8])> = nl::parse_attrs(attrs.as_bytes()).collect();
    assert_eq!(got, put, "attributes did not parse back");
});
