//! The shims, driven through the checked table as a tap drives them, and
//! with the raw pointers a broken caller might pass.
extern crate std;

use super::*;
use l45_modules::{Instance, Kind, SocketState};

/// Counts bytes per socket and claims more output than it has, to check
/// that the shims hold a kind to its buffers.
struct Counter;

#[derive(Clone, Copy)]
struct CounterParams {
    lie: bool,
}

#[derive(Clone, Copy, Default)]
struct Seen {
    bytes: u64,
}

impl ModuleKind for Counter {
    type Params = CounterParams;
    type State = Seen;

    fn parse(pairs: &[(&str, &str)]) -> Result<CounterParams, ParamError> {
        let mut p = CounterParams { lie: false };
        for (name, value) in pairs {
            match (*name, *value) {
                ("lie", "true") => p.lie = true,
                ("lie", "false") => p.lie = false,
                ("lie", v) => {
                    return Err(ParamError::format(format_args!("lie: {v:?} is no boolean")))
                }
                _ => return Err(ParamError::format(format_args!("unknown parameter {name}"))),
            }
        }
        Ok(p)
    }
    fn acts_on(_: &CounterParams, role: Role, _: Transport) -> Directions {
        Directions {
            send: role == Role::Client,
            recv: false,
        }
    }
    fn send_capacity(_: &CounterParams, n: usize) -> usize {
        n
    }
    fn recv_capacity(_: &CounterParams, n: usize) -> usize {
        n
    }
    fn send(
        p: &CounterParams,
        st: &mut Seen,
        _: &Ctx<'_>,
        input: &[u8],
        out: &mut [u8],
    ) -> SendVerdict {
        st.bytes += input.len() as u64;
        if p.lie {
            return SendVerdict::Customized(out.len() + 1);
        }
        let Some(dst) = out.get_mut(..input.len()) else {
            return SendVerdict::NotMine;
        };
        dst.copy_from_slice(input);
        SendVerdict::Customized(st.bytes as usize)
    }
    fn recv(_: &CounterParams, _: &mut Seen, _: &Ctx<'_>, _: &[u8], _: &mut [u8]) -> RecvVerdict {
        RecvVerdict::NotMine
    }
}

static COUNTER: Table = table::<Counter>("counter");

const CTX: Ctx<'static> = Ctx {
    role: Role::Client,
    transport: Transport::Datagram,
    thread_name: b"t",
    process_name: b"p",
};

#[test]
fn a_kind_runs_through_its_table_with_state_per_socket() {
    let kind = COUNTER.check().expect("an SDK table is valid");
    assert_eq!(kind.name(), "counter");
    assert!(kind.keeps_socket_state());
    let m = Instance::new(1, Kind::External(kind), [("lie", "false")]).expect("valid");
    let (mut a, mut b) = (SocketState::default(), SocketState::default());
    let mut out = [0u8; 8];
    // The count lives in each socket's state, starting from Default.
    assert_eq!(
        m.send(&mut a, &CTX, b"abc", &mut out),
        SendVerdict::Customized(3)
    );
    assert_eq!(
        m.send(&mut a, &CTX, b"de", &mut out),
        SendVerdict::Customized(5)
    );
    assert_eq!(
        m.send(&mut b, &CTX, b"x", &mut out),
        SendVerdict::Customized(1)
    );
    assert_eq!(&out[..1], b"x");
}

#[test]
fn parse_errors_reach_the_tap_with_their_message() {
    let kind = Kind::External(COUNTER.check().expect("valid"));
    let e = Instance::new(1, kind, [("lie", "maybe")]).expect_err("not a boolean");
    assert_eq!(std::format!("{e}"), "lie: \"maybe\" is no boolean");
    let e = Instance::new(1, kind, [("colour", "red")]).expect_err("unknown");
    assert_eq!(std::format!("{e}"), "unknown parameter colour");
    let many = [("lie", "true"); PAIRS_MAX + 1];
    assert!(Instance::new(1, kind, many).is_err());
}

#[test]
fn a_kind_claiming_more_than_its_buffer_passes_the_bytes_through() {
    let kind = Kind::External(COUNTER.check().expect("valid"));
    let m = Instance::new(1, kind, [("lie", "true")]).expect("valid");
    let mut st = SocketState::default();
    let mut out = [0u8; 4];
    assert_eq!(
        m.send(&mut st, &CTX, b"abc", &mut out),
        SendVerdict::PassThrough
    );
}

