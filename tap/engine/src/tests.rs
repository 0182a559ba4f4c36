use super::*;
use l45_tap_shm::{set_name, ModuleSlot, MAX_MODULES};

fn slot(id: u32, kind: Kind, priority: u16, extra: u32) -> ModuleSlot {
    ModuleSlot {
        flags: flags::USED | flags::ACTIVATED | extra,
        id,
        kind: kind.code(),
        priority,
        revision: 1,
        ..ModuleSlot::default()
    }
}

fn view<'a>(protocol: u8, role: Role, local: &str, remote: &str) -> SocketView<'a> {
    SocketView {
        protocol,
        role,
        local: local.parse().ok(),
        remote: remote.parse().ok(),
        thread_name: b"isc-net-0000",
        process_name: b"dig",
    }
}

fn config(slots: &[ModuleSlot]) -> Config {
    let mut table = [ModuleSlot::default(); MAX_MODULES];
    table[..slots.len()].copy_from_slice(slots);
    Config::from_slots(2, &table)
}

fn addr(family: u8, prefix: u8, a: &[u8]) -> AddrMatch {
    let mut m = AddrMatch {
        family,
        prefix,
        ..AddrMatch::default()
    };
    m.addr[..a.len()].copy_from_slice(a);
    m
}

#[test]
fn rules_match_wildcards_prefixes_ports_and_names() {
    let client = view(PROTO_UDP, Role::Client, "127.0.0.1:40000", "127.0.0.1:53");
    let mut s = slot(1, Kind::DnsFrontTag, 10, 0);
    assert!(Rule::from_slot(&s).matches(&client), "all wildcards");
    s.protocol = PROTO_TCP;
    assert!(!Rule::from_slot(&s).matches(&client));
    s.protocol = PROTO_UDP;
    s.flags |= flags::HAS_DST_PORT;
    s.destination_port = 53;
    assert!(Rule::from_slot(&s).matches(&client));
    s.destination_port = 54;
    assert!(!Rule::from_slot(&s).matches(&client));
    s.destination_port = 53;
    s.destination = addr(4, 8, &[127, 9, 9, 9]);
    assert!(Rule::from_slot(&s).matches(&client), "127/8 prefix");
    s.destination = addr(4, 32, &[127, 0, 0, 2]);
    assert!(!Rule::from_slot(&s).matches(&client));
    s.destination = addr(6, 128, &[0; 16]);
    assert!(!Rule::from_slot(&s).matches(&client), "v6 rule, v4 socket");
    s.destination = AddrMatch::default();
    assert!(set_name(&mut s.process_name, "dig"));
    assert!(Rule::from_slot(&s).matches(&client));
    assert!(set_name(&mut s.thread_name, "isc-net-0001"));
    assert!(!Rule::from_slot(&s).matches(&client));
    assert!(set_name(&mut s.thread_name, "isc-net-0000"));
    assert!(Rule::from_slot(&s).matches(&client));

    // IPv6 prefixes, and v4-mapped addresses against v4 rules.
    let v6 = view(
        PROTO_TCP,
        Role::Client,
        "[2001:db8::5]:1000",
        "[2001:db8:1::1]:443",
    );
    let mut s = slot(2, Kind::StreamTag, 1, 0);
    let mut net = [0u8; 16];
    net[..6].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1]);
    s.destination = addr(6, 48, &net);
    assert!(Rule::from_slot(&s).matches(&v6));
    s.destination = addr(6, 64, &[0x20, 0x01, 0x0d, 0xb8, 0, 2]);
    assert!(!Rule::from_slot(&s).matches(&v6));
    let mapped = view(
        PROTO_TCP,
        Role::Client,
        "[::ffff:10.0.0.1]:5",
        "[::ffff:10.1.2.3]:80",
    );
    s.destination = addr(4, 16, &[10, 1]);
    assert!(Rule::from_slot(&s).matches(&mapped));

    // A server bound to 0.0.0.0 matches a source-address rule; an unknown
    // peer never matches a destination rule.
    let server = view(PROTO_UDP, Role::Server, "0.0.0.0:53", "");
    let mut s = slot(3, Kind::DnsFrontTag, 1, flags::HAS_SRC_PORT);
    s.source_port = 53;
    s.source = addr(4, 32, &[127, 0, 0, 1]);
    assert!(Rule::from_slot(&s).matches(&server));
    s.destination = addr(4, 8, &[127]);
    assert!(!Rule::from_slot(&s).matches(&server));
}

