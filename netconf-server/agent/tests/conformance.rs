//! The agent's conformance suite: every case is a folder under
//! `tests/conformance/<case>/` of numbered steps. Step `NN` sends
//! `NN-input.xml` (one `<rpc>`) and expects the reply in `NN-output.xml`;
//! `NN-tap.txt`, when present, holds the tap calls the step made (a step
//! that makes tap calls must have one), and `NN-notifications.xml` the
//! notifications subscribed sessions received during it.
//!
//! An input may start with a comment choosing its session,
//! `<!-- session: NAME user: USER -->`; sessions are opened on first use
//! (the first is session 1, user `admin`, a NACM admin). `close-session`
//! and `kill-session` end sessions as the session loop would. Inputs go
//! through the session's framing decoder (32 KiB message limit) and envelope
//! parsing. Times in replies become `TIME`.
//!
//! Every case runs twice, with the native engine and with libyang only, and
//! both runs must give byte-identical results. `L45_UPDATE_CONFORMANCE=1`
//! rewrites the expected files from the native run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use l45_agent::agent::{Agent, AgentOptions};
use l45_agent::config::edit::Engine;
use l45_agent::notify::Event;
use l45_agent::ops::After;
use l45_agent::session::decode_rpc;
use l45_agent::sessions::SessionInfo;
use l45_netconf_proto::Decoder;
use l45_tap_control::{Recorded, RecordingTap};
use tokio::sync::broadcast;

/// The agent's message limit in the suite.
const MAX_MESSAGE: usize = 32 * 1024;

/// What one step produced.
#[derive(Debug, Default, PartialEq, Eq)]
struct StepOutput {
    reply: String,
    tap: String,
    notifications: String,
}

struct Session {
    info: SessionInfo,
    events: Option<broadcast::Receiver<Event>>,
}

