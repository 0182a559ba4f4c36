//! NETCONF access control (RFC 8341), enforced for read, write and exec.
//!
//! Rules come from `/ietf-netconf-acm:nacm` in running, checked in order,
//! the first matching rule deciding (RFC 8341 3.4.4). Exec per RPC;
//! notifications per name (3.4.6); read and write per data node: by module,
//! and by `path` where a rule has one (then every node of a reply or an edit
//! is checked, [`Nacm::data_rules`]). The `default-deny-all` nodes of our
//! model (the module keys) need an explicit permit.

use yang3::data::{Data, DataTree};

pub const NACM_PATH: &str = "/ietf-netconf-acm:nacm";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Exec,
}

#[derive(Debug, Clone, Default)]
struct Rule {
    module: String,
    rpc: Option<String>,
    notification: Option<String>,
    path: Option<String>,
    ops: String,
    permit: bool,
}

#[derive(Debug, Clone)]
struct RuleList {
    groups: Vec<String>,
    rules: Vec<Rule>,
}

/// A snapshot of the NACM configuration.
#[derive(Debug, Clone)]
pub struct Nacm {
    enabled: bool,
    read_default: bool,
    write_default: bool,
    exec_default: bool,
    groups: Vec<(String, Vec<String>)>,
    rule_lists: Vec<RuleList>,
}

