//! A socket's epoll registrations: kept so that bytes the tap holds for a
//! stream socket can be reported as readiness (`held`).

use libc::c_int;

/// (epoll fd, events, data) of each registration. Nearly every socket is in
/// at most one epoll set, so the first lives inline: registering a new
/// socket allocates nothing.
#[derive(Debug, Default)]
pub struct EpollRegistrations {
    first: Option<(c_int, u32, u64)>,
    more: Vec<(c_int, u32, u64)>,
}

impl EpollRegistrations {
    /// Records (or with `event` None, drops) the registration in `epfd`.
    pub fn set(&mut self, epfd: c_int, event: Option<(u32, u64)>) {
        if self.first.is_some_and(|(e, _, _)| e == epfd) {
            self.first = None;
        }
        if !self.more.is_empty() {
            self.more.retain(|&(e, _, _)| e != epfd);
        }
        if let Some((events, data)) = event {
            if self.first.is_none() {
                self.first = Some((epfd, events, data));
            } else {
                self.more.push((epfd, events, data));
            }
        }
    }

    /// Forgets every registration (the socket is gone).
    pub fn clear(&mut self) {
        self.first = None;
        self.more.clear();
    }

    pub fn iter(&self) -> impl Iterator<Item = &(c_int, u32, u64)> {
        self.first.iter().chain(self.more.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoll_registrations_keep_one_entry_per_set() {
        let mut r = EpollRegistrations::default();
        r.set(10, Some((1, 100)));
        r.set(11, Some((1, 101)));
        r.set(10, Some((5, 102))); // modify: replaces, does not add
        let mut all: Vec<_> = r.iter().copied().collect();
        all.sort();
        assert_eq!(all, vec![(10, 5, 102), (11, 1, 101)]);
        r.set(11, None);
        r.set(10, None);
        assert_eq!(r.iter().count(), 0);
    }
}
