//! NETCONF access control (RFC 8341), enforced for read, write and exec.
//!
//! Rules come from `/ietf-netconf-acm:nacm` in running. Granularity: exec per
//! RPC; write and read per top-level module, plus the `default-deny-all`
//! nodes of our model (the module keys), which only an explicit permit rule
//! reveals or changes.

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

    fn search(
        &self,
        user: &str,
        module: &str,
        rpc: Option<&str>,
        access: Access,
        path: Option<&str>,
    ) -> Decision {
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
                if let Some(r) = &rule.rpc {
                    if access != Access::Exec || (r != "*" && Some(r.as_str()) != rpc) {
                        continue;
                    }
                }
                if let Some(p) = &rule.path {
                    match path {
                        Some(target) if target.starts_with(p.as_str()) || p == "/" => {}
                        _ => continue,
                    }
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
        match self.search(user, module, Some(rpc), Access::Exec, None) {
            Decision::Permit => true,
            Decision::Deny => false,
            Decision::NoMatch => !default_deny && self.exec_default,
        }
    }

    /// May `user` read or write data of `module`? `sensitive` marks
    /// `default-deny-all` nodes, which need an explicit permit.
    pub fn may(&self, user: &str, module: &str, access: Access, sensitive: bool) -> bool {
        if !self.enabled {
            return true;
        }
        match self.search(user, module, None, access, None) {
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
}

/// The NACM configuration a new device starts with: `admins` may do
/// anything; everyone else may read (but not keys) and run `report`, and
/// nothing else that changes the device.
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
  <exec-default>permit</exec-default>
  <groups><group><name>admin</name>{users}</group></groups>
  <rule-list><name>admin</name><group>admin</group>
    <rule><name>permit-all</name><module-name>*</module-name><access-operations>*</access-operations><action>permit</action></rule>
  </rule-list>
  <rule-list><name>operators</name><group>*</group>
    <rule><name>report</name><module-name>layer45-customization</module-name><rpc-name>report</rpc-name><access-operations>exec</access-operations><action>permit</action></rule>
    <rule><name>no-module-rpcs</name><module-name>layer45-customization</module-name><rpc-name>*</rpc-name><access-operations>exec</access-operations><action>deny</action></rule>
  </rule-list>
</nacm>"#
    )
}
