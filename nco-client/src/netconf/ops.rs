//! Typed helpers for the standard operations (RFC 6241) and the
//! layer45-customization RPCs.

use std::time::Duration;

use base64::Engine as _;

use super::error::NetconfError;
use super::reply::Reply;
use super::session::Session;

/// Namespace of the layer45-customization YANG module.
pub const L45_NS: &str = "urn:layer45:params:xml:ns:yang:layer45-customization";

pub use l45_netconf_proto::params::{Datastore, DefaultOperation, ErrorOption, TestOption};

/// `<running/>` and the like.
fn datastore_xml(d: Datastore) -> String {
    format!("<{}/>", d.as_str())
}

/// Optional parameters of `<edit-config>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EditOptions {
    pub default_operation: Option<DefaultOperation>,
    pub test_option: Option<TestOption>,
    pub error_option: Option<ErrorOption>,
}

fn filter_xml(filter: Option<&str>) -> String {
    match filter {
        Some(f) => format!(r#"<filter type="subtree">{f}</filter>"#),
        None => String::new(),
    }
}

impl Session {
    /// Sends any RPC (alias of [`Session::rpc`]).
    pub async fn call(&self, body: &str) -> Result<Reply, NetconfError> {
        self.rpc(body).await
    }

    /// Calls an RPC of the layer45-customization module: `<op
    /// xmlns="urn:layer45:…">input</op>`. `input` holds the input leaves
    /// (unprefixed elements are in the module's namespace).
    pub async fn call_l45(&self, op: &str, input: &str) -> Result<Reply, NetconfError> {
        if op.is_empty()
            || !op
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(NetconfError::InvalidRequest(format!(
                "bad operation name {op:?}"
            )));
        }
        self.rpc(&format!(r#"<{op} xmlns="{L45_NS}">{input}</{op}>"#))
            .await
    }

    /// `<get>` with an optional subtree filter; returns the content of
    /// `<data>`.
    pub async fn get(&self, filter: Option<&str>) -> Result<String, NetconfError> {
        self.rpc_raw(
            &format!("<get>{}</get>", filter_xml(filter)),
            self.default_rpc_timeout(),
        )
        .await?
        .data_content()
    }

    /// `<get-config>` with an optional subtree filter; returns the content
    /// of `<data>`.
    pub async fn get_config(
        &self,
        source: Datastore,
        filter: Option<&str>,
    ) -> Result<String, NetconfError> {
        self.rpc_raw(
            &format!(
                "<get-config><source>{}</source>{}</get-config>",
                datastore_xml(source),
                filter_xml(filter)
            ),
            self.default_rpc_timeout(),
        )
        .await?
        .data_content()
    }

    /// `<edit-config>`; `config` is the content of `<config>` (top-level
    /// elements with their own namespaces).
    pub async fn edit_config(
        &self,
        target: Datastore,
        config: &str,
        options: EditOptions,
    ) -> Result<(), NetconfError> {
        let mut body = format!("<edit-config><target>{}</target>", datastore_xml(target));
        let options = [
            (
                "default-operation",
                options.default_operation.map(|d| d.as_str()),
            ),
            ("test-option", options.test_option.map(|t| t.as_str())),
            ("error-option", options.error_option.map(|e| e.as_str())),
        ];
        for (name, value) in options {
            if let Some(v) = value {
                body.push_str(&format!("<{name}>{v}</{name}>"));
            }
        }
        body.push_str("<config>");
        body.push_str(config);
        body.push_str("</config></edit-config>");
        self.rpc(&body).await?.into_ok()
    }

    /// `<commit>` of the candidate.
    pub async fn commit(&self) -> Result<(), NetconfError> {
        self.rpc("<commit/>").await?.into_ok()
    }

    /// `<commit><confirmed/>…`: must be confirmed by a plain commit within
    /// `timeout` or the server rolls back.
    pub async fn commit_confirmed(&self, timeout: Duration) -> Result<(), NetconfError> {
        self.rpc(&format!(
            "<commit><confirmed/><confirm-timeout>{}</confirm-timeout></commit>",
            timeout.as_secs().max(1)
        ))
        .await?
        .into_ok()
    }

    pub async fn discard_changes(&self) -> Result<(), NetconfError> {
        self.rpc("<discard-changes/>").await?.into_ok()
    }

    pub async fn validate(&self, source: Datastore) -> Result<(), NetconfError> {
        self.rpc(&format!(
            "<validate><source>{}</source></validate>",
            datastore_xml(source)
        ))
        .await?
        .into_ok()
    }

    pub async fn lock(&self, target: Datastore) -> Result<(), NetconfError> {
        self.rpc(&format!(
            "<lock><target>{}</target></lock>",
            datastore_xml(target)
        ))
        .await?
        .into_ok()
    }

    pub async fn unlock(&self, target: Datastore) -> Result<(), NetconfError> {
        self.rpc(&format!(
            "<unlock><target>{}</target></unlock>",
            datastore_xml(target)
        ))
        .await?
        .into_ok()
    }

    pub async fn kill_session(&self, session_id: u32) -> Result<(), NetconfError> {
        self.rpc(&format!(
            "<kill-session><session-id>{session_id}</session-id></kill-session>"
        ))
        .await?
        .into_ok()
    }

    // ===== layer45-customization =====

    /// `report`: per-module state and counters; returns the output
    /// elements (`<module xmlns="urn:layer45:…">…</module>`…).
    pub async fn report(&self) -> Result<String, NetconfError> {
        self.call_l45("report", "").await?.into_data()
    }

    /// `challenge`: returns the output elements (nonce, ciphertext).
    pub async fn challenge(
        &self,
        id: u32,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<String, NetconfError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        self.call_l45(
            "challenge",
            &format!(
                "<id>{id}</id><nonce>{}</nonce><ciphertext>{}</ciphertext>",
                b64.encode(nonce),
                b64.encode(ciphertext)
            ),
        )
        .await?
        .into_data()
    }

    pub async fn revoke_module(&self, id: u32) -> Result<(), NetconfError> {
        self.call_l45("revoke-module", &format!("<id>{id}</id>"))
            .await?
            .into_ok()
    }

    /// `install-module` with its input already built
    /// (`images::push::install_input`: image, manifest, signature, built
    /// once for many devices); returns the output (`sha256`, `kind`).
    pub async fn install_module(&self, input: &str) -> Result<String, NetconfError> {
        self.call_l45("install-module", input).await?.into_data()
    }

    /// `remove-image`: unloads and deletes an installed image; the device
    /// refuses (`in-use`) while a module uses it.
    pub async fn remove_image(&self, sha256: &str) -> Result<(), NetconfError> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NetconfError::InvalidRequest(format!(
                "not a SHA-256 in hex: {sha256:?}"
            )));
        }
        self.call_l45("remove-image", &format!("<sha256>{sha256}</sha256>"))
            .await?
            .into_ok()
    }
}
