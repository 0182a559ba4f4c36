//! Module images: what the NCO signs and a device checks before it stores
//! or loads a kind that is not built in.
//!
//! An image travels as three parts: the image file itself (a shared
//! object or kernel module), its [`Manifest`] in the canonical text form
//! below, and an Ed25519 signature over the manifest's exact bytes. The
//! manifest carries the image's SHA-256, so the signature covers the image
//! too. No I/O here: the agent and the NCO both use these pure functions.
//!
//! ## Manifest, version 1
//!
//! UTF-8 text, one `name value` line each (a single space between), LF
//! line ends, the fields in exactly this order, nothing else:
//!
//! ```text
//! l45-image-manifest 1
//! kind udp-xor-mask
//! abi-version 1
//! target userspace-x86_64
//! sha256 <64 lowercase hex digits>
//! size <bytes, decimal, no leading zero>
//! built-at <RFC 3339 UTC, e.g. 2026-12-06T03:40:00Z>
//! signer <key id: 16 lowercase hex digits>
//! ```
//!
//! A manifest is accepted only in this canonical form ([`Manifest::parse`]
//! re-renders it and compares), so one manifest has exactly one byte
//! string a signature can cover.

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

/// The manifest format this crate reads and writes (first line).
pub const MANIFEST_VERSION: u32 = 1;
/// The module C ABI version devices of this build load.
pub const ABI_VERSION: u32 = 1;
/// The first line of a version-1 manifest.
const HEADER: &str = "l45-image-manifest 1";
/// Longest manifest accepted (a valid one is about 250 bytes).
pub const MAX_MANIFEST_LEN: usize = 1024;

/// Why a manifest, signature or image was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("manifest is malformed: {0}")]
    Malformed(String),
    #[error("image is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("image does not match its manifest: {0}")]
    DigestMismatch(String),
    #[error("signature is not 64 bytes (got {0})")]
    SignatureLength(usize),
    #[error("manifest names signer {0}, which is not a trusted signer of this device")]
    UnknownSigner(String),
    #[error("signature does not verify under trusted signer {0}")]
    BadSignature(String),
    #[error("image ABI version {got} is not supported (this device loads version {supported})")]
    AbiUnsupported { got: u32, supported: u32 },
    #[error("image is built for target {got}, but this device's tap loads {wanted}")]
    WrongTarget { got: String, wanted: String },
    #[error("this device's tap loads no module images (image target {0})")]
    NoImageSupport(String),
    #[error("public key is malformed: {0}")]
    BadPublicKey(String),
}

/// A module image's signed description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The kind's name as module entries name it.
    pub kind: String,
    pub abi_version: u32,
    /// `userspace-x86_64`, `kernel-6.12.118-x86_64`.
    pub target: String,
    /// SHA-256 of the image, lowercase hex.
    pub sha256_hex: String,
    pub size: u64,
    /// RFC 3339, UTC (`…Z`).
    pub built_at: String,
    /// Key id of the signing key ([`key_id`]).
    pub signer: String,
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// SHA-256 of `data`, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// A public key's id: the first 8 bytes of its SHA-256, in hex. Manifests
/// name their signer by it; devices find the trusted key with it.
pub fn key_id(public_key: &[u8; 32]) -> String {
    hex(&Sha256::digest(public_key)[..8])
}

fn is_name(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Whether `s` is a valid kind name (`[a-z][a-z0-9-]{0,62}`).
pub fn is_kind_name(s: &str) -> bool {
    is_name(s, 63)
}

fn is_target(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'+'))
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// `YYYY-MM-DDTHH:MM:SSZ` with digits where digits go.
fn is_utc_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

impl Manifest {
    /// The canonical text (what is signed).
    pub fn render(&self) -> String {
        format!(
            "{HEADER}\nkind {}\nabi-version {}\ntarget {}\nsha256 {}\nsize {}\nbuilt-at {}\nsigner {}\n",
            self.kind,
            self.abi_version,
            self.target,
            self.sha256_hex,
            self.size,
            self.built_at,
            self.signer
        )
    }