/// What a rule is matched against.
#[derive(Clone, Copy)]
enum Target<'a> {
    Rpc(&'a str),
    Notification(&'a str),
    /// A data node; with a node, `path` rules are matched by whether the
    /// rule's path covers it.
    Data(Option<&'a dyn Fn(&str) -> bool>),
}

/// What a rule search decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Permit,
    Deny,
    /// No rule matched; defaults apply.
    NoMatch,
}

impl Nacm {
    pub fn from_running(tree: &DataTree<'static>) -> Nacm {
        let mut nacm = Nacm {
            enabled: true,
            read_default: true,
            write_default: false,
            exec_default: true,
            groups: Vec::new(),
            rule_lists: Vec::new(),
        };
        let Ok(root) = tree.find_path(NACM_PATH) else {
            return nacm;
        };
        for child in root.children() {
            let v = child.value_canonical().unwrap_or_default();
            match child.schema().name() {
                "enable-nacm" => nacm.enabled = v == "true",
                "read-default" => nacm.read_default = v == "permit",
                "write-default" => nacm.write_default = v == "permit",
                "exec-default" => nacm.exec_default = v == "permit",
                "groups" => {
                    for group in child.children() {
                        let mut name = String::new();
                        let mut users = Vec::new();
                        for g in group.children() {
                            match g.schema().name() {
                                "name" => name = g.value_canonical().unwrap_or_default(),
                                "user-name" => users.push(g.value_canonical().unwrap_or_default()),
                                _ => {}
                            }
                        }
                        nacm.groups.push((name, users));
                    }
                }
                "rule-list" => {
                    let mut list = RuleList {
                        groups: Vec::new(),
                        rules: Vec::new(),
                    };
                    for item in child.children() {
                        match item.schema().name() {
                            "group" => list.groups.push(item.value_canonical().unwrap_or_default()),
                            "rule" => {
                                let mut rule = Rule {
                                    module: "*".into(),
                                    ops: "*".into(),
                                    ..Rule::default()
                                };
                                for f in item.traverse().skip(1) {
                                    let v = f.value_canonical().unwrap_or_default();
                                    match f.schema().name() {
                                        "module-name" => rule.module = v,
                                        "rpc-name" => rule.rpc = Some(v),
                                        "notification-name" => rule.notification = Some(v),
                                        "path" => rule.path = Some(v),
                                        "access-operations" => rule.ops = v,
                                        "action" => rule.permit = v == "permit",
                                        _ => {}
                                    }
                                }
                                list.rules.push(rule);
                            }
                            _ => {}
                        }
                    }
                    nacm.rule_lists.push(list);
                }
                _ => {}
            }
        }
        nacm
    }

    fn user_groups(&self, user: &str) -> Vec<&str> {
        self.groups
            .iter()
            .filter(|(_, users)| users.iter().any(|u| u == user))
            .map(|(g, _)| g.as_str())
            .collect()
    }

    /// The first rule of `user`'s rule lists that matches `target` of
    /// `module` for `access`.
    fn search(&self, user: &str, module: &str, access: Access, target: Target<'_>) -> Decision {
        let groups = self.user_groups(user);
        let op = match access {
            Access::Read => "read",
            Access::Write => "update",
            Access::Exec => "exec",
        };
        for list in &self.rule_lists {
            if !list
                .groups
                .iter()
                .any(|g| g == "*" || groups.contains(&g.as_str()))
            {
                continue;
            }
            for rule in &list.rules {
                if rule.module != "*" && rule.module != module {
                    continue;
                }
                let ops_ok = rule.ops == "*"
                    || rule.ops.split_whitespace().any(|o| {
                        o == op || (access == Access::Write && matches!(o, "create" | "delete"))
                    });
                if !ops_ok {
                    continue;
                }
                // The rule's type (RFC 8341 rule-type): none matches every
                // request of the module.
                let type_ok = match (&rule.rpc, &rule.notification, &rule.path, &target) {
                    (None, None, None, _) => true,
                    (Some(r), None, None, Target::Rpc(name)) => r == "*" || r == name,
                    (None, Some(n), None, Target::Notification(name)) => n == "*" || n == name,
                    (None, None, Some(p), Target::Data(Some(covers))) => covers(p),
                    _ => false,
                };
                if !type_ok {
                    continue;
                }
                return if rule.permit {
                    Decision::Permit
                } else {
                    Decision::Deny
                };
            }
        }
        Decision::NoMatch
    }

    /// May `user` run `rpc` of `module`? `default_deny` marks RPCs the RFC
    /// protects (kill-session, delete-config).
    pub fn may_exec(&self, user: &str, module: &str, rpc: &str, default_deny: bool) -> bool {
        if !self.enabled || rpc == "close-session" {
            return true;
        }
        match self.search(user, module, Access::Exec, Target::Rpc(rpc)) {
            Decision::Permit => true,
            Decision::Deny => false,
            Decision::NoMatch => !default_deny && self.exec_default,
        }
    }

    /// May `user` read or write data of `module`? `sensitive` marks
    /// `default-deny-all` nodes, which need an explicit permit.
    pub fn may(&self, user: &str, module: &str, access: Access, sensitive: bool) -> bool {
        self.may_data(user, module, access, sensitive, Target::Data(None))
    }

    /// The data decision: the first matching rule, else the default for
    /// `access` (never for `sensitive` nodes).
    fn may_data(
        &self,
        user: &str,
        module: &str,
        access: Access,
        sensitive: bool,
        target: Target<'_>,
    ) -> bool {
        if !self.enabled {
            return true;
        }
        match self.search(user, module, access, target) {
            Decision::Permit => true,
            Decision::Deny => false,
            Decision::NoMatch => {
                !sensitive
                    && match access {
                        Access::Read => self.read_default,
                        Access::Write => self.write_default,
                        Access::Exec => self.exec_default,
                    }
            }
        }
    }
    /// May `user` receive notification `name` of `module`? (RFC 8341
    /// 3.4.6: read access to the notification.)
    pub fn may_notify(&self, user: &str, module: &str, name: &str) -> bool {
        if !self.enabled {
            return true;
        }
        match self.search(user, module, Access::Read, Target::Notification(name)) {
            Decision::Permit => true,
            Decision::Deny => false,
            Decision::NoMatch => self.read_default,
        }
    }

    /// The `path` of every rule that may decide `access` to data for
    /// `user`; empty when module-level decisions are exact.
    pub fn data_rules(&self, user: &str, access: Access) -> Vec<String> {
        if !self.enabled {
            return Vec::new();
        }
        let groups = self.user_groups(user);
        let op = match access {
            Access::Read => "read",
            _ => "update",
        };
        self.rule_lists
            .iter()
            .filter(|l| {
                l.groups
                    .iter()
                    .any(|g| g == "*" || groups.contains(&g.as_str()))
            })
            .flat_map(|l| &l.rules)
            .filter(|r| {
                r.ops == "*"
                    || r.ops.split_whitespace().any(|o| {
                        o == op || (access == Access::Write && matches!(o, "create" | "delete"))
                    })
            })
            .filter_map(|r| r.path.clone())
            .collect()
    }

    /// May `user` read or write the data node at `node_path` (a libyang data
    /// path) of `module`? `covers` tells whether a rule's path selects the
    /// node or one of its ancestors.
    pub fn may_node(
        &self,
        user: &str,
        module: &str,
        access: Access,
        sensitive: bool,
        covers: &dyn Fn(&str) -> bool,
    ) -> bool {
        self.may_data(user, module, access, sensitive, Target::Data(Some(covers)))
    }

    /// Whether some user could still write the NACM configuration: a
    /// configuration that locks everyone out of it is refused.
    pub fn someone_may_write_nacm(&self) -> bool {
        // Users named in groups, and one in no group (rule lists for "*").
        let nobody = "\u{0}";
        std::iter::once(nobody)
            .chain(
                self.groups
                    .iter()
                    .flat_map(|(_, users)| users.iter().map(String::as_str)),
            )
            .any(|u| self.may(u, "ietf-netconf-acm", Access::Write, false))
    }
}

/// The NACM configuration a new device starts with: `admins` may do
/// anything; everyone else may read (not the module keys), get schemas,
/// run `report`, subscribe to notifications and close their session —
/// every other operation is denied (exec-default deny).
pub fn bootstrap_xml(admins: &[String]) -> String {
    let users: String = admins
        .iter()
        .map(|u| {
            format!(
                "<user-name>{}</user-name>",
                l45_netconf_proto::xml::escape_text(u)
            )
        })
        .collect();
    format!(
        r#"<nacm xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-acm">
  <enable-nacm>true</enable-nacm>
  <read-default>permit</read-default>
  <write-default>deny</write-default>
  <exec-default>deny</exec-default>
  <groups><group><name>admin</name>{users}</group></groups>
  <rule-list><name>admin</name><group>admin</group>
    <rule><name>permit-all</name><module-name>*</module-name><access-operations>*</access-operations><action>permit</action></rule>
  </rule-list>
  <rule-list><name>readers</name><group>*</group>
    <rule><name>get</name><module-name>ietf-netconf</module-name><rpc-name>get</rpc-name><access-operations>exec</access-operations><action>permit</action></rule>
    <rule><name>get-config</name><module-name>ietf-netconf</module-name><rpc-name>get-config</rpc-name><access-operations>exec</access-operations><action>permit</action></rule>
    <rule><name>get-data</name><module-name>ietf-netconf-nmda</module-name><rpc-name>get-data</rpc-name><access-operations>exec</access-operations><action>permit</action></rule>
    <rule><name>get-schema</name><module-name>ietf-netconf-monitoring</module-name><rpc-name>get-schema</rpc-name><access-operations>exec</access-operations><action>permit</action></rule>
    <rule><name>create-subscription</name><module-name>notifications</module-name><rpc-name>create-subscription</rpc-name><access-operations>exec</access-operations><action>permit</action></rule>
    <rule><name>establish-subscription</name><module-name>ietf-subscribed-notifications</module-name><rpc-name>establish-subscription</rpc-name><access-operations>exec</access-operations><action>permit</action></rule>
    <rule><name>modify-subscription</name><module-name>ietf-subscribed-notifications</module-name><rpc-name>modify-subscription</rpc-name><access-operations>exec</access-operations><action>permit</action></rule>
    <rule><name>delete-subscription</name><module-name>ietf-subscribed-notifications</module-name><rpc-name>delete-subscription</rpc-name><access-operations>exec</access-operations><action>permit</action></rule>
    <rule><name>report</name><module-name>layer45-customization</module-name><rpc-name>report</rpc-name><access-operations>exec</access-operations><action>permit</action></rule>
  </rule-list>
</nacm>"#
    )
}
