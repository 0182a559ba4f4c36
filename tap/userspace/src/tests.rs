use super::*;
use l45_tap_control::MatchRules;
use l45_tap_engine::Config;
use l45_tap_shm::ShmReader;

fn module(id: u32, kind: &str) -> ModuleConfig {
    ModuleConfig {
        id,
        name: format!("m{id}"),
        kind: kind.into(),
        priority: 10,
        activated: true,
        deprecated: false,
        attach: Attach::NewSockets,
        matching: MatchRules::default(),
        parameters: BTreeMap::new(),
        key: None,
    }
}

fn commit(tap: &UserspaceTap, changes: Vec<Change>) -> Result<(), TapError> {
    let txn = Transaction { changes };
    tap.prepare(&txn)?;
    tap.apply(&txn);
    Ok(())
}

#[test]
fn committed_modules_reach_a_reader_and_prepare_failures_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tap");
    let tap = UserspaceTap::new(&path).unwrap();
    let reader = ShmReader::open(&path).unwrap();
    let mut m = module(7, "dns-front-tag");
    m.matching.destination_port = Some(53);
    m.matching.destination_address = Some("2001:db8::/32".into());
    m.matching.process_name = Some("dig".into());
    m.parameters.insert("tag".into(), "ABCD".into());
    commit(&tap, vec![Change::Register(m.clone())]).unwrap();
    let (g, slots) = reader.snapshot().unwrap();
    let config = Config::from_slots(g, &slots);
    assert_eq!(config.modules.len(), 1);
    assert_eq!(config.modules[0].id, 7);
    assert_eq!(config.modules[0].rule.destination_port, Some(53));
    assert_eq!(config.modules[0].rule.destination.prefix, 32);

    // Bad parameters, unknown kinds, bad addresses: refused, table unchanged.
    let mut bad = module(8, "stream-tag");
    bad.parameters.insert("interval".into(), "3".into());
    for (m, needle) in [
        (bad, "interval"),
        (module(9, "installed-binary"), "neither built into"),
        (
            ModuleConfig {
                matching: MatchRules {
                    source_address: Some("10.0.0.0/40".into()),
                    ..MatchRules::default()
                },
                ..module(10, "rate-limit")
            },
            "10.0.0.0/40",
        ),
    ] {
        let e = commit(&tap, vec![Change::Register(m)]).unwrap_err();
        assert!(e.to_string().contains(needle), "{e}");
    }
    assert_eq!(
        reader.snapshot().unwrap().0,
        g,
        "no generation step for refused prepares"
    );

    // Revoke empties the slot.
    commit(&tap, vec![Change::Unregister(m.id)]).unwrap();
    let (_, slots) = reader.snapshot().unwrap();
    assert!(slots.iter().all(|s| !s.used()));
}

#[test]
fn capacity_is_the_table_size() {
    let dir = tempfile::tempdir().unwrap();
    let tap = UserspaceTap::new(&dir.path().join("tap")).unwrap();
    let all: Vec<Change> = (1..=MAX_MODULES as u32)
        .map(|id| Change::Register(module(id, "rate-limit")))
        .collect();
    commit(&tap, all).unwrap();
    let e = commit(&tap, vec![Change::Register(module(999, "rate-limit"))]).unwrap_err();
    assert!(matches!(e, TapError::ResourceExhausted(_)));
    assert_eq!(tap.module_stats().len(), MAX_MODULES);
}

#[test]
fn challenge_uses_the_agents_own_key() {
    let dir = tempfile::tempdir().unwrap();
    let tap = UserspaceTap::new(&dir.path().join("tap")).unwrap();
    let key = [5u8; 32];
    let mut m = module(3, "dns-compression");
    m.key = Some(key.to_vec());
    commit(
        &tap,
        vec![
            Change::Register(m),
            Change::Register(module(4, "rate-limit")),
        ],
    )
    .unwrap();
    let nonce = [1u8; 12];
    let challenge = [2u8; 16];
    let ct = security::make_challenge(&key, 3, &nonce, &challenge).unwrap();
    let a = tap.challenge(3, &nonce, &ct).unwrap();
    assert_eq!(
        security::verify_response(&key, 3, &challenge, &a.nonce, &a.ciphertext),
        Ok(())
    );
    // Fresh nonce per answer.
    let b = tap.challenge(3, &nonce, &ct).unwrap();
    assert_ne!(a.nonce, b.nonce);
    // Wrong key on the NCO side, keyless and unknown modules.
    let wrong = security::make_challenge(&[6u8; 32], 3, &nonce, &challenge).unwrap();
    assert!(matches!(
        tap.challenge(3, &nonce, &wrong),
        Err(TapError::Refused { .. })
    ));
    assert!(matches!(
        tap.challenge(4, &nonce, &ct),
        Err(TapError::Refused { .. })
    ));
    assert_eq!(
        tap.challenge(5, &nonce, &ct),
        Err(TapError::UnknownModule(5))
    );
}