#[test]
fn first_sight_skips_deprecated_and_sorts_by_priority() {
    let c = config(&[
        slot(5, Kind::DnsEndTag, 30, 0),
        slot(6, Kind::DnsFrontTag, 10, 0),
        slot(7, Kind::DnsMiddleTag, 20, flags::DEPRECATED),
        slot(8, Kind::DnsCompression, 10, 0),
    ]);
    let chain = Chain::first_sight(
        &c,
        &view(PROTO_UDP, Role::Client, "127.0.0.1:1", "127.0.0.1:53"),
    );
    let ids: Vec<u32> = chain.entries.iter().map(|a| a.id).collect();
    assert_eq!(ids, vec![6, 8, 5], "priority, then id; deprecated left out");
}

#[test]
fn unknown_kinds_and_bad_parameters_are_rejected_not_fatal() {
    let mut bad = slot(9, Kind::StreamTag, 1, 0);
    assert!(bad.set_params([("interval", "3")]));
    let mut unknown = slot(10, Kind::StreamTag, 1, 0);
    unknown.kind = 999;
    let c = config(&[bad, unknown, slot(11, Kind::RateLimit, 1, 0)]);
    assert_eq!(c.rejected, vec![9, 10]);
    assert_eq!(c.modules.len(), 1);
}

#[test]
fn refresh_revokes_updates_and_attaches_immediate_modules() {
    let v = view(PROTO_UDP, Role::Server, "127.0.0.1:53", "127.0.0.1:4000");
    let c1 = config(&[slot(1, Kind::DnsFrontTag, 10, 0)]);
    let mut chain = Chain::first_sight(&c1, &v);
    assert_eq!(chain.ids()[..2], [1, 0]);

    // A new module without immediate attach does not join live sockets.
    let c2 = config(&[
        slot(1, Kind::DnsFrontTag, 10, 0),
        slot(2, Kind::DnsCompression, 20, 0),
    ]);
    assert!(chain.refresh(&c2, &v).is_empty());
    assert_eq!(chain.ids()[..2], [1, 0]);

    // With immediate attach it does; deprecated immediate modules do not.
    let c3 = config(&[
        slot(1, Kind::DnsFrontTag, 10, 0),
        slot(2, Kind::DnsCompression, 20, flags::IMMEDIATE),
        slot(3, Kind::DnsEndTag, 20, flags::IMMEDIATE | flags::DEPRECATED),
    ]);
    let change = chain.refresh(&c3, &v);
    assert_eq!(change.added, vec![(1, 2)]);
    assert_eq!(chain.ids()[..3], [1, 2, 0]);

    // Priority change reorders; deactivation is kept per entry.
    let mut raised = slot(2, Kind::DnsCompression, 5, flags::IMMEDIATE);
    raised.revision = 2;
    let mut off = slot(1, Kind::DnsFrontTag, 10, 0);
    off.flags &= !flags::ACTIVATED;
    let c4 = config(&[off, raised]);
    assert!(chain.refresh(&c4, &v).is_empty());
    assert_eq!(chain.ids()[..2], [2, 1]);
    assert!(!chain.entries[1].activated);

    // Revoke: gone from the table, gone from the chain.
    let c5 = config(&[ModuleSlot::default(), raised]);
    let change = chain.refresh(&c5, &v);
    assert_eq!(change.removed, vec![(0, 1)]);
    assert_eq!(chain.ids()[..2], [2, 0]);
}

const QUERY: &[u8] = &[
    0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1,
];