struct Run {
    agent: Arc<Agent>,
    tap: Arc<RecordingTap>,
    sessions: BTreeMap<String, Session>,
    _state: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

/// `<!-- session: NAME user: USER -->` at the start of an input.
fn session_header(input: &str) -> (String, String) {
    let mut name = "a".to_string();
    let mut user = "admin".to_string();
    if let Some(rest) = input.trim_start().strip_prefix("<!--") {
        if let Some((comment, _)) = rest.split_once("-->") {
            let words: Vec<&str> = comment.split_whitespace().collect();
            for pair in words.chunks(2) {
                match pair {
                    ["session:", v] => name = v.to_string(),
                    ["user:", v] => user = v.to_string(),
                    _ => {}
                }
            }
        }
    }
    (name, user)
}

/// Replaces RFC 3339 times (`2026-12-05T18:30:00Z`, with fractions or an
/// offset) by `TIME`.
fn normalize_times(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let digits = |from: usize, n: usize| -> bool {
        b.len() >= from + n && b[from..from + n].iter().all(u8::is_ascii_digit)
    };
    while i < b.len() {
        let is_time = digits(i, 4)
            && b.get(i + 4) == Some(&b'-')
            && digits(i + 5, 2)
            && b.get(i + 7) == Some(&b'-')
            && digits(i + 8, 2)
            && b.get(i + 10) == Some(&b'T')
            && digits(i + 11, 2)
            && b.get(i + 13) == Some(&b':')
            && digits(i + 14, 2)
            && b.get(i + 16) == Some(&b':')
            && digits(i + 17, 2);
        if !is_time {
            let ch = text[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        i += 19;
        if b.get(i) == Some(&b'.') {
            i += 1;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        if b.get(i) == Some(&b'Z') {
            i += 1;
        } else if matches!(b.get(i), Some(b'+' | b'-')) && digits(i + 1, 2) {
            i += 6;
        }
        out.push_str("TIME");
    }
    out
}

impl Run {
    fn new(engine: Engine) -> Run {
        let state = tempfile::tempdir().expect("state dir");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let tap = Arc::new(RecordingTap::new(Some(64), true));
        let opts = AgentOptions {
            // Small, so that a case can exceed it.
            limits: l45_netconf_proto::Limits {
                max_message: MAX_MESSAGE,
                max_chunk: MAX_MESSAGE as u64,
            },
            max_sessions: 8,
            max_sessions_per_user: 8,
            engine,
            // A directory the agent creates itself (0700), inside the
            // temporary one.
            ..AgentOptions::new(state.path().join("agent"))
        };
        let agent = Agent::new(opts, tap.clone(), runtime.handle().clone()).expect("agent");
        Run {
            agent,
            tap,
            sessions: BTreeMap::new(),
            _state: state,
            _runtime: runtime,
        }
    }

    fn step(&mut self, input: &str) -> StepOutput {
        let (name, user) = session_header(input);
        if !self.sessions.contains_key(&name) {
            let (info, _killed) = self
                .agent
                .open_session(&user, Some("192.0.2.1".into()))
                .expect("session limit");
            self.sessions
                .insert(name.clone(), Session { info, events: None });
        }
        let tap_before = self.tap.log().len();
        let session = &self.sessions[&name];
        // As the session loop does: end-of-message framing (the message
        // limit applies), then the rpc envelope, then the operation.
        let mut decoder = Decoder::new(self.agent.opts.limits);
        decoder.push(input.as_bytes());
        decoder.push(b"]]>]]>");
        let frame = match decoder.next_frame() {
            Ok(Some(frame)) => frame,
            other => panic!("step input does not frame: {other:?}"),
        };
        let (reply, after) = match decode_rpc(&self.agent, &session.info, frame) {
            Ok(rpc) => self.agent.handle(&session.info, &rpc),
            Err(reply) => (reply, After::Continue),
        };
        match after {
            After::Continue => {}
            After::Close => {
                let id = session.info.id;
                self.agent.close_session(id);
                self.sessions.remove(&name);
            }
            After::Subscribe => {
                if let Some(s) = self.sessions.get_mut(&name) {
                    s.events
                        .get_or_insert_with(|| self.agent.subscribe_events());
                }
            }
        }
        // Sessions killed by this step leave (their locks are already gone).
        let live: Vec<u32> = self
            .sessions
            .values()
            .filter(|s| *s.info.kill.borrow())
            .map(|s| s.info.id)
            .collect();
        self.sessions.retain(|_, s| !live.contains(&s.info.id));
        let tap: String = self.tap.log()[tap_before..]
            .iter()
            .map(|r| match r {
                Recorded::Prepare(t) => format!("prepare {:?}\n", t.changes),
                Recorded::Apply(t) => format!("apply {:?}\n", t.changes),
                Recorded::Abort(t) => format!("abort {:?}\n", t.changes),
                // (not the path: it is under the case's temporary directory)
                Recorded::LoadKind(k) => {
                    format!("load-kind {} {} {}\n", k.kind, k.target, k.sha256_hex)
                }
                Recorded::UnloadKind(kind) => format!("unload-kind {kind}\n"),
            })
            .collect();
        let mut notifications = String::new();
        for (name, s) in self.sessions.iter_mut() {
            if let Some(rx) = s.events.as_mut() {
                while let Ok(ev) = rx.try_recv() {
                    // As the session loop: NACM decides per event.
                    if self.agent.may_receive(&s.info.username, &ev) {
                        notifications.push_str(&format!("<!-- to {name} -->{}\n", ev.xml));
                    }
                }
            }
        }
        StepOutput {
            reply: normalize_times(&reply) + "\n",
            tap,
            notifications,
        }
    }
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

/// The numbered inputs of a case, in order.
fn steps(case: &Path) -> Vec<(String, PathBuf)> {
    let mut steps: Vec<(String, PathBuf)> = std::fs::read_dir(case)
        .expect("case dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            let n = name.strip_suffix("-input.xml")?.to_string();
            Some((n, p))
        })
        .collect();
    steps.sort();
    steps
}

fn run_case(case: &Path, engine: Engine) -> Vec<(String, StepOutput)> {
    let mut run = Run::new(engine);
    steps(case)
        .into_iter()
        .map(|(n, path)| {
            let input = std::fs::read_to_string(&path).expect("input");
            (n, run.step(&input))
        })
        .collect()
}

fn read_or_empty(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn write_or_remove(path: &Path, text: &str) {
    if text.is_empty() {
        let _ = std::fs::remove_file(path);
    } else {
        std::fs::write(path, text).expect("write expected output");
    }
}

#[test]
fn conformance() {
    let update = std::env::var_os("L45_UPDATE_CONFORMANCE").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/conformance")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 80, "only {} conformance cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        let native = run_case(case, Engine::Auto);
        let libyang = run_case(case, Engine::LibyangOnly);
        for ((n, a), (_, b)) in native.iter().zip(&libyang) {
            if a != b {
                failures.push(format!(
                    "{name}/{n}: the engines differ\n native: {a:?}\nlibyang: {b:?}"
                ));
            }
        }
        for (n, out) in &native {
            let files = [
                (format!("{n}-output.xml"), &out.reply),
                (format!("{n}-tap.txt"), &out.tap),
                (format!("{n}-notifications.xml"), &out.notifications),
            ];
            for (file, got) in files {
                let path = case.join(&file);
                if update {
                    write_or_remove(&path, got);
                } else if read_or_empty(&path) != *got {
                    failures.push(format!(
                        "{name}/{file}:\n expected: {:?}\n      got: {got:?}",
                        read_or_empty(&path)
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} conformance failures (L45_UPDATE_CONFORMANCE=1 regenerates):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn times_are_normalized() {
    assert_eq!(
        normalize_times("<t>2026-12-05T18:30:00Z</t><u>2026-12-05T18:30:00.25+01:00</u>"),
        "<t>TIME</t><u>TIME</u>"
    );
    assert_eq!(normalize_times("2026-12-05 x"), "2026-12-05 x");
}
