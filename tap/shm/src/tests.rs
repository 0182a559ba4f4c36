//! Tests of the control area: the agent writer and process reader in one
//! process, with what a hostile writer can do to the shared parts.

use super::*;
use std::os::unix::fs::PermissionsExt;

fn slot(id: u32) -> ModuleSlot {
    let mut s = ModuleSlot {
        flags: flags::USED | flags::ACTIVATED,
        id,
        kind: 1,
        priority: 10,
        ..ModuleSlot::default()
    };
    assert!(s.set_params([("tag", "XTAGXdig")]));
    s
}

#[test]
fn writer_publishes_and_reader_sees_generations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tap");
    let w = ShmWriter::create(&path).unwrap();
    let r = ShmReader::open(&path).unwrap();
    let g0 = r.generation();
    assert_eq!(g0 % 2, 0);
    let mut table = [ModuleSlot::default(); MAX_MODULES];
    table[3] = slot(42);
    w.publish(&table);
    let (g1, snap) = r.snapshot().unwrap();
    assert!(g1 > g0);
    assert_eq!(snap[3], table[3]);
    assert_eq!(snap.iter().filter(|s| s.used()).count(), 1);
    // What a tapped process copies: the used slot alone, with its index.
    assert_eq!(r.snapshot_used(), Some((g1, vec![(3, table[3])])));
    assert_eq!(
        snap[3].param_pairs().collect::<Vec<_>>(),
        vec![("tag", "XTAGXdig")]
    );
    assert_eq!(w.stats(3).unwrap().id.load(Ordering::Relaxed), 42);
    // A process's counters reach the agent.
    r.stats(3)
        .unwrap()
        .bytes_sent
        .fetch_add(100, Ordering::Relaxed);
    assert_eq!(w.stats(3).unwrap().bytes_sent.load(Ordering::Relaxed), 100);
    // A second agent on the same file is refused.
    assert!(matches!(
        ShmWriter::create(&path),
        Err(ShmError::Busy { .. })
    ));
}

#[test]
fn reader_cannot_write_the_control_part() {
    // The control part is mapped read-only in processes: the kernel,
    // not convention, keeps the agent the only writer.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tap");
    let _w = ShmWriter::create(&path).unwrap();
    let r = ShmReader::open(&path).unwrap();
    let mut prot = 0;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let start = r.control.ptr.as_ptr() as usize;
    for line in maps.lines() {
        if let Some((range, rest)) = line.split_once(' ') {
            if usize::from_str_radix(range.split('-').next().unwrap(), 16).unwrap() == start {
                prot = if rest.starts_with("r--") { 1 } else { 2 };
            }
        }
    }
    assert_eq!(prot, 1, "control part must be mapped read-only");
}

/// A fresh control area with its writer and a reader (the directory
/// lives as long as the first element).
fn area() -> (tempfile::TempDir, ShmWriter, ShmReader) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tap");
    let w = ShmWriter::create(&path).unwrap();
    let r = ShmReader::open(&path).unwrap();
    (dir, w, r)
}

#[test]
fn sockets_are_claimed_listed_and_reaped() {
    let (_dir, w, r) = area();
    let me = std::process::id();
    let i = r.claim_socket(me).unwrap();
    let rec = SocketRecord {
        fd: 7,
        protocol: PROTO_UDP,
        modules: [42, 0, 0, 0, 0, 0, 0, 0],
        ..SocketRecord::default()
    };
    r.write_socket(i, me, &rec);
    assert_eq!(w.sockets(), vec![(me, rec)]);
    r.release_socket(i, me);
    assert!(w.sockets().is_empty());
    // A record of a pid that does not exist is not listed.
    let dead = 0x3fff_fff0;
    let j = r.claim_socket(dead).unwrap();
    r.write_socket(j, dead, &rec);
    assert!(w.sockets().is_empty());
    // A second process of the same user joins the same table.
    let path = _dir.path().join("tap");
    let other = ShmReader::open(&path).unwrap();
    let k = other.claim_socket(me).unwrap();
    assert_ne!(k, j, "slots of one table");
    other.write_socket(k, me, &rec);
    assert_eq!(w.sockets(), vec![(me, rec)]);
    assert_eq!(w.tables.count(), 1);
}

