//! Middlebox functions: inverse modules for deployed customizations, and
//! flow queries answered from the CIB.
//!
//! The inverse of a module instance is a Wireshark Lua dissector generated
//! for that instance (its tag, interval, ports) by `l45-dissector`
//! (`modules/src/bin/l45-dissector.rs`). Middleboxes of type `wireshark`
//! receive them; a middlebox's address `dir:PATH` is a directory it loads
//! plugins from (e.g. `~/.local/lib/wireshark/plugins`), which is the one
//! delivery the NCO implements.

use std::path::{Path, PathBuf};

use l45_cib::{
    alert_kind, FlowMatch, FlowQuery, Middlebox, MiddleboxDeployment, MiddleboxDeploymentState,
    Module, ModuleStatus, NewAlert, Severity,
};
use sha2::{Digest, Sha256};

use crate::nco::{Nco, NcoError};

/// Middlebox type whose inverse modules are Wireshark dissectors.
pub const WIRESHARK: &str = "wireshark";

/// The generator binary: `$L45_DISSECTOR`, else next to this program.
pub fn dissector_program() -> PathBuf {
    if let Some(p) = std::env::var_os("L45_DISSECTOR") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("l45-dissector")))
        .unwrap_or_else(|| PathBuf::from("l45-dissector"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn err(message: impl Into<String>) -> NcoError {
    NcoError::Middlebox(message.into())
}

/// The dissector for one module instance.
pub fn inverse_for(m: &Module) -> Result<String, NcoError> {
    let mut cmd = std::process::Command::new(dissector_program());
    cmd.arg(&m.kind);
    for (k, v) in &m.parameters {
        cmd.arg(format!("{k}={v}"));
    }
    for p in [m.match_rules.destination_port, m.match_rules.source_port]
        .into_iter()
        .flatten()
    {
        cmd.arg("--port").arg(p.to_string());
    }
    let out = cmd
        .output()
        .map_err(|e| err(format!("cannot run {}: {e}", dissector_program().display())))?;
    if !out.status.success() {
        return Err(err(format!(
            "{} refused {} module {}: {}",
            dissector_program().display(),
            m.kind,
            m.module_id,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    String::from_utf8(out.stdout).map_err(|_| err("dissector is not UTF-8"))
}

/// Registers the generator as the inverse of every kind for a middlebox
/// type (done when a wireshark middlebox is added).
pub fn register_inverses(nco: &Nco, mb_type: &str) -> Result<usize, NcoError> {
    let program = dissector_program();
    let bytes = std::fs::read(&program)
        .map_err(|e| err(format!("cannot read {}: {e}", program.display())))?;
    let hash = sha256_hex(&bytes);
    let kinds = nco.cib().module_kinds()?;
    let mut n = 0;
    for (kind, _) in kinds {
        if l45_modules::Kind::from_name(&kind).is_none() {
            continue; // installed binaries have no generated inverse
        }
        nco.cib()
            .register_inverse(&kind, mb_type, "l45-dissector", &hash)?;
        n += 1;
    }
    Ok(n)
}

fn target_dir(mb: &Middlebox) -> Result<&Path, NcoError> {
    mb.address
        .strip_prefix("dir:")
        .map(Path::new)
        .ok_or_else(|| {
            err(format!(
                "middlebox {} has address {:?}: only dir:PATH delivery is implemented",
                mb.name, mb.address
            ))
        })
}

/// Ships the inverse of every deployed module to one middlebox; returns the
/// deployments recorded (deployed, or failed with the reason).
pub fn distribute(nco: &Nco, middlebox: &str) -> Result<Vec<MiddleboxDeployment>, NcoError> {
    let mb = nco.cib().middlebox(middlebox)?;
    let dir = target_dir(&mb)?.to_path_buf();
    std::fs::create_dir_all(&dir)
        .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    let modules = nco.cib().modules_with_status(ModuleStatus::Deployed)?;
    let mut out = Vec::new();
    for m in modules {
        let queued = match nco
            .cib()
            .request_middlebox_deployment(&mb.name, &m.device, m.module_id)
        {
            Ok(d) => d,
            // No inverse registered for this kind on this type: not for this middlebox.
            Err(l45_cib::CibError::NoInverse { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let result = inverse_for(&m).and_then(|lua| {
            let file = dir.join(format!("l45-{}-{}-{}.lua", m.device, m.module_id, m.kind));
            let tmp = file.with_extension("lua.tmp");
            std::fs::write(&tmp, &lua)
                .and_then(|()| std::fs::rename(&tmp, &file))
                .map_err(|e| err(format!("cannot write {}: {e}", file.display())))?;
            Ok(sha256_hex(lua.as_bytes()))
        });
        let recorded = match result {
            Ok(hash) => nco.cib().set_middlebox_deployment_state(
                queued.id,
                MiddleboxDeploymentState::Deployed,
                Some(&hash),
                None,
            )?,
            Err(e) => nco.cib().set_middlebox_deployment_state(
                queued.id,
                MiddleboxDeploymentState::Failed,
                None,
                Some(&e.to_string()),
            )?,
        };
        out.push(recorded);
    }
    Ok(out)
}

/// A middlebox asks what a flow is: the modules (with their inverses) that
/// customize it, from the CIB. A flow no module explains is rejected and
/// alerted.
pub fn flow_query(nco: &Nco, q: &FlowQuery) -> Result<Vec<FlowMatch>, NcoError> {
    let matches = nco.cib().flow_lookup(q)?;
    if matches.is_empty() {
        nco.cib().raise_alert(&NewAlert {
            severity: Severity::Warning,
            device: None,
            module_id: None,
            kind: alert_kind::FLOW_REJECTED.to_string(),
            message: format!(
                "middlebox {} asked about {} {}:{} -> {}:{}: no customization known, flow rejected",
                q.middlebox,
                q.protocol.as_str(),
                q.source,
                q.source_port,
                q.destination,
                q.destination_port
            ),
        })?;
    }
    Ok(matches)
}
