//! Authentication crypto, pure functions: WAMP-CRA and WAMP-cryptosign.
//!
//! WAMP-CRA: the signature is `base64(HMAC-SHA256(key, challenge))`, where
//! `key` is the secret's UTF-8 text, or for a salted secret the base64 text
//! of `PBKDF2-HMAC-SHA256(secret, salt, iterations, keylen)` (autobahn's
//! `derive_key`). Cryptosign: the client signs the 32 challenge bytes with
//! Ed25519 and sends the 64-byte signature in hex, optionally followed by
//! the challenge itself. Comparisons are constant time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Largest PBKDF2 iteration count accepted from a config or authenticator,
/// so a typo cannot make every login burn seconds of CPU.
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// The WAMP-CRA key for a salted secret: base64 of PBKDF2-HMAC-SHA256.
pub fn derive_key(secret: &str, salt: &str, iterations: u32, keylen: usize) -> String {
    let mut out = vec![0u8; keylen.clamp(1, 1024)];
    pbkdf2::pbkdf2_hmac::<Sha256>(
        secret.as_bytes(),
        salt.as_bytes(),
        iterations.clamp(1, MAX_ITERATIONS),
        &mut out,
    );
    B64.encode(out)
}

/// `base64(HMAC-SHA256(key, challenge))`.
pub fn cra_sign(key: &[u8], challenge: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(challenge.as_bytes());
    B64.encode(mac.finalize().into_bytes())
}

/// Check a WAMP-CRA signature in constant time.
pub fn cra_verify(key: &[u8], challenge: &str, signature: &str) -> bool {
    let expected = cra_sign(key, challenge);
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(signature.trim().as_bytes()))
}

/// Why a cryptosign signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptosignError {
    /// The public key is not 64 hex characters of a valid Ed25519 key.
    #[error("the public key must be 32 bytes of hex (64 characters) and a valid Ed25519 key")]
    BadKey,
    /// The signature is not 128 (or 192) hex characters.
    #[error("the signature must be hex of 64 bytes, optionally followed by the 32-byte challenge")]
    BadSignatureFormat,
    /// The appended challenge differs from the one sent.
    #[error("the signature carries a different challenge than the one sent")]
    ChallengeMismatch,
    /// Ed25519 verification failed.
    #[error("the signature does not verify against the public key")]
    Invalid,
}

/// Parse a hex Ed25519 public key.
///
/// # Errors
/// [`CryptosignError::BadKey`].
pub fn parse_pubkey(hex_key: &str) -> Result<VerifyingKey, CryptosignError> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(CryptosignError::BadKey)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| CryptosignError::BadKey)
}

/// Verify a cryptosign AUTHENTICATE signature for `challenge`.
///
/// # Errors
/// [`CryptosignError`] saying which check failed.
pub fn cryptosign_verify(
    pubkey_hex: &str,
    challenge: &[u8; 32],
    signature_hex: &str,
) -> Result<(), CryptosignError> {
    let key = parse_pubkey(pubkey_hex)?;
    let raw = hex::decode(signature_hex.trim()).map_err(|_| CryptosignError::BadSignatureFormat)?;
    let (sig, appended) = match raw.len() {
        64 => (&raw[..], None),
        96 => (&raw[..64], Some(&raw[64..])),
        _ => return Err(CryptosignError::BadSignatureFormat),
    };
    if let Some(a) = appended
        && !bool::from(a.ct_eq(challenge))
    {
        return Err(CryptosignError::ChallengeMismatch);
    }
    let sig = Signature::from_slice(sig).map_err(|_| CryptosignError::BadSignatureFormat)?;
    key.verify(challenge, &sig)
        .map_err(|_| CryptosignError::Invalid)
}

/// Sign a cryptosign challenge with a 32-byte seed (for clients and tests):
/// hex of the signature followed by the challenge.
pub fn cryptosign_sign(seed: &[u8; 32], challenge: &[u8; 32]) -> String {
    let key = SigningKey::from_bytes(seed);
    let sig = key.sign(challenge);
    let mut out = hex::encode(sig.to_bytes());
    out.push_str(&hex::encode(challenge));
    out
}

/// The hex public key of a 32-byte seed.
pub fn cryptosign_pubkey(seed: &[u8; 32]) -> String {
    hex::encode(SigningKey::from_bytes(seed).verifying_key().to_bytes())
}

/// `n` random bytes.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    rand::random()
}

/// A random nonce for WAMP-CRA challenges (base64 of 16 random bytes).
pub fn nonce() -> String {
    B64.encode(random_bytes::<16>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wampcra_matches_autobahn() {
        // Vectors computed with autobahn-python 26.10.2 (derive_key, compute_wcs).
        let key = derive_key("secret1", "salt123", 100, 16);
        assert_eq!(key, "prq7+YkJ1/KlW1X0YczMHw==");
        let sig = cra_sign(key.as_bytes(), r#"{"nonce":"x"}"#);
        assert_eq!(sig, "vU28UDOAyEbGBr7k9BLd7x3aX3x3ZUJs8t/94mwh5mc=");
        assert!(cra_verify(key.as_bytes(), r#"{"nonce":"x"}"#, &sig));
        assert!(!cra_verify(key.as_bytes(), r#"{"nonce":"y"}"#, &sig));
        assert!(!cra_verify(b"other", r#"{"nonce":"x"}"#, &sig));
    }

    #[test]
    fn cryptosign_round_trip_and_failures() {
        let seed = [7u8; 32];
        let challenge = [9u8; 32];
        let pk = cryptosign_pubkey(&seed);
        let sig = cryptosign_sign(&seed, &challenge);
        assert_eq!(cryptosign_verify(&pk, &challenge, &sig), Ok(()));
        assert_eq!(
            cryptosign_verify(&pk, &challenge, &sig[..128]),
            Ok(()),
            "without the appended challenge"
        );
        assert_eq!(
            cryptosign_verify(&pk, &[1u8; 32], &sig),
            Err(CryptosignError::ChallengeMismatch)
        );
        assert_eq!(
            cryptosign_verify(&pk, &[1u8; 32], &sig[..128]),
            Err(CryptosignError::Invalid)
        );
        assert_eq!(
            cryptosign_verify("zz", &challenge, &sig),
            Err(CryptosignError::BadKey)
        );
        assert_eq!(
            cryptosign_verify(&pk, &challenge, "abcd"),
            Err(CryptosignError::BadSignatureFormat)
        );
        let other = cryptosign_pubkey(&[8u8; 32]);
        assert_eq!(
            cryptosign_verify(&other, &challenge, &sig[..128]),
            Err(CryptosignError::Invalid)
        );
    }
}