#[test]
fn socket_counts_follow_listed_records_only() {
    let (_dir, w, r) = area();
    let me = std::process::id();
    let record = |fd, modules| SocketRecord {
        fd,
        protocol: PROTO_UDP,
        modules,
        ..SocketRecord::default()
    };
    let a = r.claim_socket(me).unwrap();
    // Claimed, not written yet: neither listed nor counted.
    assert!(w.sockets().is_empty());
    assert!(w.socket_counts().is_empty());
    r.write_socket(a, me, &record(3, [42, 7, 0, 0, 0, 0, 0, 0]));
    let b = r.claim_socket(me).unwrap();
    r.write_socket(b, me, &record(4, [42, 0, 0, 0, 0, 0, 0, 0]));
    assert_eq!(w.socket_counts(), [(42, 2), (7, 1)].into());
    // A parked socket's slot: hidden, so not counted, record kept.
    r.withdraw_socket(a, me);
    assert_eq!(w.socket_counts(), [(42, 1)].into());
    assert_eq!(w.sockets().len(), 1);
    r.restore_socket(a, me);
    assert_eq!(w.socket_counts(), [(42, 2), (7, 1)].into());
    // Another process cannot hide our slot.
    r.withdraw_socket(a, me + 1);
    assert_eq!(w.sockets().len(), 2);
    // Released, or its process gone: no longer counted.
    r.release_socket(b, me);
    assert_eq!(w.socket_counts(), [(42, 1), (7, 1)].into());
    let dead = 0x3fff_fff0;
    let c = r.claim_socket(dead).unwrap();
    r.write_socket(c, dead, &record(5, [7, 0, 0, 0, 0, 0, 0, 0]));
    assert_eq!(w.socket_counts(), [(42, 1), (7, 1)].into());
}

#[test]
fn a_full_table_gives_slots_of_exited_processes_to_live_ones() {
    let (_dir, _w, r) = area();
    let me = std::process::id();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let gone = child.id();
    child.wait().unwrap();
    let mine = r.claim_socket(me).unwrap();
    let theirs: Vec<usize> = (1..MAX_SOCKETS)
        .map(|_| r.claim_socket(gone).unwrap())
        .collect();
    assert!(!theirs.contains(&mine));
    // Full: the next claim takes a slot of the exited process.
    let taken = r.claim_socket(me).unwrap();
    assert!(theirs.contains(&taken));
    // Full of live owners: no slot, and our own were kept.
    for _ in 2..MAX_SOCKETS {
        assert!(r.claim_socket(me).is_some());
    }
    assert_eq!(r.claim_socket(me), None);
}

/// Overwrites the shared segment and this user's socket table byte by
/// byte, as any local user who attaches the first, and a process of
/// this user the second, can.
fn scribble(r: &ShmReader, mut byte: impl FnMut() -> u8) {
    let base = r.shared.map.ptr.as_ptr();
    for i in 0..SHARED_LEN {
        // SAFETY: test only: in bounds of the attached segment; a
        // hostile writer's racy plain stores are the point.
        unsafe { base.add(i).write_volatile(byte()) };
    }
    let base = r.table().unwrap().base().as_ptr();
    for i in 0..TABLE_LEN {
        // SAFETY: test only: in bounds of the attached segment; a
        // hostile writer's racy plain stores are the point.
        unsafe { base.add(i).write_volatile(byte()) };
    }
}

#[test]
fn files_have_their_modes_and_the_segment_its_owner() {
    let (dir, w, _r) = area();
    let path = dir.path().join("tap");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&path), CONTROL_MODE);
    assert_eq!(mode(&lock_path(&path)), LOCK_MODE);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), CONTROL_LEN as u64);
    // SAFETY: test only; IPC_STAT fills one shmid_ds.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::shmctl(w.shared_id(), libc::IPC_STAT, &mut ds) },
        0
    );
    assert_eq!(u32::from(ds.shm_perm.mode) & 0o777, SHARED_MODE);
    assert_eq!(ds.shm_perm.uid, euid());
    assert_eq!(ds.shm_segsz, SHARED_LEN);
}

#[test]
fn garbage_in_the_shared_segment_is_survived() {
    let (_dir, w, r) = area();
    let mut table = [ModuleSlot::default(); MAX_MODULES];
    table[0] = slot(42);
    w.publish(&table);
    let me = std::process::id();
    let i = r.claim_socket(me).unwrap();
    r.write_socket(
        i,
        me,
        &SocketRecord {
            fd: 1,
            modules: [42, 0, 0, 0, 0, 0, 0, 0],
            ..SocketRecord::default()
        },
    );
    assert_eq!(w.sockets().len(), 1);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for pattern in 0..4 {
        scribble(&r, || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match pattern {
                0 => x as u8,
                1 => 0xff,
                // Every slot looks listed and odd-sequenced or even.
                2 => (x as u8) | 1,
                _ => x as u8 & 0x0f,
            }
        });
        let t = Instant::now();
        let listed = w.sockets();
        let _ = w.socket_counts();
        // A process whose table was scribbled on still claims slots.
        let _ = r.claim_socket(me);
        assert!(t.elapsed() < Duration::from_secs(5), "bounded");
        for (pid, rec) in listed {
            assert!(libc::pid_t::try_from(pid).is_ok() && rec.fd >= 0);
        }
        // The table a process reads is the agent's, untouched.
        assert_eq!(r.snapshot_used().unwrap().1, vec![(0, table[0])]);
    }
}

