//! The NETCONF stream's replay log (RFC 5277 3.2, RFC 8639 2.4.2.1): the
//! most recent notifications, bounded by count and bytes (the oldest go
//! first), kept in memory for replay and appended to `notifications.log`
//! in the state directory so they survive a restart.
//!
//! File format, one record a line: `seq TAB unix-ms TAB module TAB name
//! TAB content TAB check`, where content is the notification's XML with
//! `\`, TAB and newline escaped and check is the FNV-1a hash (hex) of
//! everything before it. The first line is `created TAB unix-ms`, the
//! log's creation time. A line that does not check out (a write cut short
//! by a crash, a damaged disk block) is dropped with a warning; every
//! record before and after it is kept, and the file is rewritten without
//! it.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A notification of the NETCONF stream: content XML and event time.
#[derive(Debug, Clone)]
pub struct Event {
    /// Its place in the stream (the replay log numbers every event).
    pub seq: u64,
    pub time: SystemTime,
    pub xml: String,
    /// The YANG module and name of the notification (for NACM, RFC 8341
    /// 3.4.6); owned when read back from the replay log.
    pub module: Cow<'static, str>,
    pub name: Cow<'static, str>,
}

/// How much history the log keeps.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    pub max_events: usize,
    pub max_bytes: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_events: 10_000,
            max_bytes: 8 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("notification log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The replay log. Without a file (unit tests) it is memory only.
pub struct NotificationLog {
    path: Option<PathBuf>,
    file: Option<File>,
    limits: LogLimits,
    recent: VecDeque<Event>,
    /// Bytes of the records in `recent` (their file lines).
    recent_bytes: usize,
    /// Records in the file (kept or already dropped from `recent`).
    file_records: usize,
    file_bytes: usize,
    created: SystemTime,
    /// The newest dropped record's time (RFC 8639 replay-log-aged-time).
    aged: Option<SystemTime>,
    next_seq: u64,
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn from_unix_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '\\' => '\\',
            't' => '\t',
            'n' => '\n',
            'r' => '\r',
            _ => return None,
        });
    }
    Some(out)
}

/// A record's line (with its newline).
fn record_line(e: &Event) -> String {
    let body = format!(
        "{}\t{}\t{}\t{}\t{}",
        e.seq,
        unix_ms(e.time),
        e.module,
        e.name,
        escape(&e.xml)
    );
    format!("{body}\t{:016x}\n", fnv1a(body.as_bytes()))
}

fn header_line(created: SystemTime) -> String {
    format!("created\t{}\n", unix_ms(created))
}

/// Parses a record line (without its newline); `None` when it does not
/// check out.
fn parse_record(line: &str) -> Option<Event> {
    let (body, check) = line.rsplit_once('\t')?;
    if u64::from_str_radix(check, 16).ok()? != fnv1a(body.as_bytes()) {
        return None;
    }
    let mut f = body.splitn(5, '\t');
    let seq = f.next()?.parse().ok()?;
    let time = from_unix_ms(f.next()?.parse().ok()?);
    let module = f.next()?.to_string();
    let name = f.next()?.to_string();
    let xml = unescape(f.next()?)?;
    Some(Event {
        seq,
        time,
        module: Cow::Owned(module),
        name: Cow::Owned(name),
        xml,
    })
}

impl NotificationLog {
    /// A log kept in memory only.
    pub fn in_memory(limits: LogLimits) -> NotificationLog {
        NotificationLog {
            path: None,
            file: None,
            limits,
            recent: VecDeque::new(),
            recent_bytes: 0,
            file_records: 0,
            file_bytes: 0,
            created: SystemTime::now(),
            aged: None,
            next_seq: 1,
        }
    }

    /// Opens (or creates, owner-only) the log at `path`, keeping what it
    /// holds. Damaged lines are dropped with a warning.
    pub fn open(path: &Path, limits: LogLimits) -> Result<NotificationLog, LogError> {
        let io = |source| LogError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut log = NotificationLog {
            path: Some(path.to_path_buf()),
            ..NotificationLog::in_memory(limits)
        };
        let text = match std::fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        let mut damaged = 0usize;
        if let Some(bytes) = text {
            let text = String::from_utf8_lossy(&bytes);
            let complete = text.ends_with('\n');
            let mut lines: Vec<&str> = text.split('\n').collect();
            // The piece after the last newline: empty, or a record cut short.
            if let Some(tail) = lines.pop() {
                if !tail.is_empty() {
                    damaged += 1;
                }
            }
            let mut header_seen = false;
            for line in lines {
                if let Some(ms) = line.strip_prefix("created\t") {
                    if let Ok(ms) = ms.parse() {
                        log.created = from_unix_ms(ms);
                        header_seen = true;
                        continue;
                    }
                }
                match parse_record(line) {
                    Some(e) if e.seq >= log.next_seq => {
                        log.next_seq = e.seq + 1;
                        log.keep(e, line.len() + 1);
                    }
                    _ => damaged += 1,
                }
            }
            if !header_seen {
                damaged += 1;
            }
            if damaged > 0 {
                tracing::warn!(
                    path = %path.display(),
                    damaged,
                    kept = log.recent.len(),
                    cut_short = !complete,
                    "notification log had damaged lines; they are dropped, the rest is kept"
                );
            }
        }
        // Rewriting also creates a missing file with its header.
        log.rewrite().map_err(io)?;
        Ok(log)
    }