#[test]
fn rotation_front_tag_to_compression_never_fails_a_query() {
    // Figure 5.3: M2 (compression) deployed at lower precedence with
    // immediate attach on both ends, raised on the receiver first, then on
    // the sender; then M1 (front tag) revoked. Every query on the way is
    // answered with the original bytes on the server.
    let front = slot(1, Kind::DnsFrontTag, 10, 0);
    let comp = |prio| slot(2, Kind::DnsCompression, prio, flags::IMMEDIATE);
    let client_view = view(PROTO_UDP, Role::Client, "127.0.0.1:4000", "127.0.0.1:53");
    let server_view = view(PROTO_UDP, Role::Server, "127.0.0.1:53", "127.0.0.1:4000");
    let steps: [(Vec<ModuleSlot>, Vec<ModuleSlot>); 5] = [
        (vec![front], vec![front]),
        (vec![front, comp(20)], vec![front, comp(20)]),
        (vec![front, comp(20)], vec![front, comp(5)]), // receiver first
        (vec![front, comp(5)], vec![front, comp(5)]),  // then sender
        (vec![comp(5)], vec![comp(5)]),                // old module revoked
    ];
    let mut client = Chain::default();
    let mut server = Chain::default();
    for (n, (c, s)) in steps.iter().enumerate() {
        let mut cc = config(c);
        let mut sc = config(s);
        cc.generation = n as u64;
        sc.generation = n as u64;
        if n == 0 {
            client = Chain::first_sight(&cc, &client_view);
            server = Chain::first_sight(&sc, &server_view);
        } else {
            client.refresh(&cc, &client_view);
            server.refresh(&sc, &server_view);
        }
        let mut wire = Vec::new();
        let sent = match client.send(&client_view.ctx(), QUERY, &mut wire) {
            SendOutcome::Customized { len, .. } => wire[..len].to_vec(),
            SendOutcome::Original => QUERY.to_vec(),
            SendOutcome::Drop { .. } => panic!("step {n}: client dropped"),
        };
        let mut out = Vec::new();
        let got = match server.recv(&server_view.ctx(), &sent, &mut out) {
            RecvOutcome::Customized { len, .. } => out[..len].to_vec(),
            RecvOutcome::Original => sent.clone(),
            RecvOutcome::Drop { .. } => panic!("step {n}: server dropped {sent:?}"),
        };
        assert_eq!(got, QUERY, "step {n}");
    }
    // Sender switched before the receiver would have failed: the server
    // still requires the front tag and does not know compression yet.
    let mut server = Chain::first_sight(&config(&[front]), &server_view);
    let mut client = Chain::first_sight(&config(&[comp(5)]), &client_view);
    let mut wire = Vec::new();
    let SendOutcome::Customized { len, .. } = client.send(&client_view.ctx(), QUERY, &mut wire)
    else {
        panic!()
    };
    let mut out = Vec::new();
    assert_eq!(
        server.recv(&server_view.ctx(), &wire[..len], &mut out),
        RecvOutcome::Drop { by: 0 }
    );
}

#[test]
fn deactivated_modules_pass_through_and_rate_limit_delays() {
    let mut rate = slot(1, Kind::RateLimit, 1, 0);
    assert!(rate.set_params([("delay", "250")]));
    let v = view(PROTO_TCP, Role::Client, "127.0.0.1:4000", "127.0.0.1:80");
    let mut chain = Chain::first_sight(&config(&[rate]), &v);
    assert_eq!(chain.send_delay(), Some((250, 0)));
    let mut out = Vec::new();
    assert_eq!(
        chain.send(&v.ctx(), b"GET /", &mut out),
        SendOutcome::Original
    );
    rate.flags &= !flags::ACTIVATED;
    chain.refresh(&config(&[rate]), &v);
    assert_eq!(chain.send_delay(), None);
    assert_eq!(chain.ids()[0], 1, "still attached");
}