#[test]
fn a_socket_slot_stuck_mid_write_is_skipped_not_waited_for() {
    let (_dir, w, r) = area();
    let me = std::process::id();
    let i = r.claim_socket(me).unwrap();
    let rec = SocketRecord {
        fd: 3,
        modules: [7, 0, 0, 0, 0, 0, 0, 0],
        ..SocketRecord::default()
    };
    r.write_socket(i, me, &rec);
    assert_eq!(w.sockets().len(), 1);
    let slot = r.table().unwrap().slot(i).unwrap();
    slot.seq.store(1, Ordering::Release); // odd forever
    let t = Instant::now();
    assert!(w.sockets().is_empty());
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn forged_owners_are_bounded() {
    let (_dir, w, r) = area();
    let rec = SocketRecord {
        fd: 3,
        modules: [7, 0, 0, 0, 0, 0, 0, 0],
        ..SocketRecord::default()
    };
    // Owners no process can have, and a negative descriptor.
    for owner in [u32::MAX, 0x8000_0000, i32::MAX as u32] {
        let i = r.claim_socket(owner).unwrap();
        r.write_socket(i, owner, &rec);
    }
    let me = std::process::id();
    let j = r.claim_socket(me).unwrap();
    r.write_socket(j, me, &SocketRecord { fd: -5, ..rec });
    assert!(w.sockets().is_empty());
    r.write_socket(j, me, &rec);
    assert_eq!(w.sockets(), vec![(me, rec)]);
}

#[test]
fn an_agent_dead_mid_write_does_not_hang_readers() {
    let (_dir, w, r) = area();
    let mut table = [ModuleSlot::default(); MAX_MODULES];
    table[1] = slot(9);
    w.publish(&table);
    w.begin_write(); // and never ends it
    let t = Instant::now();
    assert_eq!(r.snapshot_used(), None);
    assert!(t.elapsed() < Duration::from_secs(1));
    // A new agent on the same file finishes the job.
    drop(w);
}

#[test]
fn readers_refuse_control_files_others_may_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tap");
    let _w = ShmWriter::create(&path).unwrap();
    // Made writable by others behind the agent's back.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert!(matches!(
        ShmReader::open(&path),
        Err(ShmError::Untrusted { .. })
    ));
    // The ownership rule on its own.
    assert!(trusted_control(0, 0o644, 1000, Some(0)).is_ok());
    assert!(trusted_control(1000, 0o644, 1000, Some(0)).is_ok());
    assert!(trusted_control(998, 0o644, 0, Some(998)).is_ok());
    assert!(trusted_control(65534, 0o644, 0, Some(0)).is_err());
    assert!(trusted_control(0, 0o664, 0, Some(0)).is_err());
    assert!(trusted_control(0, 0o646, 0, Some(0)).is_err());
}

#[test]
fn the_environment_names_the_file_only_for_unprivileged_processes() {
    let env = Some(OsString::from("/tmp/elsewhere"));
    assert_eq!(
        control_path(env.clone(), false),
        Path::new("/tmp/elsewhere")
    );
    assert_eq!(control_path(env, true), Path::new(DEFAULT_PATH));
    assert_eq!(control_path(None, false), Path::new(DEFAULT_PATH));
    assert_eq!(
        control_path(Some(OsString::new()), false),
        Path::new(DEFAULT_PATH)
    );
}

#[test]
fn the_agent_replaces_what_it_cannot_trust_at_its_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tap");
    // A loosened file (an older agent's 0666), and a symlink at the lock.
    let old = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    old.set_permissions(std::fs::Permissions::from_mode(0o666))
        .unwrap();
    let old_ino = old.metadata().unwrap().ino();
    let target = dir.path().join("target");
    std::fs::write(&target, b"keep").unwrap();
    std::os::unix::fs::symlink(&target, lock_path(&path)).unwrap();
    let w = ShmWriter::create(&path).unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_ne!(meta.ino(), old_ino, "a new file");
    assert_eq!(meta.mode() & 0o7777, CONTROL_MODE);
    assert!(std::fs::symlink_metadata(lock_path(&path))
        .unwrap()
        .is_file());
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    // Its own file is reused across restarts, with its segment.
    let (ino, id) = (meta.ino(), w.shared_id());
    let r = ShmReader::open(&path).unwrap();
    drop(w);
    let w = ShmWriter::create(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
    assert_eq!(w.shared_id(), id, "still attached by a reader");
    drop(r);
}

#[test]
fn foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tap");
    std::fs::write(&path, b"not a tap").unwrap();
    assert!(matches!(
        ShmReader::open(&path),
        Err(ShmError::Foreign { .. })
    ));
    assert!(matches!(
        ShmReader::open(&dir.path().join("missing")),
        Err(ShmError::Open { .. })
    ));
}