    /// Parses a manifest; only the canonical form is accepted.
    pub fn parse(text: &[u8]) -> Result<Manifest, ImageError> {
        let bad = |m: &str| ImageError::Malformed(m.to_string());
        if text.len() > MAX_MANIFEST_LEN {
            return Err(bad(&format!(
                "{} bytes, more than {MAX_MANIFEST_LEN}",
                text.len()
            )));
        }
        let text = std::str::from_utf8(text).map_err(|_| bad("not UTF-8"))?;
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("does not end with a line feed"))?;
        let mut lines = body.split('\n');
        match lines.next() {
            Some(HEADER) => {}
            Some(l) if l.starts_with("l45-image-manifest ") => {
                return Err(bad(&format!(
                    "format {:?} is not supported (this device reads version {MANIFEST_VERSION})",
                    &l["l45-image-manifest ".len()..]
                )))
            }
            _ => return Err(bad(&format!("first line is not {HEADER:?}"))),
        }
        let mut field = |name: &str| -> Result<String, ImageError> {
            let line = lines
                .next()
                .ok_or_else(|| bad(&format!("field {name} is missing")))?;
            let value = line
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix(' '))
                .ok_or_else(|| bad(&format!("expected field {name}, found {line:?}")))?;
            Ok(value.to_string())
        };
        let kind = field("kind")?;
        let abi = field("abi-version")?;
        let target = field("target")?;
        let sha = field("sha256")?;
        let size = field("size")?;
        let built_at = field("built-at")?;
        let signer = field("signer")?;
        if let Some(extra) = lines.next() {
            return Err(bad(&format!("unexpected line {extra:?}")));
        }
        if !is_kind_name(&kind) {
            return Err(bad(&format!("kind {kind:?} is not [a-z][a-z0-9-]{{0,62}}")));
        }
        let abi_version = abi
            .parse::<u32>()
            .map_err(|_| bad(&format!("abi-version {abi:?} is not a number")))?;
        if !is_target(&target) {
            return Err(bad(&format!("target {target:?} is not a target name")));
        }
        if !is_lower_hex(&sha, 64) {
            return Err(bad("sha256 is not 64 lowercase hex digits"));
        }
        let size_n = size
            .parse::<u64>()
            .map_err(|_| bad(&format!("size {size:?} is not a number")))?;
        if !is_utc_time(&built_at) {
            return Err(bad(&format!(
                "built-at {built_at:?} is not YYYY-MM-DDTHH:MM:SSZ"
            )));
        }
        if !is_lower_hex(&signer, 16) {
            return Err(bad("signer is not a 16-digit lowercase hex key id"));
        }
        let m = Manifest {
            kind,
            abi_version,
            target,
            sha256_hex: sha,
            size: size_n,
            built_at,
            signer,
        };
        if m.render() != text {
            return Err(bad("not in canonical form (leading zeros or extra spaces)"));
        }
        Ok(m)
    }
}

/// A public key as devices and operators write it: `ed25519:<base64>` or
/// bare base64 of the 32 key bytes.
pub fn parse_public_key(text: &str) -> Result<[u8; 32], ImageError> {
    let b64 = text.trim();
    let b64 = b64.strip_prefix("ed25519:").unwrap_or(b64);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| ImageError::BadPublicKey(e.to_string()))?;
    let key: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| ImageError::BadPublicKey(format!("{} bytes, not 32", bytes.len())))?;
    VerifyingKey::from_bytes(&key).map_err(|e| ImageError::BadPublicKey(e.to_string()))?;
    Ok(key)
}

