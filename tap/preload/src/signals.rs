//! Knowing whether a call runs inside a signal handler, so the tap never
//! does there what is not async-signal-safe and can wait (loading a module
//! image: a file read, allocations, `dlopen`; see `process::may_load`).
//!
//! A handler the application installs with `sigaction`, `signal` or
//! `bsd_signal` is installed through a trampoline that notes, per thread,
//! the stack position it was entered at, calls the application's handler
//! as the kernel would have (with or without `SA_SIGINFO`, same mask and
//! flags), and restores the note. `sigaction` reports the application's
//! own handler back, never the trampoline. A call is inside a handler if
//! the thread has such a note and the stack is at most
//! `HANDLER_STACK_WINDOW` below it: a handler left by `siglongjmp` leaves
//! a note behind, but the stack the program goes on with is above it (the
//! handler's frame was pushed below the code it interrupted) or, from an
//! alternate signal stack, far from it. Handlers installed otherwise (raw
//! `rt_sigaction` system calls, `sigset`, `sysv_signal`) are not seen.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use libc::{c_int, c_void, sighandler_t, siginfo_t};

/// Signal numbers are below this (Linux `_NSIG`).
const NSIG: usize = 65;

/// How far below its entry a handler's own calls may run.
const HANDLER_STACK_WINDOW: usize = 1 << 20;

/// The application's handler of each signal while the trampoline stands in
/// for it, and whether it takes `SA_SIGINFO` arguments.
static APP_HANDLER: [AtomicUsize; NSIG] = [const { AtomicUsize::new(0) }; NSIG];
static APP_SIGINFO: [AtomicBool; NSIG] = [const { AtomicBool::new(false) }; NSIG];

/// glibc's `sigaction`, found on first use.
static REAL_SIGACTION: AtomicUsize = AtomicUsize::new(0);

type SigactionFn =
    unsafe extern "C" fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int;

thread_local! {
    /// Stack position at which the innermost running handler was entered
    /// (0: none).
    static HANDLER_SP: Cell<usize> = const { Cell::new(0) };
}

/// An address in the calling function's own stack frame (a macro, so the
/// local is the caller's and not a helper's frame, which later calls reuse).
macro_rules! stack_position {
    () => {{
        let marker = 0u8;
        std::hint::black_box(std::ptr::addr_of!(marker)) as usize
    }};
}

/// Whether the calling thread is running a signal handler the application
/// installed (see the module's note). A thread that is exiting counts as
/// inside one: nothing that can wait is done there either.
pub fn in_handler() -> bool {
    let Ok(entered) = HANDLER_SP.try_with(Cell::get) else {
        return true;
    };
    if entered == 0 {
        return false;
    }
    let sp = stack_position!();
    sp <= entered && entered - sp <= HANDLER_STACK_WINDOW
}

extern "C" fn trampoline(sig: c_int, info: *mut siginfo_t, context: *mut c_void) {
    let Some(index) = usize::try_from(sig).ok().filter(|&s| s < NSIG) else {
        return;
    };
    let handler = APP_HANDLER[index].load(Ordering::Acquire);
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        return; // changed while this signal was on its way
    }
    // In this frame: the application's handler and whatever it calls run
    // below it.
    let entered = stack_position!();
    let outer = HANDLER_SP.try_with(|c| c.replace(entered)).ok();
    if APP_SIGINFO[index].load(Ordering::Acquire) {
        // SAFETY: the application installed this function with SA_SIGINFO.
        let f: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, context);
    } else {
        // SAFETY: the application installed this function as a plain
        // handler.
        let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
    if let Some(outer) = outer {
        let _ = HANDLER_SP.try_with(|c| c.set(outer));
    }
}

fn real_sigaction() -> SigactionFn {
    let mut p = REAL_SIGACTION.load(Ordering::Relaxed);
    if p == 0 {
        // SAFETY: a NUL-terminated name; RTLD_NEXT finds glibc's.
        p = unsafe { libc::dlsym(libc::RTLD_NEXT, c"sigaction".as_ptr()) } as usize;
        if p == 0 {
            std::process::abort();
        }
        REAL_SIGACTION.store(p, Ordering::Relaxed);
    }
    // SAFETY: glibc's sigaction has this signature.
    unsafe { std::mem::transmute::<usize, SigactionFn>(p) }
}

fn trampoline_address() -> sighandler_t {
    trampoline as extern "C" fn(c_int, *mut siginfo_t, *mut c_void) as sighandler_t
}

