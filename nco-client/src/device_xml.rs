//! What the NCO sends to and reads from a device agent, as XML of the
//! `layer45-customization` model. Pure functions, tested byte for byte.

use base64::Engine as _;
use l45_cib::{Module, ModuleReport, ReportedState};
use l45_netconf_proto::xml::{self, escape_text, Element};

pub const L45_NS: &str = "urn:layer45:params:xml:ns:yang:layer45-customization";

/// Parameter container of each kind in `module/parameters` (YANG choice).
pub fn parameter_container(kind: &str) -> Option<&'static str> {
    l45_modules::Kind::from_name(kind).map(l45_modules::Kind::parameter_container)
}

fn leaf(out: &mut String, name: &str, value: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    out.push_str(&escape_text(value));
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// The whole `module` entry as the CIB holds it, for an edit-config merge
/// (idempotent: resending it after a crash changes nothing).
pub fn module_entry(m: &Module) -> String {
    let mut e = String::with_capacity(512);
    e.push_str("<module>");
    leaf(&mut e, "id", &m.module_id.to_string());
    leaf(&mut e, "name", &m.name);
    // A kind that is not built in comes from an installed image: the
    // entry names it in the installed case.
    let built_in = parameter_container(&m.kind).is_some();
    e.push_str(&format!(
        "<kind xmlns:l45=\"{L45_NS}\">l45:{}</kind>",
        if built_in {
            escape_text(&m.kind)
        } else {
            "installed-binary".into()
        }
    ));
    leaf(&mut e, "priority", &m.priority.to_string());
    leaf(
        &mut e,
        "activated",
        if m.activated { "true" } else { "false" },
    );
    leaf(
        &mut e,
        "deprecated",
        if m.deprecated { "true" } else { "false" },
    );
    leaf(&mut e, "attach", m.attach.as_str());
    let r = &m.match_rules;
    let mut matching = String::new();
    if let Some(p) = r.protocol {
        leaf(&mut matching, "protocol", p.as_str());
    }
    if let Some(a) = &r.source_address {
        leaf(&mut matching, "source-address", a);
    }
    if let Some(p) = r.source_port {
        leaf(&mut matching, "source-port", &p.to_string());
    }
    if let Some(a) = &r.destination_address {
        leaf(&mut matching, "destination-address", a);
    }
    if let Some(p) = r.destination_port {
        leaf(&mut matching, "destination-port", &p.to_string());
    }
    if let Some(n) = &r.thread_name {
        leaf(&mut matching, "thread-name", n);
    }
    if let Some(n) = &r.process_name {
        leaf(&mut matching, "process-name", n);
    }
    if !matching.is_empty() {
        e.push_str("<match>");
        e.push_str(&matching);
        e.push_str("</match>");
    }
    e.push_str("<security>");
    leaf(
        &mut e,
        "key",
        &base64::engine::general_purpose::STANDARD.encode(m.key),
    );
    e.push_str("</security>");
    if !built_in {
        e.push_str("<parameters><installed>");
        leaf(&mut e, "kind-name", &m.kind);
        if !m.parameters.is_empty() {
            let args: Vec<String> = m
                .parameters
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            leaf(&mut e, "arguments", &args.join(";"));
        }
        e.push_str("</installed></parameters>");
    }
    if let Some(container) = parameter_container(&m.kind) {
        e.push_str("<parameters><");
        e.push_str(container);
        e.push('>');
        for (k, v) in &m.parameters {
            leaf(&mut e, k, v);
        }
        e.push_str("</");
        e.push_str(container);
        e.push_str("></parameters>");
    }
    e.push_str("</module>");
    customizations(&e)
}

/// One leaf of an existing entry (deprecate, activate, priority).
pub fn module_leaf(module_id: u32, name: &str, value: &str) -> String {
    let mut e = String::from("<module>");
    leaf(&mut e, "id", &module_id.to_string());
    leaf(&mut e, name, value);
    e.push_str("</module>");
    customizations(&e)
}

fn customizations(inner: &str) -> String {
    format!("<customizations xmlns=\"{L45_NS}\">{inner}</customizations>")
}

fn text<'a>(e: &'a Element, name: &str) -> Option<&'a str> {
    e.child(L45_NS, name).map(|c| c.trimmed_text())
}

