//! Tests of the filter analysis on a small store.

use super::*;
use crate::datastore::{schema, Entry};
use std::sync::Arc;

fn store() -> ModuleMap {
    let mut m = ModuleMap::new();
    for (id, name, prio) in [
        (1, "a", 7),
        (2, "b &amp; c", 100),
        (3, "a", 100),
        (10, "x", 7),
    ] {
        let p = if prio == 100 {
            String::new()
        } else {
            format!("<priority>{prio}</priority>")
        };
        m.insert(
            id,
            Arc::from(format!(
                "<module><id>{id}</id><name>{name}</name><kind>dns-front-tag</kind>{p}</module>"
            )),
        );
    }
    m.insert(
        20,
        Arc::from(
            "<module><id>20</id><name>s</name><kind>stream-tag</kind><parameters><stream-tag><interval>500</interval><tag>TT</tag></stream-tag></parameters></module>",
        ),
    );
    m
}

const ALL: Visible = Visible {
    modules: true,
    keys: true,
};

fn reach_as(paths: &[&str], visible: Visible) -> Option<Reach> {
    let f = Filter::XPaths(paths.iter().map(|p| p.to_string()).collect());
    reach(&f, schema().expect("schema"), &store(), visible)
}

fn reach_of(paths: &[&str]) -> Option<Reach> {
    reach_as(paths, ALL)
}

#[test]
fn tops_of_understood_paths() {
    let tops = [("layer45-customization", "customizations")];
    let f = |p: &[&str]| Filter::XPaths(p.iter().map(|p| p.to_string()).collect());
    assert!(tops_within(&f(&[&format!("{C}/module[id='1']")]), &tops));
    assert!(!tops_within(
        &f(&[&format!("{C}/module[id='1']"), "/ietf-netconf-acm:nacm"]),
        &tops
    ));
    assert!(!tops_within(&f(&[&format!("{C}/module[id>1]")]), &tops));
    assert!(!tops_within(&Filter::All, &tops));
}

#[test]
fn hidden_values_are_not_looked_at() {
    let key = format!("{C}/module/security[key='AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=']");
    let no_keys = Visible {
        modules: true,
        keys: false,
    };
    assert_eq!(reach_as(&[&key], ALL), ids(&[]));
    assert_eq!(reach_as(&[&key], no_keys), None);
    assert_eq!(
        reach_as(&[&format!("{C}/module[name='a']")], no_keys),
        ids(&[1, 3])
    );
    let nothing = Visible {
        modules: false,
        keys: false,
    };
    assert_eq!(reach_as(&[&format!("{C}/module[name='a']")], nothing), None);
    assert_eq!(reach_as(&[&format!("{C}/module[id='1']")], nothing), None);
    // Other top nodes need no look at the entries.
    assert_eq!(reach_as(&["/ietf-netconf-acm:nacm"], nothing), ids(&[]));
}

fn ids(v: &[u32]) -> Option<Reach> {
    Some(Reach::Entries(v.iter().copied().collect()))
}

const C: &str = "/layer45-customization:customizations";

#[test]
fn key_predicates_select_one_entry() {
    assert_eq!(reach_of(&[&format!("{C}/module[id='3']")]), ids(&[3]));
    assert_eq!(reach_of(&[&format!("{C}/module[id=3]")]), ids(&[3]));
    assert_eq!(
        reach_of(&[&format!(
            "{C}/layer45-customization:module[layer45-customization:id = \"10\"]/name"
        )]),
        ids(&[10])
    );
    // Absent, or two keys at once: nothing.
    assert_eq!(reach_of(&[&format!("{C}/module[id='4']")]), ids(&[]));
    assert_eq!(
        reach_of(&[&format!("{C}/module[id='1'][id='3']")]),
        ids(&[])
    );
    // The subtree form of <module><id>1</id><name/></module>.
    assert_eq!(
        reach_of(&[
            &format!("{C}/module[id='1']/id"),
            &format!("{C}/module[id='1']/name")
        ]),
        ids(&[1])
    );
}

