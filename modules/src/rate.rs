//! Rate limit: every send waits `delay` milliseconds (the tap sleeps, never
//! under a lock); the bytes are not changed.

use super::SendVerdict;

pub fn send(delay_ms: u32) -> SendVerdict {
    if delay_ms == 0 {
        SendVerdict::NotMine
    } else {
        SendVerdict::Delay(delay_ms)
    }
}