#[test]
fn shims_answer_harmlessly_to_unusable_arguments() {
    let raw = COUNTER.raw();
    let kind = COUNTER.check().expect("valid");
    let params = kind.parse([("lie", "false")]).expect("valid");
    let mut state = StateBlob::default();
    let ctx = RawCtx {
        role: 0,
        transport: 1,
        thread_name: core::ptr::null(),
        thread_name_len: 0,
        process_name: core::ptr::null(),
        process_name_len: 0,
    };
    let bad_role = RawCtx { role: 7, ..ctx };
    let bad_name = RawCtx {
        thread_name_len: 3,
        ..ctx
    };
    let send = raw.send.expect("set");
    let input = b"abc";
    let mut out = [0u8; 8];
    use core::ptr::null;
    let not_mine = verdict(VERDICT_NOT_MINE, 0);
    // SAFETY (all calls): every non-null pointer is valid for its length;
    // the null ones are what is being tested.
    unsafe {
        let mut call =
            |p: *const ParamsBlob, s: *mut StateBlob, c: *const RawCtx, i: *const u8, n| {
                send(p, s, c, i, n, out.as_mut_ptr(), out.len())
            };
        assert_eq!(call(null(), &mut state, &ctx, input.as_ptr(), 3), not_mine);
        assert_eq!(
            call(&params, core::ptr::null_mut(), &ctx, input.as_ptr(), 3),
            not_mine
        );
        assert_eq!(
            call(&params, &mut state, null(), input.as_ptr(), 3),
            not_mine
        );
        assert_eq!(
            call(&params, &mut state, &bad_role, input.as_ptr(), 3),
            not_mine
        );
        assert_eq!(
            call(&params, &mut state, &bad_name, input.as_ptr(), 3),
            not_mine
        );
        assert_eq!(call(&params, &mut state, &ctx, null(), 3), not_mine);
        // An empty input may come as (null, 0).
        assert_eq!(
            call(&params, &mut state, &ctx, null(), 0),
            verdict(VERDICT_CUSTOMIZED, 0)
        );
        // A null output of some length: refused; of none: empty.
        assert_eq!(
            send(
                &params,
                &mut state,
                &ctx,
                input.as_ptr(),
                3,
                core::ptr::null_mut(),
                4
            ),
            not_mine
        );
        let parse = raw.parse.expect("set");
        let mut blob = ParamsBlob([0; PARAMS_MAX]);
        let mut error = [0u8; 4];
        // Null pairs with n > 0, too many pairs, no room for the message:
        // all errors, never 0 (success).
        assert!(parse(core::ptr::null(), 1, &mut blob, error.as_mut_ptr(), 4) > 0);
        assert!(
            parse(
                core::ptr::null(),
                PAIRS_MAX + 1,
                &mut blob,
                error.as_mut_ptr(),
                4
            ) > 0
        );
        let bad = [RawParam {
            name: b"lie".as_ptr(),
            name_len: 3,
            value: b"\xff".as_ptr(),
            value_len: 1,
        }];
        assert_eq!(
            parse(bad.as_ptr(), 1, &mut blob, core::ptr::null_mut(), 0),
            1
        );
        assert_eq!(parse(bad.as_ptr(), 1, &mut blob, error.as_mut_ptr(), 4), 4);
        assert_eq!(&error, b"para");
        assert_eq!(
            parse(core::ptr::null(), 0, &mut blob, error.as_mut_ptr(), 4),
            0
        );
        let acts = raw.acts_on.expect("set");
        assert_eq!(acts(&params, 9, 0), 0);
        assert_eq!(acts(null(), 0, 0), 0);
        assert_eq!(acts(&params, 0, 1), ACTS_ON_SEND);
        let eof = raw.recv_eof.expect("set");
        assert_eq!(eof(&params, &mut state, core::ptr::null_mut(), 5), 0);
    }
}

#[test]
fn messages_are_cut_at_character_boundaries() {
    let long = "é".repeat(ERROR_MAX);
    let e = ParamError::new(&long);
    assert_eq!(e.as_str().len(), ERROR_MAX);
    let odd = std::format!("x{long}");
    assert_eq!(ParamError::new(&odd).as_str().len(), ERROR_MAX - 1);
    let mut buf = [0u8; 4];
    // SAFETY: buf has 4 bytes.
    let n = unsafe { report("xéé", buf.as_mut_ptr(), 4) };
    assert_eq!(&buf[..n], "xé".as_bytes());
}
