// SPDX-License-Identifier: GPL-2.0

//! The shim's entry points for sockets: chains created and freed, refreshed
//! against the module table, the plan the data path follows, and the send,
//! receive and end-of-stream runs of a chain. Locks as `l45.h` documents
//! (`sock`: the socket entry's spinlock, `cfg`: the configuration one).

use super::*;


/// A new, empty chain (generation 0: the first refresh does first sight).
#[no_mangle]
pub extern "C" fn l45_rs_sock_new(proto: u8, role: u8) -> *mut c_void {
    let s = Sock {
        generation: 0,
        seen: false,
        role: if role == 0 { Role::Client } else { Role::Server },
        transport: if proto == PROTO_TCP {
            Transport::Stream
        } else {
            Transport::Datagram
        },
        chain: [const { None }; MAX_CHAIN],
    };
    match KBox::new(s, GFP_KERNEL) {
        Ok(b) => KBox::into_raw(b).cast(),
        Err(_) => core::ptr::null_mut(),
    }
}

/// # Safety
/// `s` came from `l45_rs_sock_new` and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn l45_rs_sock_free(s: *mut c_void) {
    if s.is_null() {
        return;
    }
    // SAFETY: `s` was produced by KBox::into_raw in l45_rs_sock_new.
    let b = unsafe { KBox::from_raw(s.cast::<Sock>()) };
    for a in b.entries() {
        a.detach();
    }
    drop(b);
}

/// # Safety
/// `s` is a live chain; sock lock held.
unsafe fn sock<'a>(s: *const c_void) -> &'a mut Sock {
    // SAFETY: the caller's lock makes this the only reference.
    unsafe { &mut *(s as *mut Sock) }
}

/// # Safety
/// `s` is a live chain; sock lock held.
#[no_mangle]
pub unsafe extern "C" fn l45_rs_sock_gen(s: *const c_void) -> u32 {
    // SAFETY: contract.
    unsafe { sock(s) }.generation
}

/// # Safety
/// `s` is a live chain, `v` a valid view; sock and cfg locks held.
#[no_mangle]
pub unsafe extern "C" fn l45_rs_sock_refresh(s: *mut c_void, v: *const View) {
    // SAFETY: contract.
    let (s, v, t) = unsafe { (sock(s), &*v, table()) };
    s.refresh(t, v);
}