#[test]
fn needs_asks_only_for_the_facts_a_candidate_rule_looks_at() {
    assert_eq!(
        config(&[]).needs(PROTO_UDP, b"dig"),
        None,
        "nothing configured"
    );

    let mut client = slot(1, Kind::DnsFrontTag, 10, flags::HAS_DST_PORT);
    client.protocol = PROTO_UDP;
    client.destination_port = 53;
    set_name(&mut client.process_name, "dig");
    let mut server = slot(2, Kind::DnsFrontTag, 10, flags::HAS_SRC_PORT);
    server.protocol = PROTO_UDP;
    server.source_port = 53;
    set_name(&mut server.process_name, "dnsmasq");
    let c = config(&[client, server]);
    let remote_only = Needs {
        remote: true,
        ..Needs::default()
    };
    assert_eq!(c.needs(PROTO_UDP, b"dig"), Some(remote_only));
    assert_eq!(
        c.needs(PROTO_UDP, b"dnsmasq"),
        Some(Needs {
            local: true,
            ..Needs::default()
        })
    );
    assert_eq!(c.needs(PROTO_TCP, b"dig"), None, "no TCP rule");
    assert_eq!(c.needs(PROTO_UDP, b"curl"), None, "no rule names curl");

    // A thread-name rule for any process; a deprecated module attaches no
    // new socket, so its rule costs nothing.
    let mut by_thread = slot(3, Kind::AppIdTag, 10, 0);
    set_name(&mut by_thread.thread_name, "worker");
    let mut gone = slot(4, Kind::DnsFrontTag, 10, flags::DEPRECATED);
    gone.source = addr(4, 8, &[10, 0, 0, 0]);
    let c = config(&[client, by_thread, gone]);
    assert_eq!(
        c.needs(PROTO_TCP, b"curl"),
        Some(Needs {
            thread_name: true,
            ..Needs::default()
        })
    );
    assert_eq!(
        c.needs(PROTO_UDP, b"dig"),
        Some(Needs {
            remote: true,
            thread_name: true,
            ..Needs::default()
        })
    );
}

#[test]
fn first_sight_among_candidates_equals_first_sight() {
    let mut other_process = slot(20, Kind::DnsFrontTag, 10, 0);
    other_process.process_name[..7].copy_from_slice(b"dnsmasq");
    let mut tcp_only = slot(21, Kind::StreamTag, 5, 0);
    tcp_only.protocol = PROTO_TCP;
    assert!(tcp_only.set_params([("interval", "1000")]));
    let mut this_process = slot(22, Kind::DnsEndTag, 30, 0);
    this_process.process_name[..3].copy_from_slice(b"dig");
    let c = config(&[
        other_process,
        tcp_only,
        slot(23, Kind::DnsMiddleTag, 20, flags::DEPRECATED),
        this_process,
        slot(24, Kind::DnsCompression, 10, 0),
    ]);
    let mut v = view(PROTO_UDP, Role::Client, "127.0.0.1:1", "127.0.0.1:53");
    v.process_name = b"dig";
    let candidates = c.candidates(PROTO_UDP, b"dig");
    let ids_of = |ch: &Chain| ch.entries.iter().map(|a| a.id).collect::<Vec<u32>>();
    let among = Chain::first_sight_among(&c, &candidates, &v);
    assert_eq!(ids_of(&among), ids_of(&Chain::first_sight(&c, &v)));
    assert_eq!(ids_of(&among), vec![24, 22]);
    // Other process, other protocol, deprecated: not even looked at.
    assert_eq!(candidates.len(), 2);
}