#[test]
fn keys_never_reach_the_control_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tap");
    let tap = UserspaceTap::new(&path).unwrap();
    let key: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
    let mut m = module(3, "dns-compression");
    m.key = Some(key.clone());
    commit(&tap, vec![Change::Register(m)]).unwrap();
    for p in [path.clone(), l45_tap_shm::lock_path(&path)] {
        let bytes = std::fs::read(&p).unwrap();
        for part in key.chunks(8) {
            assert!(
                !bytes.windows(8).any(|w| w == part),
                "key bytes in {}",
                p.display()
            );
        }
    }
    // A wrong-length key is still refused at prepare.
    let mut bad = module(4, "dns-compression");
    bad.key = Some(vec![1; 16]);
    assert!(commit(&tap, vec![Change::Register(bad)]).is_err());
}

fn record(fd: i32, modules: &[u32]) -> l45_tap_shm::SocketRecord {
    let mut r = l45_tap_shm::SocketRecord {
        fd,
        protocol: l45_tap_shm::PROTO_UDP,
        ..Default::default()
    };
    r.modules[..modules.len()].copy_from_slice(modules);
    r
}

#[test]
fn a_seen_socket_counts_until_it_closes_whatever_the_table_says() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tap");
    let tap = UserspaceTap::new(&path).unwrap();
    let mut m = module(7, "rate-limit");
    commit(&tap, vec![Change::Register(m.clone())]).unwrap();
    let hostile = ShmReader::open(&path).unwrap();
    let me = std::process::id();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let fd = sock.as_raw_fd();
    let i = hostile.claim_socket(me).unwrap();
    hostile.write_socket(i, me, &record(fd, &[7]));
    assert_eq!(tap.socket_counts(), [(7, 1)].into());
    // Deprecated, then its record rewritten, hidden and freed by another
    // process of its user: the socket is still open, so the module is not
    // idle.
    m.deprecated = true;
    commit(&tap, vec![Change::Update(m)]).unwrap();
    hostile.write_socket(i, me, &record(fd, &[8]));
    assert_eq!(tap.socket_counts().get(&7), Some(&1));
    hostile.withdraw_socket(i, me);
    hostile.release_socket(i, me);
    let st = &tap.module_stats()[0];
    assert_eq!((st.state, st.socket_count), (ModuleState::Deprecated, 1));
    // Closed: no longer counted, idle.
    drop(sock);
    assert_eq!(tap.module_stats()[0].socket_count, 0);
    assert!(tap.socket_counts().is_empty());
}

#[test]
fn forged_records_count_only_for_real_sockets() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tap");
    let tap = UserspaceTap::new(&path).unwrap();
    let hostile = ShmReader::open(&path).unwrap();
    let me = std::process::id();
    let file = std::fs::File::open(&path).unwrap();
    let forged = [
        (me, file.as_raw_fd()), // not a socket
        (me, 99_999),           // no such descriptor
        (0x3fff_fff0, 3),       // no such process
    ];
    for (pid, fd) in forged {
        let i = hostile.claim_socket(pid).unwrap();
        hostile.write_socket(i, pid, &record(fd, &[7, 9]));
    }
    assert!(tap.socket_counts().is_empty());
    assert!(tap.sockets().is_empty());
    // What a forger can do: name a real socket (here its own) — counted,
    // which only delays an idle announcement.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let i = hostile.claim_socket(me).unwrap();
    hostile.write_socket(i, me, &record(sock.as_raw_fd(), &[7]));
    assert_eq!(tap.socket_counts(), [(7, 1)].into());
    assert_eq!(tap.sockets().len(), 1);
}

#[test]
fn an_overwritten_statistics_slot_changes_no_state_and_is_stamped_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tap");
    let tap = UserspaceTap::new(&path).unwrap();
    let mut m = module(7, "rate-limit");
    m.deprecated = true;
    commit(&tap, vec![Change::Register(m)]).unwrap();
    let hostile = ShmReader::open(&path).unwrap();
    let slot = hostile.stats(0).unwrap();
    slot.bytes_sent.store(5, Ordering::Relaxed);
    slot.id.store(0xdead, Ordering::Relaxed);
    let st = &tap.module_stats()[0];
    assert_eq!((st.state, st.bytes_sent), (ModuleState::Deprecated, 0));
    tap.housekeeping();
    assert_eq!(slot.id.load(Ordering::Relaxed), 7);
    slot.bytes_sent.fetch_add(3, Ordering::Relaxed);
    assert_eq!(tap.module_stats()[0].bytes_sent, 3);
}