/// What the data path must do for this chain (`struct l45_plan`): per
/// direction nothing (no activated module acts on it for this socket's role
/// and transport, `Instance::acts_on`), only a delay (rate limits never
/// change bytes), the bytes through the chain, or one fixed insertion the
/// shim does itself (`Instance::splice`: the only module acting on that
/// direction of a datagram socket is a front/middle tag or clearance filter).
///
/// # Safety
/// `s` is a live chain, `out` valid for a write; sock lock held.
#[no_mangle]
pub unsafe extern "C" fn l45_rs_sock_plan(s: *const c_void, out: *mut Plan) {
    // SAFETY: contract.
    let s = unsafe { sock(s) };
    let mut p = Plan {
        send: PLAN_NONE,
        recv: PLAN_NONE,
        splice_len: 0,
        pad: 0,
        splice_at: 0,
        splice_min: 0,
        delay_ms: 0,
        splice_slot: 0,
        splice_id: 0,
        interval: 0,
        splice_bytes: [0; l45mod::MAX_TAG],
        delay_slot: 0,
        delay_id: 0,
    };
    let (mut send_first, mut send_n, mut recv_first, mut recv_n) = (None, 0, None, 0);
    for a in s.entries().filter(|a| a.activated) {
        let d = a.instance.acts_on(s.role, s.transport);
        if d.send {
            match a.instance.params {
                Params::RateLimit { delay_ms } => {
                    if p.delay_ms == 0 {
                        p.delay_ms = delay_ms;
                        (p.delay_slot, p.delay_id) = (a.slot as u32, a.id);
                    }
                }
                _ => {
                    send_first = send_first.or(Some(a));
                    send_n += 1;
                }
            }
            p.send = p.send.max(PLAN_DELAY);
        }
        if d.recv {
            recv_first = recv_first.or(Some(a));
            recv_n += 1;
        }
    }
    if send_n > 0 {
        p.send = PLAN_BYTES;
    }
    if recv_n > 0 {
        p.recv = PLAN_BYTES;
    }
    fn one(first: Option<&Attached>, n: usize, t: Transport) -> Option<(&Attached, l45mod::Splice<'_>)> {
        match first {
            Some(a) if n == 1 && t == Transport::Datagram => a.instance.splice().map(|sp| (a, sp)),
            _ => None,
        }
    }
    // A datagram socket inserts on one side only (client sends, server
    // receives), so one splice description per plan is enough.
    let spliced = match one(send_first, send_n, s.transport) {
        Some(x) => {
            p.send = PLAN_SPLICE;
            Some(x)
        }
        None => one(recv_first, recv_n, s.transport).inspect(|_| p.recv = PLAN_SPLICE),
    };
    // A stream whose only module changing sends is a stream tag: the shim
    // inserts the tags between the application's bytes itself
    // (`l45_rs_stream_since`/`l45_rs_stream_set` keep the module's state).
    // The same on receive (a client): the shim strips the tags itself.
    let tagged = match (send_first, send_n, recv_first, recv_n) {
        (Some(a), 1, _, _) => Some((a, &mut p.send)),
        (_, _, Some(a), 1) => Some((a, &mut p.recv)),
        _ => None,
    };
    if let (Some((a, dir)), Transport::Stream) = (tagged, s.transport) {
        if let Params::StreamTag { interval, tag } = &a.instance.params {
            let b = tag.as_bytes();
            let n = b.len().min(l45mod::MAX_TAG);
            *dir = PLAN_STREAM_TAG;
            p.interval = *interval;
            p.splice_bytes[..n].copy_from_slice(&b[..n]);
            p.splice_len = n as u8;
            p.splice_slot = a.slot as u32;
            p.splice_id = a.id;
        }
    }
    if let Some((a, sp)) = spliced {
        let n = sp.bytes.len().min(l45mod::MAX_TAG);
        p.splice_bytes[..n].copy_from_slice(&sp.bytes[..n]);
        p.splice_len = n as u8;
        p.splice_at = sp.at as u16;
        p.splice_min = sp.min_send as u16;
        p.splice_slot = a.slot as u32;
        p.splice_id = a.id;
    }
    // SAFETY: `out` is valid for a write (contract).
    unsafe { out.write(p) };
}