#[test]
fn peer_port_filter_agrees_with_matching() {
    let port_rule = |id, port: Option<u16>| {
        let mut s = slot(id, Kind::DnsFrontTag, 10, 0);
        s.protocol = PROTO_UDP;
        if let Some(p) = port {
            s.flags |= flags::HAS_DST_PORT;
            s.destination_port = p;
        }
        s
    };
    let c = config(&[port_rule(1, Some(53)), port_rule(2, Some(5353))]);
    let candidates = c.candidates(PROTO_UDP, b"dig");
    let f = c.peer_port_filter(&candidates).expect("port rules only");
    for port in [53u16, 5353, 54, 0, 65535] {
        let remote = format!("127.0.0.1:{port}");
        let mut v = view(PROTO_UDP, Role::Client, "", &remote);
        v.local = None;
        assert_eq!(
            f.attaches(port),
            c.any_attaches(&candidates, &v),
            "port {port}"
        );
    }
    assert!(!f.attaches(54) && f.attaches(5353));
    // A wildcard port attaches everything; no candidates attach nothing.
    let any = config(&[port_rule(3, None)]);
    let f = any
        .peer_port_filter(&any.candidates(PROTO_UDP, b"dig"))
        .expect("filter");
    assert!(f.attaches(9));
    let none = config(&[]);
    let f = none.peer_port_filter(&[]).expect("filter");
    assert!(!f.attaches(53));
    // Rules looking at anything else than the peer's port: no filter.
    let mut by_addr = port_rule(4, Some(53));
    by_addr.destination = addr(4, 8, &[127, 0, 0, 0]);
    let mut by_thread = port_rule(5, Some(53));
    set_name(&mut by_thread.thread_name, "isc-net-0000");
    let mut by_source = port_rule(6, None);
    by_source.flags |= flags::HAS_SRC_PORT;
    by_source.source_port = 4000;
    for s in [by_addr, by_thread, by_source] {
        let c = config(&[port_rule(1, Some(53)), s]);
        assert_eq!(c.peer_port_filter(&c.candidates(PROTO_UDP, b"dig")), None);
    }
    let many: Vec<ModuleSlot> = (1..=PEER_FILTER_MAX as u32 + 1)
        .map(|i| port_rule(i, Some(53)))
        .collect();
    let c = config(&many);
    assert_eq!(c.peer_port_filter(&c.candidates(PROTO_UDP, b"dig")), None);
}

#[test]
fn a_chain_is_a_splice_only_with_one_activated_insertion() {
    let client = view(PROTO_UDP, Role::Client, "127.0.0.1:4000", "127.0.0.1:53");
    let server = view(PROTO_UDP, Role::Server, "127.0.0.1:53", "127.0.0.1:4000");
    let front = slot(1, Kind::DnsFrontTag, 10, 0);
    let comp = slot(2, Kind::DnsCompression, 20, 0);
    let end = slot(3, Kind::DnsEndTag, 10, 0);
    let mut off = comp;
    off.flags &= !flags::ACTIVATED;
    for v in [&client, &server] {
        let chain = Chain::first_sight(&config(&[front]), v);
        let (sp, by) = chain.splice(v.role).expect("front tag alone");
        assert_eq!((sp.at, sp.bytes, by), (0, &b"XTAGXdig"[..], 0));
        // A deactivated module passes everything: still one splice, and
        // the index is the deciding module's.
        let chain = Chain::first_sight(&config(&[off, front]), v);
        assert_eq!(chain.entries.len(), 2);
        let by = chain.splice(v.role).map(|(_, by)| by);
        assert_eq!(chain.entries[by.expect("one activated")].id, 1);
        // Two activated modules: the second is tried when the first says
        // not mine, which one splice cannot do.
        let chain = Chain::first_sight(&config(&[front, comp]), v);
        assert_eq!(chain.entries.len(), 2);
        assert!(chain.splice(v.role).is_none());
        // Not an insertion.
        let chain = Chain::first_sight(&config(&[end]), v);
        assert!(chain.splice(v.role).is_none());
    }
    assert!(Chain::default().splice(Role::Client).is_none());
}

/// A module of a kind from an image (kind code 0) on UDP port `port`.
fn image_slot(id: u32, port: u16) -> ModuleSlot {
    ModuleSlot {
        flags: flags::USED | flags::ACTIVATED | flags::HAS_DST_PORT,
        id,
        kind: 0,
        priority: 5,
        revision: 1,
        protocol: PROTO_UDP,
        destination_port: port,
        ..ModuleSlot::default()
    }
}

