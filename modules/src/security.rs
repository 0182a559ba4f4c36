//! Challenge-response between the NCO and a module (AES-256-GCM).
//!
//! The NCO sends a fresh random 12-byte nonce and
//! `AES-256-GCM(key, nonce, challenge)` with the module id in the associated
//! data. The module decrypts, then answers with its own fresh nonce and
//! `AES-256-GCM(key, nonce', challenge ‖ id)`, again binding the id in the
//! associated data. The prototype's CBC with reused IV state is not repeated.
//! Both directions live here so the NCO and the taps share one definition.
//! The AES-GCM code is behind the default-on `security` feature: the kernel
//! tap builds these sources without it and answers with the kernel crypto
//! API (same wire format).

#[cfg(feature = "security")]
use aes_gcm::aead::AeadInOut;
#[cfg(feature = "security")]
use aes_gcm::{Aes256Gcm, KeyInit};

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// Random challenge bytes chosen by the NCO.
pub const CHALLENGE_LEN: usize = 16;
/// Length of a clearance code (the clearance filter's parameter).
pub const CLEARANCE_LEN: usize = 32;
/// NCO → module ciphertext: challenge + GCM tag.
pub const CHALLENGE_CT_LEN: usize = CHALLENGE_LEN + TAG_LEN;
/// Module → NCO ciphertext: challenge + id + GCM tag.
pub const RESPONSE_CT_LEN: usize = CHALLENGE_LEN + 4 + TAG_LEN;

#[cfg(feature = "security")]
const AAD_CHALLENGE: &[u8; 13] = b"l45-challenge";
#[cfg(feature = "security")]
const AAD_RESPONSE: &[u8; 12] = b"l45-response";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeError {
    BadKey,
    BadLength,
    /// Authentication failed: wrong key, wrong module id or tampering.
    NotAuthentic,
}

impl core::fmt::Display for ChallengeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ChallengeError::BadKey => "key is not 32 bytes",
            ChallengeError::BadLength => "nonce or ciphertext has the wrong length",
            ChallengeError::NotAuthentic => "challenge does not authenticate",
        })
    }
}

#[cfg(feature = "security")]
fn cipher(key: &[u8]) -> Result<Aes256Gcm, ChallengeError> {
    Aes256Gcm::new_from_slice(key).map_err(|_| ChallengeError::BadKey)
}

#[cfg(feature = "security")]
fn aad<const N: usize>(label: &[u8; N], id: u32) -> [u8; 17] {
    let mut a = [0u8; 17];
    a[..N].copy_from_slice(label);
    a[N..N + 4].copy_from_slice(&id.to_be_bytes());
    a
}

#[cfg(feature = "security")]
fn aad_len<const N: usize>(_: &[u8; N]) -> usize {
    N + 4
}

#[cfg(feature = "security")]
fn seal(
    key: &[u8],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
) -> Result<[u8; TAG_LEN], ChallengeError> {
    let c = cipher(key)?;
    let tag = c
        .encrypt_inout_detached(nonce.into(), aad, buf.into())
        .map_err(|_| ChallengeError::BadLength)?;
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&tag);
    Ok(out)
}

#[cfg(feature = "security")]
fn open(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    ct: &[u8],
    buf: &mut [u8],
) -> Result<(), ChallengeError> {
    let c = cipher(key)?;
    let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| ChallengeError::BadLength)?;
    if ct.len() != buf.len() + TAG_LEN {
        return Err(ChallengeError::BadLength);
    }
    buf.copy_from_slice(&ct[..buf.len()]);
    let tag: &[u8; TAG_LEN] = ct[buf.len()..]
        .try_into()
        .map_err(|_| ChallengeError::BadLength)?;
    c.decrypt_inout_detached(nonce.into(), aad, buf.into(), tag.into())
        .map_err(|_| ChallengeError::NotAuthentic)
}

#[cfg(feature = "security")]
/// NCO side: the ciphertext for `challenge` sent to module `id`.
pub fn make_challenge(
    key: &[u8],
    id: u32,
    nonce: &[u8; NONCE_LEN],
    challenge: &[u8; CHALLENGE_LEN],
) -> Result<[u8; CHALLENGE_CT_LEN], ChallengeError> {
    let mut out = [0u8; CHALLENGE_CT_LEN];
    out[..CHALLENGE_LEN].copy_from_slice(challenge);
    let a = aad(AAD_CHALLENGE, id);
    let tag = seal(
        key,
        nonce,
        &a[..aad_len(AAD_CHALLENGE)],
        &mut out[..CHALLENGE_LEN],
    )?;
    out[CHALLENGE_LEN..].copy_from_slice(&tag);
    Ok(out)
}