/// `sigaction` with the application's handler behind the trampoline.
///
/// # Safety
/// As `sigaction(2)`: `act` and `old` null or valid.
#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    let real = real_sigaction();
    let Some(index) = usize::try_from(sig).ok().filter(|&s| s > 0 && s < NSIG) else {
        // SAFETY: passthrough (the kernel answers EINVAL).
        return unsafe { real(sig, act, old) };
    };
    let previous = (
        APP_HANDLER[index].load(Ordering::Acquire),
        APP_SIGINFO[index].load(Ordering::Acquire),
    );
    // SAFETY: the caller's act is null or valid.
    let wanted = unsafe { act.as_ref() }.copied();
    let r = match wanted {
        Some(mut a) if a.sa_sigaction != libc::SIG_DFL && a.sa_sigaction != libc::SIG_IGN => {
            APP_SIGINFO[index].store(a.sa_flags & libc::SA_SIGINFO != 0, Ordering::Release);
            APP_HANDLER[index].store(a.sa_sigaction, Ordering::Release);
            a.sa_sigaction = trampoline_address();
            a.sa_flags |= libc::SA_SIGINFO;
            // SAFETY: a valid action; `old` as the caller gave it.
            let r = unsafe { real(sig, &a, old) };
            if r != 0 {
                APP_HANDLER[index].store(previous.0, Ordering::Release);
                APP_SIGINFO[index].store(previous.1, Ordering::Release);
            }
            r
        }
        // SAFETY: passthrough.
        _ => unsafe { real(sig, act, old) },
    };
    if r == 0 {
        // SAFETY: the caller's old is null or valid, and was just written.
        if let Some(o) = unsafe { old.as_mut() } {
            if o.sa_sigaction == trampoline_address() {
                o.sa_sigaction = previous.0;
                if !previous.1 {
                    o.sa_flags &= !libc::SA_SIGINFO;
                }
            }
        }
    }
    r
}

/// `signal` as glibc makes it (BSD semantics: the signal blocked while its
/// handler runs, interrupted calls restarted), through `sigaction`.
///
/// # Safety
/// As `signal(2)`.
#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, handler: sighandler_t) -> sighandler_t {
    // SAFETY: zeroed is a valid sigaction; the mask calls get valid sets.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = handler;
    act.sa_flags = libc::SA_RESTART;
    // SAFETY: valid sets.
    unsafe {
        libc::sigemptyset(&mut act.sa_mask);
        if libc::sigaddset(&mut act.sa_mask, sig) != 0 {
            return libc::SIG_ERR;
        }
    }
    // SAFETY: valid actions.
    if unsafe { sigaction(sig, &act, &mut old) } != 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}

/// glibc's other name for `signal`.
///
/// # Safety
/// As `signal(2)`.
#[no_mangle]
pub unsafe extern "C" fn bsd_signal(sig: c_int, handler: sighandler_t) -> sighandler_t {
    // SAFETY: the caller's arguments.
    unsafe { signal(sig, handler) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU8;

    /// What `in_handler` said inside the handler: 1 yes, 2 no.
    static SEEN: AtomicU8 = AtomicU8::new(0);

    extern "C" fn on_signal(_: c_int) {
        SEEN.store(if in_handler() { 1 } else { 2 }, Ordering::SeqCst);
    }

    #[test]
    fn a_handler_installed_with_sigaction_knows_it_runs_in_one() {
        assert!(!in_handler());
        // SAFETY: zeroed sigactions are valid; the handler is a plain one.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as extern "C" fn(c_int) as sighandler_t;
            assert_eq!(sigaction(libc::SIGUSR2, &act, std::ptr::null_mut()), 0);
            // Reported back as installed, not as the trampoline.
            let mut now: libc::sigaction = std::mem::zeroed();
            assert_eq!(sigaction(libc::SIGUSR2, std::ptr::null(), &mut now), 0);
            assert_eq!(now.sa_sigaction, act.sa_sigaction);
            assert_eq!(now.sa_flags & libc::SA_SIGINFO, 0);
            assert_eq!(libc::raise(libc::SIGUSR2), 0);
            assert_eq!(SEEN.load(Ordering::SeqCst), 1, "inside the handler");
            assert!(!in_handler(), "after it returned");
            // `signal` goes the same way and gives the old handler back.
            let old = signal(libc::SIGUSR2, libc::SIG_DFL);
            assert_eq!(old, act.sa_sigaction);
        }
    }
}