#[test]
fn a_kind_not_at_hand_is_deferred_until_a_socket_meets_it() {
    let table = [slot(1, Kind::DnsEndTag, 10, 0), image_slot(2, 7000)];
    let parse = |loaded: Option<Kind>| {
        Config::from_used_deferring(4, table.iter().enumerate(), |i| {
            assert_eq!(i, 1, "only the image's slot is asked for");
            loaded
        })
    };
    let c = parse(None);
    assert_eq!((c.modules.len(), c.deferred.len()), (1, 1));
    assert!(c.rejected.is_empty(), "deferred is not rejected");
    // Its rule counts for what first sight looks up and for the filter.
    assert_eq!(
        c.needs(PROTO_UDP, b"dig").map(|n| n.remote),
        Some(true),
        "the deferred rule looks at the peer's port"
    );
    assert_eq!(
        c.needs(PROTO_TCP, b"dig"),
        Some(Needs::default()),
        "TCP: only the built-in rule (any protocol, no facts)"
    );
    let candidates = c.candidates(PROTO_UDP, b"dig");
    let deferred = c.deferred_candidates(PROTO_UDP, b"dig");
    assert_eq!(deferred, vec![0]);
    assert!(c.deferred_candidates(PROTO_TCP, b"dig").is_empty());
    let f = c
        .peer_port_filter_with(&[], &deferred)
        .expect("port rule only");
    assert!(f.attaches(7000) && !f.attaches(53));
    // A socket to another port does not meet it; one to 7000 does.
    let other = view(PROTO_UDP, Role::Client, "127.0.0.1:4000", "127.0.0.1:53");
    let meets = view(PROTO_UDP, Role::Client, "127.0.0.1:4000", "127.0.0.1:7000");
    assert!(c.deferred_at_first_sight(&deferred, &other).is_none());
    assert_eq!(
        c.deferred_at_first_sight(&deferred, &meets).map(|d| d.id),
        Some(2)
    );
    assert!(c.any_attaches_with(&[], &deferred, &meets));
    assert!(!c.any_attaches_with(&[], &deferred, &other));
    let chain = Chain::first_sight_among(&c, &candidates, &other);
    assert_eq!(chain.ids()[..2], [1, 0]);
    // Resolved: a module like any other, no longer deferred.
    let r = c.resolve(1, &table[1], Some(Kind::DnsFrontTag));
    assert!(r.deferred.is_empty() && r.rejected.is_empty());
    let chain = Chain::first_sight(&r, &meets);
    assert_eq!(chain.ids()[..3], [2, 1, 0], "priority 5 first");
    // Not loadable: rejected like an unknown kind.
    let r = c.resolve(1, &table[1], None);
    assert!(r.deferred.is_empty());
    assert_eq!(r.rejected, vec![2]);
    // A kind at hand at parse time is resolved right away.
    let c = parse(Some(Kind::DnsFrontTag));
    assert!(c.deferred.is_empty());
    assert_eq!(c.modules.len(), 2);
}

#[test]
fn a_refresh_needs_a_deferred_module_an_immediate_rule_would_attach() {
    let mut immediate = image_slot(2, 7000);
    immediate.flags |= flags::IMMEDIATE;
    let c = Config::from_used_deferring(6, [(0, &immediate)], |_| None);
    let meets = view(PROTO_UDP, Role::Client, "127.0.0.1:4000", "127.0.0.1:7000");
    let other = view(PROTO_UDP, Role::Client, "127.0.0.1:4000", "127.0.0.1:53");
    let chain = Chain::default();
    assert_eq!(c.deferred_at_refresh(&chain, &meets).map(|d| d.id), Some(2));
    assert!(c.deferred_at_refresh(&chain, &other).is_none());
    let plain = Config::from_used_deferring(6, [(0, &image_slot(2, 7000))], |_| None);
    assert!(
        plain.deferred_at_refresh(&chain, &meets).is_none(),
        "new sockets only"
    );
}