#[cfg(feature = "security")]
/// Module side (`sec_respond`): answers a challenge with a fresh nonce the
/// tap supplies.
pub fn respond(
    key: &[u8],
    id: u32,
    nonce: &[u8],
    ciphertext: &[u8],
    fresh_nonce: &[u8; NONCE_LEN],
) -> Result<[u8; RESPONSE_CT_LEN], ChallengeError> {
    let mut challenge = [0u8; CHALLENGE_LEN];
    let a = aad(AAD_CHALLENGE, id);
    open(
        key,
        nonce,
        &a[..aad_len(AAD_CHALLENGE)],
        ciphertext,
        &mut challenge,
    )?;
    let mut out = [0u8; RESPONSE_CT_LEN];
    out[..CHALLENGE_LEN].copy_from_slice(&challenge);
    out[CHALLENGE_LEN..CHALLENGE_LEN + 4].copy_from_slice(&id.to_be_bytes());
    let a = aad(AAD_RESPONSE, id);
    let tag = seal(
        key,
        fresh_nonce,
        &a[..aad_len(AAD_RESPONSE)],
        &mut out[..CHALLENGE_LEN + 4],
    )?;
    out[CHALLENGE_LEN + 4..].copy_from_slice(&tag);
    Ok(out)
}

#[cfg(feature = "security")]
/// NCO side: checks a module's answer to `challenge`.
pub fn verify_response(
    key: &[u8],
    id: u32,
    challenge: &[u8; CHALLENGE_LEN],
    nonce: &[u8],
    ciphertext: &[u8],
) -> Result<(), ChallengeError> {
    let mut plain = [0u8; CHALLENGE_LEN + 4];
    let a = aad(AAD_RESPONSE, id);
    open(
        key,
        nonce,
        &a[..aad_len(AAD_RESPONSE)],
        ciphertext,
        &mut plain,
    )?;
    if plain[..CHALLENGE_LEN] != challenge[..] || plain[CHALLENGE_LEN..] != id.to_be_bytes() {
        return Err(ChallengeError::NotAuthentic);
    }
    Ok(())
}

#[cfg(all(test, feature = "security"))]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn challenge_round_trip_binds_key_and_id() {
        let nonce = [1u8; 12];
        let challenge = [9u8; 16];
        let ct = make_challenge(&KEY, 42, &nonce, &challenge).unwrap();
        let answer = respond(&KEY, 42, &nonce, &ct, &[2u8; 12]).unwrap();
        assert_eq!(
            verify_response(&KEY, 42, &challenge, &[2u8; 12], &answer),
            Ok(())
        );
        // Wrong id, key, nonce or a flipped bit: refused.
        assert_eq!(
            respond(&KEY, 43, &nonce, &ct, &[2u8; 12]),
            Err(ChallengeError::NotAuthentic)
        );
        assert_eq!(
            respond(&[8u8; 32], 42, &nonce, &ct, &[2u8; 12]),
            Err(ChallengeError::NotAuthentic)
        );
        assert_eq!(
            verify_response(&KEY, 42, &challenge, &[3u8; 12], &answer),
            Err(ChallengeError::NotAuthentic)
        );
        let mut bad = answer;
        bad[0] ^= 1;
        assert_eq!(
            verify_response(&KEY, 42, &challenge, &[2u8; 12], &bad),
            Err(ChallengeError::NotAuthentic)
        );
        assert_eq!(
            respond(&KEY, 42, &nonce[..11], &ct, &[2u8; 12]),
            Err(ChallengeError::BadLength)
        );
        assert_eq!(
            respond(&KEY, 42, &nonce, &ct[..31], &[2u8; 12]),
            Err(ChallengeError::BadLength)
        );
        assert_eq!(
            respond(&KEY[..31], 42, &nonce, &ct, &[2u8; 12]),
            Err(ChallengeError::BadKey)
        );
    }
}
