//! Input checks. Everything here runs before any SQL, so a refused input
//! never opens a transaction.

use std::net::IpAddr;

use l45_modules::{Kind, ParamError, Params};

use crate::addr::{parse_prefix, split_host_port};
use crate::error::{CibError, Result};
use crate::types::{MatchRules, NewDevice, NewMiddlebox, NewModule};

const MAX_NAME: usize = 64;

/// Device, middlebox and role names: 1..=64 of `[A-Za-z0-9._-]`, starting
/// with a letter or digit (they appear in CLI arguments and file names).
pub(crate) fn identifier(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(CibError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_NAME {
        return Err(CibError::invalid(
            field,
            format!("longer than {MAX_NAME} characters"),
        ));
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(CibError::invalid(
            field,
            format!("\"{value}\" must start with a letter or digit"),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
    {
        return Err(CibError::invalid(
            field,
            format!("\"{value}\" contains {bad:?}; use letters, digits, '.', '_' and '-'"),
        ));
    }
    Ok(())
}

pub(crate) fn address(field: &str, value: &str) -> Result<()> {
    let shape = "expected host:port, e.g. 192.0.2.1:830, [2001:db8::1]:830 or dev1.example:830";
    let (host, port) = split_host_port(value)
        .ok_or_else(|| CibError::invalid(field, format!("\"{value}\": {shape}")))?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => {
            return Err(CibError::invalid(
                field,
                format!("\"{value}\": port must be 1..65535"),
            ))
        }
    }
    if value.starts_with('[') {
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(CibError::invalid(
                field,
                format!("\"{value}\": \"{host}\" is not an IPv6 address"),
            ));
        }
        return Ok(());
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let hostname_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !hostname_ok {
        return Err(CibError::invalid(
            field,
            format!("\"{value}\": \"{host}\" is not a host name or IP address"),
        ));
    }
    Ok(())
}

fn no_control(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(CibError::invalid(field, "must not be empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(CibError::invalid(field, "contains control characters"));
    }
    Ok(())
}

/// OpenSSH's `SHA256:<43 chars of unpadded base64>`.
pub(crate) fn fingerprint(value: &str) -> Result<()> {
    let field = "host key fingerprint";
    let body = value.strip_prefix("SHA256:").ok_or_else(|| {
        CibError::invalid(
            field,
            format!("\"{value}\" must start with \"SHA256:\" (as ssh-keygen -l prints it)"),
        )
    })?;
    let base64 = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/';
    if body.len() != 43 || !body.chars().all(base64) {
        return Err(CibError::invalid(
            field,
            format!("\"{value}\" is not SHA256: followed by 43 base64 characters"),
        ));
    }
    Ok(())
}

pub(crate) fn new_device(d: &NewDevice) -> Result<()> {
    identifier("device name", &d.name)?;
    address("device address", &d.address)?;
    no_control("device user", &d.username)?;
    if d.username.contains(char::is_whitespace) {
        return Err(CibError::invalid("device user", "contains whitespace"));
    }
    no_control("ssh key path", &d.ssh_key_path)?;
    if let Some(fp) = &d.host_key_fingerprint {
        fingerprint(fp)?;
    }
    if let Some(role) = &d.role {
        identifier("device role", role)?;
    }
    for label in &d.labels {
        label_text(label)?;
    }
    Ok(())
}

/// Labels are `key` or `key=value` of identifier characters (no commas:
/// they are stored comma-separated).
fn label_text(label: &str) -> Result<()> {
    let (key, value) = label.split_once('=').unwrap_or((label, "x"));
    identifier("device label", key)?;
    identifier("device label value", value)
}

pub(crate) fn new_middlebox(m: &NewMiddlebox) -> Result<()> {
    identifier("middlebox name", &m.name)?;
    // `dir:/PATH`: a plugin directory the NCO writes inverse modules into.
    match m.address.strip_prefix("dir:") {
        Some(path) if path.starts_with('/') && !path.chars().any(char::is_control) => {}
        Some(_) => {
            return Err(CibError::invalid(
                "middlebox address",
                format!("{:?}: dir: needs an absolute path", m.address),
            ))
        }
        None => address("middlebox address", &m.address)?,
    }
    identifier("middlebox type", &m.mb_type)
}

/// Whether `name` is a parameter name of an image kind
/// (`[a-z][a-z0-9-]{0,62}`).
fn is_image_kind_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// An image kind's parameters, as the device's `arguments` leaf takes
/// them (`name=value` joined by `;`, at most 1024 bytes).
fn image_arguments(pairs: &[(String, String)]) -> Result<()> {
    let mut total = 0;
    for (i, (name, value)) in pairs.iter().enumerate() {
        if !is_image_kind_name(name) {
            return Err(CibError::invalid(
                format!("parameter {name}"),
                "names are [a-z][a-z0-9-]*",
            ));
        }
        if pairs[..i].iter().any(|(earlier, _)| earlier == name) {
            return Err(CibError::invalid(
                format!("parameter {name}"),
                "given more than once",
            ));
        }
        if value.contains(';') || value.chars().any(char::is_control) {
            return Err(CibError::invalid(
                format!("parameter {name}"),
                "a value may not contain ';' or control characters",
            ));
        }
        total += name.len() + value.len() + 2;
    }
    if total > 1025 {
        return Err(CibError::invalid(
            "parameters",
            "more than 1024 bytes as name=value;…",
        ));
    }
    Ok(())
}

/// The kind, known to the module catalogue.
pub(crate) fn kind(name: &str) -> Result<Kind> {
    Kind::from_name(name).ok_or_else(|| CibError::UnknownKind(name.to_owned()))
}

/// Parameters through `l45_modules::Params::parse`, the function the taps
/// use, so the CIB refuses exactly what a device would.
pub(crate) fn parameters(
    kind_name: &str,
    pairs: &[(String, String)],
    image_kinds: &[String],
) -> Result<()> {
    if Kind::from_name(kind_name).is_none() && image_kinds.iter().any(|k| k == kind_name) {
        return image_arguments(pairs);
    }
    let kind = kind(kind_name)?;
    for (i, (name, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(earlier, _)| earlier == name) {
            return Err(CibError::invalid(
                format!("parameter {name}"),
                "given more than once",
            ));
        }
    }
    let as_strs = pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    match Params::parse(kind, as_strs) {
        Ok(_) => Ok(()),
        Err(ParamError::UnknownParameter) => {
            // The catalogue does not say which one; find it for the operator.
            let unknown = pairs
                .iter()
                .find(|(n, v)| {
                    Params::parse(kind, [(n.as_str(), v.as_str())])
                        == Err(ParamError::UnknownParameter)
                })
                .map(|(n, _)| n.as_str())
                .unwrap_or("?");
            Err(CibError::invalid(
                format!("parameter {unknown}"),
                format!(
                    "kind {kind_name} has no such parameter (allowed: {})",
                    allowed_parameters(kind)
                ),
            ))
        }
        Err(ParamError::BadValue(p)) => {
            let value = pairs
                .iter()
                .find(|(n, _)| n == p)
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            Err(CibError::invalid(
                format!("parameter {p}"),
                format!(
                    "\"{value}\" is not valid for {kind_name} ({})",
                    parameter_rule(kind, p)
                ),
            ))
        }
        Err(ParamError::Missing(p)) => Err(CibError::invalid(
            format!("parameter {p}"),
            format!("required by kind {kind_name} ({})", parameter_rule(kind, p)),
        )),
        Err(ParamError::UnknownKind) => Err(CibError::UnknownKind(kind_name.to_owned())),
        Err(ParamError::Rejected(why)) => Err(CibError::invalid(
            "parameters",
            format!("kind {kind_name}: {}", why.as_str()),
        )),
    }
}

fn allowed_parameters(kind: Kind) -> &'static str {
    match kind {
        Kind::DnsFrontTag | Kind::DnsMiddleTag | Kind::DnsEndTag => "tag",
        Kind::DnsCompression => "recursion-desired",
        Kind::DnsClearanceFilter => "code",
        Kind::StreamTag => "interval, tag",
        Kind::RateLimit => "delay",
        Kind::AppIdTag => "label, use-thread-name",
        Kind::External(_) => "as the installed kind documents",
    }
}

fn parameter_rule(kind: Kind, parameter: &str) -> &'static str {
    match (kind, parameter) {
        (_, "tag") | (_, "label") => "1 to 64 printable characters",
        (_, "code") => "exactly 32 printable characters",
        (_, "interval") => "a whole number of bytes, at least 16",
        (_, "delay") => "milliseconds, 0 to 60000",
        (_, "recursion-desired") | (_, "use-thread-name") => "true or false",
        _ => "see docs/modules.md",
    }
}

/// A new module; `image_kinds` are the kinds of recorded images (their
/// parameters are free `name=value` pairs).
pub(crate) fn new_module(m: &NewModule, image_kinds: &[String]) -> Result<()> {
    if m.name.is_empty() || m.name.len() > MAX_NAME {
        return Err(CibError::invalid(
            "module name",
            "must be 1 to 64 characters",
        ));
    }
    if !m.name.chars().all(|c| (' '..='~').contains(&c)) {
        return Err(CibError::invalid(
            "module name",
            format!("{:?} must be printable ASCII", m.name),
        ));
    }
    parameters(&m.kind, &m.parameters, image_kinds)?;
    match_rules(&m.match_rules)
}

pub(crate) fn match_rules(rules: &MatchRules) -> Result<()> {
    if let Some(a) = &rules.source_address {
        address_or_prefix("match source-address", a)?;
    }
    if let Some(a) = &rules.destination_address {
        address_or_prefix("match destination-address", a)?;
    }
    if let Some(n) = &rules.thread_name {
        comm_name("match thread-name", n)?;
    }
    if let Some(n) = &rules.process_name {
        comm_name("match process-name", n)?;
    }
    Ok(())
}

/// Kernel task names: 1..=15 bytes, no control characters.
fn comm_name(field: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 15 {
        return Err(CibError::invalid(
            field,
            format!("\"{value}\" must be 1 to 15 bytes (the kernel's comm)"),
        ));
    }
    no_control(field, value)
}

fn address_or_prefix(field: &str, value: &str) -> Result<()> {
    parse_prefix(value).map(|_| ()).ok_or_else(|| {
        CibError::invalid(
            field,
            format!("\"{value}\" is not an IPv4/IPv6 address or prefix such as 10.0.0.0/8"),
        )
    })
}

/// Lower-case 64-digit hex.
pub(crate) fn sha256_hex(field: &str, value: &str) -> Result<()> {
    if value.len() == 64
        && value
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        Ok(())
    } else {
        Err(CibError::invalid(
            field,
            format!("\"{value}\" is not 64 lower-case hex digits"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_accept_ipv4_ipv6_and_host_names_with_ports() {
        for ok in [
            "192.0.2.1:830",
            "[2001:db8::1]:830",
            "dev-1.example:22",
            "localhost:8300",
        ] {
            assert!(address("a", ok).is_ok(), "{ok}");
        }
        for bad in [
            "192.0.2.1",
            "2001:db8::1:830",
            "host:0",
            "host:70000",
            ":830",
            "a b:1",
            "[::1]830",
            "-x:1",
        ] {
            assert!(address("a", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprints_must_look_like_openssh_sha256() {
        assert!(fingerprint("SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s").is_ok());
        assert!(fingerprint("MD5:aa:bb").is_err());
        assert!(fingerprint("SHA256:short").is_err());
    }
}
