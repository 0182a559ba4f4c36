//! Helpers shared by the fuzz targets: a cursor that turns the fuzzer's
//! bytes into the values a target needs (running out yields zeros, so every
//! input is usable).

pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }

    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let b = self.take(N);
        out[..b.len()].copy_from_slice(b);
        out
    }

    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
}

/// The libyang context the agent uses; a fuzz target cannot run without it.
pub fn ctx() -> &'static yang3::context::Context {
    match l45_yang::context() {
        Ok(c) => c,
        Err(e) => panic!("no libyang context: {e}"),
    }
}