/// Counts a splice the shim did for module `id` in `slot`: `what` 0 a
/// customized send of `n` bytes, 1 a customized receive, 2 a datagram no
/// module recognised, dropped by a server (as `l45_rs_recv` counts it).
#[no_mangle]
pub extern "C" fn l45_rs_count(slot: u32, id: u32, what: c_int, n: usize) {
    let Some(c) = counters(slot as usize, id) else {
        return;
    };
    match what {
        0 => {
            c.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
            c.messages_sent.fetch_add(1, Ordering::Relaxed);
        }
        1 => {
            c.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
            c.messages_received.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            c.drops.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    c.active_ts.store(now_ns(), Ordering::Relaxed);
}

/// Output space a send of `len` bytes needs.
///
/// # Safety
/// `s` is a live chain; sock lock held.
#[no_mangle]
pub unsafe extern "C" fn l45_rs_send_cap(s: *const c_void, len: usize) -> usize {
    // SAFETY: contract.
    let s = unsafe { sock(s) };
    s.entries()
        .filter(|a| a.activated)
        .map(|a| a.instance.send_capacity(len))
        .max()
        .unwrap_or(0)
}

/// Most bytes any module adds on receive.
///
/// # Safety
/// `s` is a live chain; sock lock held.
#[no_mangle]
pub unsafe extern "C" fn l45_rs_recv_growth(s: *const c_void) -> usize {
    // SAFETY: contract.
    let s = unsafe { sock(s) };
    s.entries().map(|a| a.instance.recv_capacity(0)).max().unwrap_or(0)
}

/// Runs the send chain.
///
/// # Safety
/// `s` live chain, `v` valid, `input` valid for `len` bytes, `out` for
/// `cap` bytes, `out_len` for a write; sock lock held.
#[no_mangle]
pub unsafe extern "C" fn l45_rs_send(
    s: *mut c_void,
    v: *const View,
    input: *const u8,
    len: usize,
    out: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> c_int {
    // SAFETY: contract.
    let (s, v, input, out) = unsafe {
        (
            sock(s),
            &*v,
            core::slice::from_raw_parts(input, len),
            core::slice::from_raw_parts_mut(out, cap),
        )
    };
    let ctx = s.ctx(v);
    for a in s.chain.iter_mut().flatten() {
        if !a.activated {
            continue;
        }
        let need = a.instance.send_capacity(len);
        if need > out.len() {
            if let Some(c) = counters(a.slot, a.id) {
                c.errors.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        let c = counters(a.slot, a.id);
        match a.instance.send(&mut a.state, &ctx, input, &mut out[..need]) {
            SendVerdict::NotMine | SendVerdict::Delay(_) => continue,
            SendVerdict::PassThrough => return V_ORIGINAL,
            SendVerdict::Drop => {
                if let Some(c) = c {
                    c.drops.fetch_add(1, Ordering::Relaxed);
                    c.active_ts.store(now_ns(), Ordering::Relaxed);
                }
                return V_DROP;
            }
            SendVerdict::Customized(n) => {
                let n = n.min(need);
                if let Some(c) = c {
                    c.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
                    c.messages_sent.fetch_add(1, Ordering::Relaxed);
                    c.active_ts.store(now_ns(), Ordering::Relaxed);
                }
                // SAFETY: out_len is valid for a write (contract).
                unsafe { *out_len = n };
                return V_CUSTOMIZED;
            }
        }
    }
    V_ORIGINAL
}

/// Runs the receive chain.
///
/// # Safety
/// As for `l45_rs_send`.
#[no_mangle]
pub unsafe extern "C" fn l45_rs_recv(
    s: *mut c_void,
    v: *const View,
    input: *const u8,
    len: usize,
    out: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> c_int {
    // SAFETY: contract.
    let (s, v, input, out) = unsafe {
        (
            sock(s),
            &*v,
            core::slice::from_raw_parts(input, len),
            core::slice::from_raw_parts_mut(out, cap),
        )
    };
    let ctx = s.ctx(v);
    for a in s.chain.iter_mut().flatten() {
        if !a.activated {
            continue;
        }
        let need = a.instance.recv_capacity(len).min(out.len());
        let c = counters(a.slot, a.id);
        match a.instance.recv(&mut a.state, &ctx, input, &mut out[..need]) {
            RecvVerdict::NotMine => continue,
            RecvVerdict::PassThrough => return V_ORIGINAL,
            RecvVerdict::Drop => {
                if let Some(c) = c {
                    c.drops.fetch_add(1, Ordering::Relaxed);
                    c.active_ts.store(now_ns(), Ordering::Relaxed);
                }
                return V_DROP;
            }
            RecvVerdict::Customized(n) => {
                let n = n.min(need);
                if let Some(c) = c {
                    c.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
                    c.messages_received.fetch_add(1, Ordering::Relaxed);
                    c.active_ts.store(now_ns(), Ordering::Relaxed);
                }
                // SAFETY: out_len is valid for a write (contract).
                unsafe { *out_len = n };
                return V_CUSTOMIZED;
            }
        }
    }
    // Nobody recognised it: a server whose module insists drops it.
    if let Some(a) = s
        .entries()
        .find(|a| a.activated && a.instance.required_on_recv(&ctx))
    {
        if let Some(c) = counters(a.slot, a.id) {
            c.drops.fetch_add(1, Ordering::Relaxed);
        }
        return V_DROP;
    }
    V_ORIGINAL
}

/// End of stream: bytes modules held while recognising are data.
///
/// # Safety
/// `s` live chain, `out` valid for `cap` bytes; sock lock held.
#[no_mangle]
pub unsafe extern "C" fn l45_rs_recv_eof(s: *mut c_void, out: *mut u8, cap: usize) -> usize {
    // SAFETY: contract.
    let (s, out) = unsafe { (sock(s), core::slice::from_raw_parts_mut(out, cap)) };
    let mut total = 0;
    for a in s.chain.iter_mut().flatten() {
        if out.len() - total < l45mod::MAX_TAG + 2 {
            break;
        }
        total += a.instance.recv_eof(&mut a.state, &mut out[total..]);
    }
    total
}

/// Attached ids in chain order into `ids` (8 entries); returns the count.
///
/// # Safety
/// `s` live chain, `ids` valid for 8 writes; sock lock held.
#[no_mangle]
pub unsafe extern "C" fn l45_rs_sock_ids(s: *const c_void, ids: *mut u32) -> u32 {
    // SAFETY: contract.
    let s = unsafe { sock(s) };
    let mut n = 0;
    for a in s.entries() {
        // SAFETY: n < MAX_CHAIN and `ids` holds MAX_CHAIN entries.
        unsafe { ids.add(n).write(a.id) };
        n += 1;
    }
    n as u32
}

/// A customized send failed in the kernel: count it on the first active
/// module.
///
/// # Safety
/// `s` live chain; sock lock held.
#[no_mangle]
pub unsafe extern "C" fn l45_rs_error(s: *mut c_void) {
    // SAFETY: contract.
    let s = unsafe { sock(s) };
    if let Some(a) = s.entries().find(|a| a.activated) {
        if let Some(c) = counters(a.slot, a.id) {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The activated stream tag `id` of this chain and its interval.
fn stream_tag(s: &mut Sock, id: u32) -> Option<(&mut SocketState, u32)> {
    s.chain.iter_mut().flatten().find_map(|a| match a.instance.params {
        Params::StreamTag { interval, .. } if a.id == id && a.activated => Some((&mut a.state, interval)),
        _ => None,
    })
}

/// Where stream tag `id` stands for the shim's insertion: payload bytes
/// sent since its last tag, or its interval when a tag is due before the
/// next byte (the first send of a stream starts with a tag, as
/// `stream::send` does). -1 if the chain no longer holds it activated.
///
/// # Safety
/// `s` live chain; sock lock held.
#[no_mangle]
pub unsafe extern "C" fn l45_rs_stream_since(s: *mut c_void, id: u32) -> i64 {
    // SAFETY: contract.
    match stream_tag(unsafe { sock(s) }, id) {
        Some((st, interval)) if st.sent_since_tag == 0 && !st.prefix_sent => interval as i64,
        Some((st, _)) => st.sent_since_tag as i64,
        None => -1,
    }
}

/// The shim inserted the tags of one send: the module's state moves to
/// where its own `send` would have left it.
///
/// # Safety
/// `s` live chain; sock lock held.
#[no_mangle]
pub unsafe extern "C" fn l45_rs_stream_set(s: *mut c_void, id: u32, since: u32) {
    // SAFETY: contract.
    if let Some((st, _)) = stream_tag(unsafe { sock(s) }, id) {
        st.sent_since_tag = since;
        st.prefix_sent = true;
    }
}

/// Mirror of `struct l45_tag_rx` (l45.h): where a stream tag's receiving
/// side stands (`SocketState`'s `recognition`, `tag_left`, `until_tag`).
#[repr(C)]
pub struct TagRx {
    recognition: u8,
    tag_left: u8,
    pad: [u8; 2],
    until_tag: u32,
}

/// Reads (`write` 0) or writes (1) the receiving state of stream tag `id`
/// for the shim's in-place stripping. Returns 0, or -1 if the chain no
/// longer holds it activated.
///
/// # Safety
/// `s` live chain, `st` valid; sock lock held.
#[no_mangle]
pub unsafe extern "C" fn l45_rs_stream_rx(s: *mut c_void, id: u32, st: *mut TagRx, write: c_int) -> c_int {
    // SAFETY: contract.
    let (s, st) = unsafe { (sock(s), &mut *st) };
    let Some((state, _)) = stream_tag(s, id) else {
        return -1;
    };
    if write != 0 {
        state.recognition = match st.recognition {
            0 => Recognition::Unknown,
            1 => Recognition::Mine,
            _ => Recognition::NotMine,
        };
        state.tag_left = st.tag_left;
        state.until_tag = st.until_tag;
    } else {
        st.recognition = match state.recognition {
            Recognition::Unknown => 0,
            Recognition::Mine => 1,
            Recognition::NotMine => 2,
        };
        st.tag_left = state.tag_left;
        st.until_tag = state.until_tag;
    }
    0
}

/// A connection older than the module that is not tapped (its role is
/// unknown, `shim_tcp.c`): counted as `bypassed` by every activated module
/// that is not deprecated and whose rule selects it.
///
/// # Safety
/// `v` valid; cfg lock held.
#[no_mangle]
pub unsafe extern "C" fn l45_rs_count_bypass(v: *const View) {
    // SAFETY: contract.
    let (t, v) = unsafe { (table(), &*v) };
    for (slot, m) in t.specs.iter().enumerate() {
        let Some(m) = m else { continue };
        if m.flags & F_ACTIVATED != 0 && m.flags & F_DEPRECATED == 0 && m.rule.matches(v) {
            if let Some(c) = counters(slot, m.id) {
                c.bypassed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