#[test]
fn content_matches_scan_the_entries() {
    assert_eq!(reach_of(&[&format!("{C}/module[name='a']")]), ids(&[1, 3]));
    assert_eq!(reach_of(&[&format!("{C}/module[name='b & c']")]), ids(&[2]));
    assert_eq!(
        reach_of(&[&format!("{C}/module[priority='7']")]),
        ids(&[1, 10])
    );
    // The default is not in the stored text: not narrowed.
    assert_eq!(reach_of(&[&format!("{C}/module[priority='100']")]), None);
    assert_eq!(reach_of(&[&format!("{C}/module[activated='true']")]), None);
    assert_eq!(
        reach_of(&[&format!("{C}/module[activated='false']")]),
        ids(&[])
    );
    // A non-canonical literal: its canonical form counts too.
    assert_eq!(
        reach_of(&[&format!("{C}/module[priority='007']")]),
        ids(&[1, 10])
    );
    assert_eq!(
        reach_of(&[&format!("{C}/module[id='3'][name='a']")]),
        ids(&[3])
    );
    assert_eq!(
        reach_of(&[&format!("{C}/module[id='1'][name='x']")]),
        ids(&[])
    );
    assert_eq!(reach_of(&[&format!("{C}/module/name[.='x']")]), ids(&[10]));
    assert_eq!(
        reach_of(&[&format!("{C}/module/parameters/stream-tag[interval='500']")]),
        ids(&[20])
    );
}

#[test]
fn other_top_nodes_need_no_entry() {
    assert_eq!(reach_of(&["/ietf-netconf-acm:nacm"]), ids(&[]));
    assert_eq!(reach_of(&[]), ids(&[]));
    assert_eq!(reach_of(&[&format!("{C}/socket")]), ids(&[]));
    assert_eq!(reach_of(&[C]), Some(Reach::All));
    assert_eq!(reach_of(&[&format!("{C}/module/name")]), Some(Reach::All));
}

#[test]
fn anything_else_is_not_narrowed() {
    for p in [
        format!("{C}/module[id>'3']"),
        format!("{C}//module[id='3']"),
        format!("{C}/module[id='3']/.."),
        format!("{C}/*[id='3']"),
        format!("{C}/module[position()=1]"),
        format!("{C}/module[id='3'] | /ietf-netconf-acm:nacm"),
        format!("{C}[module/id='3']"),
        format!("{C}/module[kind='dns-front-tag']"),
        format!("{C}/module[name=7]"),
        format!("{C}/module[state/state='registered']"),
        format!("{C}/module[unknown='1']"),
        format!("{C}/module[id='x']"),
        format!("{C}/module[name='']"),
        format!("{C}/module[.='3']"),
        format!("{C}/ietf-netconf-acm:module[id='3']"),
        format!("{C}/child::module[id='3']"),
        "/customizations/module[id='3']".to_string(),
        "customizations".to_string(),
        String::new(),
    ] {
        assert_eq!(reach_of(&[&p]), None, "{p}");
    }
}

fn whole_of(paths: &[&str]) -> Option<Vec<u32>> {
    let f = Filter::XPaths(paths.iter().map(|p| p.to_string()).collect());
    whole_entries(&f, schema().expect("schema"), &store(), ALL).map(|s| s.into_iter().collect())
}