fn number<T: std::str::FromStr + Default>(e: &Element, name: &str) -> T {
    text(e, name)
        .and_then(|t| t.parse().ok())
        .unwrap_or_default()
}

/// Why a device's report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("report is not well-formed XML: {0}")]
    Xml(String),
    #[error("report entry without a valid id")]
    MissingId,
}

/// Parses the output of the `report` RPC (a sequence of `module` elements).
pub fn parse_report(output: &str) -> Result<Vec<ModuleReport>, ReportError> {
    let wrapped = format!("<report-output>{output}</report-output>");
    let root = xml::parse(wrapped.as_bytes()).map_err(|e| ReportError::Xml(e.to_string()))?;
    let mut out = Vec::new();
    for m in root.children.iter().filter(|c| c.is(L45_NS, "module")) {
        let module_id = text(m, "id")
            .and_then(|t| t.parse().ok())
            .ok_or(ReportError::MissingId)?;
        out.push(ModuleReport {
            module_id,
            state: text(m, "state").and_then(ReportedState::parse),
            activated: text(m, "activated").map(|t| t == "true"),
            active_ts: text(m, "active-ts").map(str::to_owned),
            socket_count: number(m, "socket-count"),
            bytes_sent: number(m, "bytes-sent"),
            bytes_received: number(m, "bytes-received"),
            messages_sent: number(m, "messages-sent"),
            messages_received: number(m, "messages-received"),
            errors: number(m, "errors"),
        });
    }
    Ok(out)
}

/// The subtree filter that reads a device's check-in data.
pub fn device_filter() -> String {
    format!("<device xmlns=\"{L45_NS}\"/>")
}

/// A device's check-in as read from `/l45:device`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckInData {
    pub data: l45_cib::DeviceData,
    /// The host key fingerprint the agent says it has.
    pub host_key_fingerprint: Option<String>,
    /// The one-time enrollment token the agent was started with.
    pub enrollment_token: Option<String>,
    /// The target module images must be built for (absent: the tap
    /// loads none, or the agent predates images).
    pub image_target: Option<String>,
}

