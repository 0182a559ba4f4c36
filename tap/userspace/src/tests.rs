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
    let (g, slots) = reader.snapshot();
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
        (module(9, "installed-binary"), "not built into"),
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
        reader.snapshot().0,
        g,
        "no generation step for refused prepares"
    );

    // Revoke empties the slot.
    commit(&tap, vec![Change::Unregister(m.id)]).unwrap();
    let (_, slots) = reader.snapshot();
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
fn challenge_uses_the_key_in_the_table() {
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