#[test]
fn whole_entries_by_leaves_under_module_are_exact() {
    assert_eq!(
        whole_of(&[&format!("{C}/module[priority='7']")]),
        Some(vec![1, 10])
    );
    assert_eq!(
        whole_of(&[&format!("{C}/module[priority='007']")]),
        Some(vec![1, 10])
    );
    assert_eq!(
        whole_of(&[&format!("{C}/module[name='b & c']")]),
        Some(vec![2])
    );
    assert_eq!(
        whole_of(&[&format!("{C}/module[name='a'][priority='7']")]),
        Some(vec![1])
    );
    assert_eq!(
        whole_of(&[&format!("{C}/module[id='3'][name='a']")]),
        Some(vec![3])
    );
    assert_eq!(
        whole_of(&[&format!("{C}/module[id='3'][name='x']")]),
        Some(vec![])
    );
    assert_eq!(whole_of(&[&format!("{C}/module[id='3']")]), Some(vec![3]));
    assert_eq!(whole_of(&[&format!("{C}/module[id='4']")]), Some(vec![]));
    assert_eq!(
        whole_of(&[&format!("{C}/module[priority='8']")]),
        Some(vec![])
    );
    assert_eq!(
        whole_of(&[&format!("{C}/module[activated='false']")]),
        Some(vec![])
    );
}

#[test]
fn whole_entries_only_where_the_text_decides() {
    let visible_but_no_keys = Visible {
        modules: true,
        keys: false,
    };
    let f = Filter::XPaths(vec![format!("{C}/module[name='a']")]);
    assert_eq!(
        whole_entries(&f, schema().expect("schema"), &store(), visible_but_no_keys),
        None
    );
    for p in [
        // Not whole entries, or not only leaves under `module`.
        format!("{C}/module[name='a']/name"),
        format!("{C}/module/name[.='a']"),
        format!("{C}/module/parameters/stream-tag[interval='500']"),
        format!("{C}/module"),
        C.to_string(),
        // The default matches, or a value the analysis does not read.
        format!("{C}/module[priority='100']"),
        format!("{C}/module[kind='dns-front-tag']"),
        "/ietf-netconf-acm:nacm".to_string(),
    ] {
        assert_eq!(whole_of(&[&p]), None, "{p}");
    }
    assert_eq!(
        whole_of(&[
            &format!("{C}/module[name='a']"),
            &format!("{C}/module[name='x']")
        ]),
        None
    );
    // A leaf name used twice in the entry's schema (`tag` under
    // parameters and elsewhere) is not decided by its text.
    let schema = schema().expect("schema");
    let twice: Vec<&str> = schema
        .leaves
        .iter()
        .filter(|l| l.parents.is_empty())
        .map(|l| l.name.as_str())
        .filter(|n| schema.leaves.iter().filter(|l| l.name == *n).count() > 1)
        .collect();
    for name in twice {
        assert_eq!(
            whole_of(&[&format!("{C}/module[{name}='1']")]),
            None,
            "{name}"
        );
    }
    // An entity the scan does not know: only libyang can tell.
    let mut odd = store();
    odd.insert(
        30,
        Arc::from("<module><id>30</id><name>&weird;</name><kind>dns-front-tag</kind></module>"),
    );
    let f = Filter::XPaths(vec![format!("{C}/module[name='a']")]);
    assert_eq!(whole_entries(&f, schema, &odd, ALL), None);
}

#[test]
fn holds_reads_escaped_text_and_skips_containers() {
    let e: Entry = Arc::from("<module><id>1</id><name>a&lt;b</name><tag><x>1</x></tag></module>");
    let holds = |e: &Entry, leaf: &str, v: &str| {
        let c = Content {
            parents: Vec::new(),
            leaf: leaf.into(),
            values: vec![v.into()],
        };
        Matcher::new(&c).holds(e)
    };
    assert!(holds(&e, "name", "a<b"));
    assert!(!holds(&e, "name", "a"));
    assert!(!holds(&e, "tag", "1"));
    // ... but the text does not decide it exactly.
    let tag = Content {
        parents: Vec::new(),
        leaf: "tag".into(),
        values: vec!["1".into()],
    };
    assert_eq!(Matcher::new(&tag).decides(&e), None);
    let name = Content {
        parents: Vec::new(),
        leaf: "name".into(),
        values: vec!["a".into()],
    };
    assert_eq!(Matcher::new(&name).decides(&e), Some(false));
    let odd: Entry = Arc::from("<module><name>&weird;</name></module>");
    assert!(holds(&odd, "name", "a"));
}