/// `ed25519:<base64>` of a public key.
pub fn format_public_key(key: &[u8; 32]) -> String {
    format!(
        "ed25519:{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// A signing key (the NCO's): 32 secret bytes.
pub struct SigningSecret(SigningKey);

impl SigningSecret {
    pub fn from_bytes(secret: &[u8; 32]) -> SigningSecret {
        SigningSecret(SigningKey::from_bytes(secret))
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    pub fn key_id(&self) -> String {
        key_id(&self.public_key())
    }

    /// Ed25519 signature over `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

/// One trusted signer of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedSigner {
    pub name: String,
    pub public_key: [u8; 32],
}

/// What a device checks, in this order (cheap and input-only first): size
/// limit, manifest syntax, the image's size and digest against the
/// manifest, the signature under the trusted signer the manifest names,
/// ABI version, target. Returns the manifest and the name of the signer
/// that vouched for it.
pub fn verify(
    image: &[u8],
    manifest: &[u8],
    signature: &[u8],
    trusted: &[TrustedSigner],
    size_limit: u64,
    target: Option<&str>,
) -> Result<(Manifest, String), ImageError> {
    let size = image.len() as u64;
    if size > size_limit {
        return Err(ImageError::TooLarge {
            size,
            limit: size_limit,
        });
    }
    let m = Manifest::parse(manifest)?;
    if m.size != size {
        return Err(ImageError::DigestMismatch(format!(
            "image is {size} bytes, manifest says {}",
            m.size
        )));
    }
    let digest = sha256_hex(image);
    if digest != m.sha256_hex {
        return Err(ImageError::DigestMismatch(format!(
            "image SHA-256 is {digest}, manifest says {}",
            m.sha256_hex
        )));
    }
    let signature: &[u8; 64] = signature
        .try_into()
        .map_err(|_| ImageError::SignatureLength(signature.len()))?;
    let signer = trusted
        .iter()
        .find(|t| key_id(&t.public_key) == m.signer)
        .ok_or_else(|| ImageError::UnknownSigner(m.signer.clone()))?;
    let key = VerifyingKey::from_bytes(&signer.public_key)
        .map_err(|_| ImageError::BadSignature(signer.name.clone()))?;
    key.verify_strict(manifest, &ed25519_dalek::Signature::from_bytes(signature))
        .map_err(|_| ImageError::BadSignature(signer.name.clone()))?;
    if m.abi_version != ABI_VERSION {
        return Err(ImageError::AbiUnsupported {
            got: m.abi_version,
            supported: ABI_VERSION,
        });
    }
    match target {
        None => return Err(ImageError::NoImageSupport(m.target.clone())),
        Some(t) if t != m.target => {
            return Err(ImageError::WrongTarget {
                got: m.target.clone(),
                wanted: t.to_string(),
            })
        }
        Some(_) => {}
    }
    Ok((m, signer.name.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(image: &[u8], secret: &SigningSecret) -> (Vec<u8>, [u8; 64]) {
        let m = Manifest {
            kind: "udp-xor-mask".into(),
            abi_version: ABI_VERSION,
            target: "userspace-x86_64".into(),
            sha256_hex: sha256_hex(image),
            size: image.len() as u64,
            built_at: "2026-12-06T03:40:00Z".into(),
            signer: secret.key_id(),
        };
        let text = m.render().into_bytes();
        let sig = secret.sign(&text);
        (text, sig)
    }

    fn trust(secret: &SigningSecret) -> Vec<TrustedSigner> {
        vec![TrustedSigner {
            name: "nco".into(),
            public_key: secret.public_key(),
        }]
    }

    #[test]
    fn a_signed_image_verifies_and_round_trips() {
        let secret = SigningSecret::from_bytes(&[7; 32]);
        let (text, sig) = signed(b"image", &secret);
        let (m, who) = verify(
            b"image",
            &text,
            &sig,
            &trust(&secret),
            1 << 20,
            Some("userspace-x86_64"),
        )
        .expect("verifies");
        assert_eq!(who, "nco");
        assert_eq!(m.render().as_bytes(), &text[..]);
    }

    #[test]
    fn every_bad_part_is_named() {
        let secret = SigningSecret::from_bytes(&[7; 32]);
        let other = SigningSecret::from_bytes(&[8; 32]);
        let (text, sig) = signed(b"image", &secret);
        let t = trust(&secret);
        let target = Some("userspace-x86_64");
        let check = |img: &[u8], text: &[u8], sig: &[u8], t: &[TrustedSigner], tg| {
            verify(img, text, sig, t, 1 << 20, tg).map(|_| ())
        };
        assert!(matches!(
            verify(b"image", &text, &sig, &t, 3, target),
            Err(ImageError::TooLarge { size: 5, limit: 3 })
        ));
        assert!(matches!(
            check(b"imagf", &text, &sig, &t, target),
            Err(ImageError::DigestMismatch(_))
        ));
        assert!(matches!(
            check(b"image", &text, &sig, &trust(&other), target),
            Err(ImageError::UnknownSigner(_))
        ));
        let mut bad = sig;
        bad[0] ^= 1;
        assert!(matches!(
            check(b"image", &text, &bad, &t, target),
            Err(ImageError::BadSignature(_))
        ));
        assert!(matches!(
            check(b"image", &text, &sig[..63], &t, target),
            Err(ImageError::SignatureLength(63))
        ));
        assert!(matches!(
            check(b"image", &text, &sig, &t, Some("kernel-6.1-x86_64")),
            Err(ImageError::WrongTarget { .. })
        ));
        assert!(matches!(
            check(b"image", &text, &sig, &t, None),
            Err(ImageError::NoImageSupport(_))
        ));
        let abi2 = String::from_utf8(text.clone())
            .expect("utf8")
            .replace("abi-version 1", "abi-version 2");
        let sig2 = secret.sign(abi2.as_bytes());
        assert!(matches!(
            check(b"image", abi2.as_bytes(), &sig2, &t, target),
            Err(ImageError::AbiUnsupported { got: 2, .. })
        ));
    }

    #[test]
    fn only_the_canonical_form_parses() {
        let secret = SigningSecret::from_bytes(&[7; 32]);
        let (text, _) = signed(b"image", &secret);
        let text = String::from_utf8(text).expect("utf8");
        assert!(Manifest::parse(text.as_bytes()).is_ok());
        for bad in [
            text.replace("size 5", "size 05"),
            text.replace("kind ", "kind  "),
            text.trim_end().to_string(),
            text.replace('\n', "\r\n"),
            format!("{text}extra 1\n"),
            text.replace("l45-image-manifest 1", "l45-image-manifest 2"),
            text.replace("Z\n", "+00:00\n"),
            text.replace("udp-xor-mask", "UDP"),
        ] {
            assert!(
                matches!(
                    Manifest::parse(bad.as_bytes()),
                    Err(ImageError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn public_keys_parse_in_both_forms() {
        let secret = SigningSecret::from_bytes(&[9; 32]);
        let pk = secret.public_key();
        let text = format_public_key(&pk);
        assert_eq!(parse_public_key(&text), Ok(pk));
        assert_eq!(parse_public_key(&text["ed25519:".len()..]), Ok(pk));
        assert!(parse_public_key("ed25519:AAAA").is_err());
        assert_eq!(key_id(&pk).len(), 16);
    }
}