    /// Keeps `e` in memory, dropping the oldest beyond the limits.
    fn keep(&mut self, e: Event, line_bytes: usize) {
        self.recent_bytes += line_bytes;
        self.recent.push_back(e);
        self.file_records += 1;
        self.file_bytes += line_bytes;
        while self.recent.len() > self.limits.max_events
            || (self.recent_bytes > self.limits.max_bytes && self.recent.len() > 1)
        {
            if let Some(old) = self.recent.pop_front() {
                self.recent_bytes = self.recent_bytes.saturating_sub(record_line(&old).len());
                self.aged = Some(old.time);
            }
        }
    }

    /// Writes the kept records to a new file (owner-only) that replaces
    /// the old one.
    fn rewrite(&mut self) -> std::io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let mut text = header_line(self.created);
        for e in &self.recent {
            text.push_str(&record_line(e));
        }
        crate::datastore::write_atomically(&path, text.as_bytes())?;
        self.file = Some(std::fs::OpenOptions::new().append(true).open(&path)?);
        self.file_records = self.recent.len();
        self.file_bytes = text.len();
        Ok(())
    }

    /// Gives `e` the next sequence number, keeps it and appends it to the
    /// file. A write failure is logged; the notification still goes out.
    pub fn append(&mut self, e: &mut Event) {
        e.seq = self.next_seq;
        self.next_seq += 1;
        let line = record_line(e);
        if let Some(f) = self.file.as_mut() {
            if let Err(err) = f.write_all(line.as_bytes()) {
                tracing::warn!(error = %err, "could not append to the notification log");
            }
        }
        self.keep(e.clone(), line.len());
        self.compact_if_due();
    }

    /// [`Self::append`] for a burst, in one write: records that the
    /// limits would drop at once are numbered but not written.
    pub fn append_all(&mut self, events: &mut [Event]) {
        let skip = events.len().saturating_sub(self.limits.max_events);
        let mut text = String::new();
        for (i, e) in events.iter_mut().enumerate() {
            e.seq = self.next_seq;
            self.next_seq += 1;
            if i < skip {
                self.aged = Some(e.time);
                continue;
            }
            let line = record_line(e);
            text.push_str(&line);
            self.keep(e.clone(), line.len());
        }
        if let Some(f) = self.file.as_mut() {
            if let Err(err) = f.write_all(text.as_bytes()) {
                tracing::warn!(error = %err, "could not append to the notification log");
            }
        }
        self.compact_if_due();
    }

    fn compact_if_due(&mut self) {
        // The file holds dropped records too: rewrite it once it holds
        // twice what is kept, so appends stay amortised O(1).
        if self.file_records > 2 * self.limits.max_events.max(1)
            || self.file_bytes > 2 * self.limits.max_bytes.max(1)
        {
            if let Err(err) = self.rewrite() {
                tracing::warn!(error = %err, "could not compact the notification log");
            }
        }
    }

    /// The kept records with `start <= time` (and `time <= stop`), oldest
    /// first.
    pub fn replay(&self, start: SystemTime, stop: Option<SystemTime>) -> Vec<Event> {
        self.recent
            .iter()
            .filter(|e| e.time >= start && stop.is_none_or(|s| e.time <= s))
            .cloned()
            .collect()
    }

    pub fn max_events(&self) -> usize {
        self.limits.max_events
    }

    pub fn created(&self) -> SystemTime {
        self.created
    }

    /// When the newest record dropped for the limits was emitted.
    pub fn aged(&self) -> Option<SystemTime> {
        self.aged
    }

    pub fn len(&self) -> usize {
        self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn event(xml: &str) -> Event {
        Event {
            seq: 0,
            time: SystemTime::now(),
            xml: xml.into(),
            module: Cow::Borrowed("layer45-customization"),
            name: Cow::Borrowed("module-revoked"),
        }
    }

    #[test]
    fn survives_restart_owner_only_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notifications.log");
        let limits = LogLimits {
            max_events: 3,
            max_bytes: 1 << 20,
        };
        let mut log = NotificationLog::open(&path, limits).unwrap();
        for i in 0..10 {
            log.append(&mut event(&format!("<e>{i}\t\\\n</e>")));
        }
        assert_eq!(log.len(), 3);
        assert!(log.aged().is_some());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let created = log.created();
        drop(log);
        let log = NotificationLog::open(&path, limits).unwrap();
        let kept: Vec<String> = log
            .replay(SystemTime::UNIX_EPOCH, None)
            .into_iter()
            .map(|e| e.xml)
            .collect();
        assert_eq!(kept, ["<e>7\t\\\n</e>", "<e>8\t\\\n</e>", "<e>9\t\\\n</e>"]);
        assert_eq!(unix_ms(log.created()), unix_ms(created));
        assert_eq!(log.next_seq, 11);
    }

    #[test]
    fn a_damaged_tail_loses_nothing_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notifications.log");
        let mut log = NotificationLog::open(&path, LogLimits::default()).unwrap();
        for i in 0..3 {
            log.append(&mut event(&format!("<e>{i}</e>")));
        }
        drop(log);
        // A record cut short, and one whose bytes changed.
        let mut text = std::fs::read_to_string(&path).unwrap();
        let last = record_line(&Event {
            seq: 4,
            ..event("<e>3</e>")
        });
        text.push_str(&last.replace("<e>3", "<e>X"));
        text.push_str("5\t123\tlayer45");
        std::fs::write(&path, text).unwrap();
        let mut log = NotificationLog::open(&path, LogLimits::default()).unwrap();
        assert_eq!(log.len(), 3);
        log.append(&mut event("<e>after</e>"));
        drop(log);
        let log = NotificationLog::open(&path, LogLimits::default()).unwrap();
        let kept: Vec<String> = log
            .replay(SystemTime::UNIX_EPOCH, None)
            .into_iter()
            .map(|e| e.xml)
            .collect();
        assert_eq!(kept, ["<e>0</e>", "<e>1</e>", "<e>2</e>", "<e>after</e>"]);
    }
}