/// Parses the content of `<data>` of a `get` with [`device_filter`]. An
/// agent without the container (older, or in-process) gives empty data.
pub fn parse_device(data: &str) -> Result<CheckInData, ReportError> {
    let wrapped = format!("<data>{data}</data>");
    let root = xml::parse(wrapped.as_bytes()).map_err(|e| ReportError::Xml(e.to_string()))?;
    let Some(d) = root.children.iter().find(|c| c.is(L45_NS, "device")) else {
        return Ok(CheckInData::default());
    };
    let owned = |name: &str| text(d, name).unwrap_or("").to_string();
    let tap = d.child(L45_NS, "tap");
    let tap_text = |name: &str| tap.and_then(|t| text(t, name)).map(str::to_string);
    let kinds = tap
        .map(|t| {
            t.children
                .iter()
                .filter(|c| c.is(L45_NS, "kind"))
                .map(|c| {
                    let k = c.trimmed_text();
                    // An identityref: drop the prefix.
                    k.rsplit(':').next().unwrap_or(k).to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(CheckInData {
        data: l45_cib::DeviceData {
            host_name: owned("host-name"),
            machine_id: owned("machine-id"),
            architecture: owned("architecture"),
            os_name: owned("os-name"),
            kernel_release: owned("kernel-release"),
            agent_version: owned("agent-version"),
            tap_backend: tap_text("backend").unwrap_or_default(),
            userspace_abi_version: tap_text("userspace-abi-version").and_then(|v| v.parse().ok()),
            kernel_module_release: tap_text("kernel-module-release"),
            kinds,
            last_start: text(d, "last-start").map(str::to_string),
        },
        host_key_fingerprint: text(d, "host-key-fingerprint").map(str::to_string),
        enrollment_token: text(d, "enrollment-token").map(str::to_string),
        image_target: tap_text("image-target"),
    })
}

/// A device's `module-bypassed` notification: a socket that module `id`'s
/// match selects escapes the tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bypassed {
    pub id: u32,
    /// `not-tapped` or `io-uring` (as sent; an unknown reason is kept).
    pub reason: String,
    pub pid: Option<u32>,
    pub process_name: String,
    pub protocol: String,
    /// `addr:port` (`[v6]:port`) of our end and the peer, when sent.
    pub source: Option<String>,
    pub destination: Option<String>,
}

impl Bypassed {
    /// The alert's text.
    pub fn message(&self, device: &str) -> String {
        let who = match self.pid {
            Some(pid) => format!("process {pid} ({})", self.process_name),
            None => format!("process {}", self.process_name),
        };
        let why = match self.reason.as_str() {
            "not-tapped" => "does not run the tap".to_string(),
            "io-uring" => "runs the tap but uses io_uring".to_string(),
            other => format!("escapes the tap ({other})"),
        };
        let socket = match (&self.source, &self.destination) {
            (Some(s), Some(d)) => format!(" on {} {s} -> {d}", self.protocol),
            (Some(s), None) => format!(" on {} {s}", self.protocol),
            _ => String::new(),
        };
        format!(
            "module {} on {device} is bypassed: {who} {why}{socket}; its traffic is not customized",
            self.id
        )
    }
}

/// Parses a `module-bypassed` notification's content (`None` if it is not
/// one or has no valid id).
pub fn parse_bypassed(body: &str) -> Option<Bypassed> {
    let root = xml::parse(body.as_bytes()).ok()?;
    if !root.is(L45_NS, "module-bypassed") {
        return None;
    }
    let end = |end: &str| {
        let addr = text(&root, &format!("{end}-address"))?;
        let port = text(&root, &format!("{end}-port")).unwrap_or("?");
        Some(if addr.contains(':') {
            format!("[{addr}]:{port}")
        } else {
            format!("{addr}:{port}")
        })
    };
    Some(Bypassed {
        id: text(&root, "id")?.parse().ok()?,
        reason: text(&root, "reason").unwrap_or("").to_owned(),
        pid: text(&root, "pid").and_then(|p| p.parse().ok()),
        process_name: text(&root, "process-name").unwrap_or("").to_owned(),
        protocol: text(&root, "protocol").unwrap_or("").to_owned(),
        source: end("source"),
        destination: end("destination"),
    })
}

/// The subtree filter that reads the digests of the images a device holds
/// (`/l45:images/image/sha256`).
pub fn installed_images_filter() -> String {
    format!("<images xmlns=\"{L45_NS}\"><image><sha256/></image></images>")
}

/// The SHA-256 of every image in the content of `<data>` of a `get` with
/// [`installed_images_filter`].
pub fn parse_installed_images(data: &str) -> Result<Vec<String>, ReportError> {
    let wrapped = format!("<data>{data}</data>");
    let root = xml::parse(wrapped.as_bytes()).map_err(|e| ReportError::Xml(e.to_string()))?;
    Ok(root
        .children
        .iter()
        .filter(|c| c.is(L45_NS, "images"))
        .flat_map(|images| images.children.iter().filter(|c| c.is(L45_NS, "image")))
        .filter_map(|image| text(image, "sha256"))
        .map(str::to_owned)
        .collect())
}

/// Reads `<nonce>` and `<ciphertext>` of a `challenge` reply.
pub fn parse_challenge_answer(output: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let wrapped = format!("<challenge-output>{output}</challenge-output>");
    let root = xml::parse(wrapped.as_bytes()).ok()?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let nonce = b64.decode(text(&root, "nonce")?).ok()?;
    let ct = b64.decode(text(&root, "ciphertext")?).ok()?;
    Some((nonce, ct))
}

#[cfg(test)]
mod tests {
    use super::*;
    use l45_cib::{Attach, MatchRules, ModuleStatus, Protocol, Timestamp};

    fn module() -> Module {
        Module {
            device: "d1".into(),
            module_id: 7,
            name: "tag<&>".into(),
            kind: "dns-front-tag".into(),
            parameters: vec![("tag".into(), "XTAG&".into())],
            priority: 10,
            activated: true,
            deprecated: false,
            attach: Attach::Immediate,
            match_rules: MatchRules {
                protocol: Some(Protocol::Udp),
                destination_port: Some(53),
                process_name: Some("dig".into()),
                ..MatchRules::default()
            },
            key: [0u8; 32],
            status: ModuleStatus::Built,
            created_at: Timestamp(0),
            deployed_at: None,
            revoked_at: None,
            image: None,
        }
    }

    #[test]
    fn installed_images_are_read_from_the_images_state() {
        let data = format!(
            "<images xmlns=\"{L45_NS}\"><image><sha256>{a}</sha256></image>\
             <image><sha256>{b}</sha256></image></images>",
            a = "a".repeat(64),
            b = "b".repeat(64)
        );
        assert_eq!(
            parse_installed_images(&data).unwrap(),
            vec!["a".repeat(64), "b".repeat(64)]
        );
        assert!(parse_installed_images("").unwrap().is_empty());
        assert!(parse_installed_images("<images").is_err());
    }

    #[test]
    fn module_entry_is_exact() {
        assert_eq!(
            module_entry(&module()),
            format!(
                "<customizations xmlns=\"{L45_NS}\"><module><id>7</id><name>tag&lt;&amp;&gt;</name>\
                 <kind xmlns:l45=\"{L45_NS}\">l45:dns-front-tag</kind><priority>10</priority>\
                 <activated>true</activated><deprecated>false</deprecated><attach>immediate</attach>\
                 <match><protocol>udp</protocol><destination-port>53</destination-port>\
                 <process-name>dig</process-name></match>\
                 <security><key>AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=</key></security>\
                 <parameters><dns-tag><tag>XTAG&amp;</tag></dns-tag></parameters></module></customizations>"
            )
        );
        assert_eq!(
            module_leaf(7, "priority", "5"),
            format!("<customizations xmlns=\"{L45_NS}\"><module><id>7</id><priority>5</priority></module></customizations>")
        );
    }

    #[test]
    fn report_parses_and_refuses_garbage() {
        let out = format!(
            "<module xmlns=\"{L45_NS}\"><id>3</id><state>active</state><activated>true</activated>\
             <active-ts>2026-11-22T00:00:00Z</active-ts><socket-count>2</socket-count><bytes-sent>10</bytes-sent>\
             <bytes-received>0</bytes-received><messages-sent>1</messages-sent><messages-received>0</messages-received>\
             <errors>0</errors></module><l45:module xmlns:l45=\"{L45_NS}\"><l45:id>4</l45:id><l45:state>deprecated</l45:state></l45:module>"
        );
        let r = parse_report(&out).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].module_id, 3);
        assert_eq!(r[0].state, Some(ReportedState::Active));
        assert_eq!(r[0].socket_count, 2);
        assert_eq!(r[1].state, Some(ReportedState::Deprecated));
        assert!(parse_report("").unwrap().is_empty());
        assert!(parse_report("<module").is_err());
        assert!(matches!(
            parse_report(&format!("<module xmlns=\"{L45_NS}\"><id>x</id></module>")),
            Err(ReportError::MissingId)
        ));
    }

    #[test]
    fn challenge_answer_parses() {
        let out = format!("<nonce xmlns=\"{L45_NS}\">AAEC</nonce><ciphertext xmlns=\"{L45_NS}\">AwQ=</ciphertext>");
        assert_eq!(
            parse_challenge_answer(&out),
            Some((vec![0, 1, 2], vec![3, 4]))
        );
        assert_eq!(parse_challenge_answer("<nonce/>"), None);
    }

    #[test]
    fn bypassed_notifications_are_read_and_worded() {
        let body = format!(
            "<module-bypassed xmlns=\"{L45_NS}\"><id>3</id><reason>not-tapped</reason><pid>4242</pid>\
             <process-name>static&lt;1&gt;</process-name><protocol>tcp</protocol>\
             <source-address>::1</source-address><source-port>40000</source-port>\
             <destination-address>127.0.0.1</destination-address><destination-port>8080</destination-port>\
             </module-bypassed>"
        );
        let b = parse_bypassed(&body).unwrap();
        assert_eq!(
            b,
            Bypassed {
                id: 3,
                reason: "not-tapped".into(),
                pid: Some(4242),
                process_name: "static<1>".into(),
                protocol: "tcp".into(),
                source: Some("[::1]:40000".into()),
                destination: Some("127.0.0.1:8080".into()),
            }
        );
        assert_eq!(
            b.message("d1"),
            "module 3 on d1 is bypassed: process 4242 (static<1>) does not run the tap on tcp [::1]:40000 -> 127.0.0.1:8080; its traffic is not customized"
        );
        let io = parse_bypassed(&format!(
            "<module-bypassed xmlns=\"{L45_NS}\"><id>4</id><reason>io-uring</reason><pid>7</pid>\
             <process-name>srv</process-name><protocol>udp</protocol></module-bypassed>"
        ))
        .unwrap();
        assert_eq!(
            io.message("d2"),
            "module 4 on d2 is bypassed: process 7 (srv) runs the tap but uses io_uring; its traffic is not customized"
        );
        // Not one, or no id: nothing.
        for bad in [
            format!(
                "<deprecated-module-idle xmlns=\"{L45_NS}\"><id>3</id></deprecated-module-idle>"
            ),
            format!(
                "<module-bypassed xmlns=\"{L45_NS}\"><reason>io-uring</reason></module-bypassed>"
            ),
            format!("<module-bypassed xmlns=\"{L45_NS}\"><id>x</id></module-bypassed>"),
            "<module-bypassed><id>3</id></module-bypassed>".to_string(),
            "<module-bypassed".to_string(),
        ] {
            assert_eq!(parse_bypassed(&bad), None, "{bad}");
        }
    }
    #[test]
    fn device_data_is_read_from_the_device_container() {
        let xml = format!(
            "<device xmlns=\"{L45_NS}\"><host-name>h1</host-name><machine-id>m1</machine-id>\
             <architecture>x86_64</architecture><os-name>Debian</os-name>\
             <kernel-release>6.12.1</kernel-release><agent-version>0.1.0</agent-version>\
             <host-key-fingerprint>SHA256:x</host-key-fingerprint>\
             <last-start>2026-12-06T00:00:00Z</last-start>\
             <tap><backend>userspace</backend><userspace-abi-version>4</userspace-abi-version>\
             <kind xmlns:l45=\"{L45_NS}\">l45:dns-front-tag</kind><kind>l45:stream-tag</kind></tap>\
             <enrollment-token>l45e-ab</enrollment-token></device>"
        );
        let c = parse_device(&xml).unwrap();
        assert_eq!(c.data.host_name, "h1");
        assert_eq!(c.data.tap_backend, "userspace");
        assert_eq!(c.data.userspace_abi_version, Some(4));
        assert_eq!(c.data.kernel_module_release, None);
        assert_eq!(c.data.kinds, vec!["dns-front-tag", "stream-tag"]);
        assert_eq!(c.data.last_start.as_deref(), Some("2026-12-06T00:00:00Z"));
        assert_eq!(c.enrollment_token.as_deref(), Some("l45e-ab"));
        assert_eq!(parse_device("").unwrap(), CheckInData::default());
        assert!(parse_device("<device").is_err());
    }
}
