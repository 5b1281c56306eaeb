//! WAMP-SCRAM crypto, pure functions (SCRAM-SHA-256 as WAMP uses it).
//!
//! The router stores only a principal's `stored-key` and `server-key`,
//! never the password:
//!
//! ```text
//! SaltedPassword  = KDF(password, salt)
//! ClientKey       = HMAC(SaltedPassword, "Client Key")
//! StoredKey       = SHA-256(ClientKey)
//! ServerKey       = HMAC(SaltedPassword, "Server Key")
//! AuthMessage     = "n=<authid>,r=<client nonce>,r=<nonce>,s=<salt>,i=<iterations>,c=<cbind>,r=<nonce>"
//! ClientProof     = ClientKey XOR HMAC(StoredKey, AuthMessage)   (AUTHENTICATE)
//! ServerSignature = HMAC(ServerKey, AuthMessage)                 (WELCOME)
//! ```
//!
//! The router recovers `ClientKey` from the proof and checks that its hash
//! is `StoredKey`. The KDF is `argon2id-13` (Argon2id v1.3, parallelism 1,
//! 32 bytes; autobahn keys HMAC with the hash's unpadded base64 text, as
//! argon2's encoded form writes it, and so does this) or `pbkdf2`
//! (PBKDF2-HMAC-SHA256, 32 bytes). Nonces and the salt travel in base64.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, STANDARD_NO_PAD as B64_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Largest Argon2 memory (KiB) accepted from a config or authenticator:
/// 1 GiB, so a typo cannot exhaust the host when credentials are derived.
pub const MAX_MEMORY_KIB: u32 = 1 << 20;
/// Largest iteration (time cost) count accepted.
pub const MAX_ITERATIONS: u32 = crate::auth::MAX_ITERATIONS;

/// A key derivation function and its cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    /// Argon2id v1.3, `iterations` passes over `memory` KiB.
    Argon2id13 { iterations: u32, memory: u32 },
    /// PBKDF2-HMAC-SHA256.
    Pbkdf2 { iterations: u32 },
}

impl Kdf {
    /// Crossbar.io's and autobahn's name (`kdf` in the challenge).
    pub fn name(&self) -> &'static str {
        match self {
            Kdf::Argon2id13 { .. } => "argon2id-13",
            Kdf::Pbkdf2 { .. } => "pbkdf2",
        }
    }

    /// The iteration count (`i=` in the AuthMessage).
    pub fn iterations(&self) -> u32 {
        match *self {
            Kdf::Argon2id13 { iterations, .. } | Kdf::Pbkdf2 { iterations } => iterations,
        }
    }

    /// Argon2's memory in KiB; `None` for PBKDF2.
    pub fn memory(&self) -> Option<u32> {
        match *self {
            Kdf::Argon2id13 { memory, .. } => Some(memory),
            Kdf::Pbkdf2 { .. } => None,
        }
    }

    /// The KDF named `name` with these costs.
    ///
    /// # Errors
    /// An unknown name, or a cost out of range, in words for the user.
    pub fn parse(name: &str, iterations: u32, memory: Option<u32>) -> Result<Kdf, String> {
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(format!("iterations must be between 1 and {MAX_ITERATIONS}"));
        }
        match name {
            "argon2id-13" => {
                let Some(memory) = memory else {
                    return Err("argon2id-13 needs \"memory\" (KiB, e.g. 512)".into());
                };
                if !(8..=MAX_MEMORY_KIB).contains(&memory) {
                    return Err(format!("memory must be between 8 and {MAX_MEMORY_KIB} KiB"));
                }
                Ok(Kdf::Argon2id13 { iterations, memory })
            }
            "pbkdf2" => Ok(Kdf::Pbkdf2 { iterations }),
            other => Err(format!(
                "unknown kdf {other:?}: WAMP-SCRAM's are \"argon2id-13\" and \"pbkdf2\""
            )),
        }
    }
}

/// What the router keeps of a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub kdf: Kdf,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

/// HMAC-SHA256.
pub fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length.
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `KDF(password, salt)`, as the client computes it.
///
/// # Errors
/// Argon2 refuses the salt (shorter than 8 bytes) or the costs.
pub fn salted_password(password: &[u8], salt: &[u8], kdf: Kdf) -> Result<Vec<u8>, String> {
    match kdf {
        Kdf::Argon2id13 { iterations, memory } => {
            let params = argon2::Params::new(memory, iterations, 1, Some(32))
                .map_err(|e| format!("argon2 parameters: {e}"))?;
            let a =
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            let mut out = [0u8; 32];
            a.hash_password_into(password, salt, &mut out)
                .map_err(|e| format!("argon2: {e} (the salt must be at least 8 bytes)"))?;
            Ok(B64_NO_PAD.encode(out).into_bytes())
        }
        Kdf::Pbkdf2 { iterations } => {
            let mut out = [0u8; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
            Ok(out.to_vec())
        }
    }
}

/// The stored form of `password`.
///
/// # Errors
/// As [`salted_password`].
pub fn derive(password: &[u8], salt: &[u8], kdf: Kdf) -> Result<Credential, String> {
    let salted = salted_password(password, salt, kdf)?;
    let client_key = hmac(&salted, b"Client Key");
    Ok(Credential {
        kdf,
        salt: salt.to_vec(),
        stored_key: Sha256::digest(client_key).into(),
        server_key: hmac(&salted, b"Server Key"),
    })
}

/// The authid as the AuthMessage carries it: SASLprep'd (RFC 4013), as
/// autobahn prepares it.
///
/// # Errors
/// The authid has characters SASLprep prohibits.
pub fn prepared_authid(authid: &str) -> Result<String, String> {
    stringprep::saslprep(authid)
        .map(std::borrow::Cow::into_owned)
        .map_err(|e| format!("the authid is not allowed by SASLprep (RFC 4013): {e}"))
}

/// The AuthMessage both sides sign. Nonces and salt in base64; no channel
/// binding (`c=` empty).
pub fn auth_message(
    authid: &str,
    client_nonce: &str,
    nonce: &str,
    salt: &str,
    iterations: u32,
) -> String {
    format!("n={authid},r={client_nonce},r={nonce},s={salt},i={iterations},c=,r={nonce}")
}

/// Check the client's proof (base64) in constant time; the server
/// signature (base64) for WELCOME when it holds.
pub fn verify(
    stored_key: &[u8; 32],
    server_key: &[u8; 32],
    message: &str,
    proof: &str,
) -> Option<String> {
    let proof = B64.decode(proof.trim()).ok()?;
    if proof.len() != 32 {
        return None;
    }
    let signature = hmac(stored_key, message.as_bytes());
    let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
    let recovered: [u8; 32] = Sha256::digest(&client_key).into();
    bool::from(recovered.ct_eq(stored_key))
        .then(|| B64.encode(hmac(server_key, message.as_bytes())))
}

/// The client's side, for tests and tools: the proof for `message`.
pub fn client_proof(salted: &[u8], message: &str) -> String {
    let client_key = hmac(salted, b"Client Key");
    let stored: [u8; 32] = Sha256::digest(client_key).into();
    let signature = hmac(&stored, message.as_bytes());
    B64.encode(
        client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect::<Vec<u8>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The credential of Crossbar.io's SCRAM example as autobahn's
    /// `derive_scram_credential("foobar@example.com", "secret123")`
    /// computes it, with the salt it names.
    #[test]
    fn argon2id_credentials_match_autobahns() {
        let salt = hex::decode("3bc3ca01dd1d501ca1c22e1c5d7d16fe").unwrap();
        let c = derive(
            b"secret123",
            &salt,
            Kdf::Argon2id13 {
                iterations: 4096,
                memory: 512,
            },
        )
        .unwrap();
        assert_eq!(
            hex::encode(c.stored_key),
            "e796c2f0a51770303ee4616bc630a66774d51a55003154aff2a54ec7c4ac0e38"
        );
        assert_eq!(
            hex::encode(c.server_key),
            "8de7864c316f3c2356fd76cfdab696db55bc70e680fe5180e2f731e2345acca2"
        );
    }

    #[test]
    fn a_proof_verifies_once_and_only_with_the_right_password() {
        for kdf in [
            Kdf::Argon2id13 {
                iterations: 2,
                memory: 64,
            },
            Kdf::Pbkdf2 { iterations: 100 },
        ] {
            let salt = b"saltsaltsalt";
            let c = derive(b"pw", salt, kdf).unwrap();
            let m = auth_message(
                "joe",
                "Y24=",
                "Y24=c2Vy",
                &B64.encode(salt),
                kdf.iterations(),
            );
            let proof = client_proof(&salted_password(b"pw", salt, kdf).unwrap(), &m);
            let sig = verify(&c.stored_key, &c.server_key, &m, &proof).expect("right password");
            assert_eq!(sig, B64.encode(hmac(&c.server_key, m.as_bytes())));
            let wrong = client_proof(&salted_password(b"pW", salt, kdf).unwrap(), &m);
            assert!(verify(&c.stored_key, &c.server_key, &m, &wrong).is_none());
            // Another message (another nonce): the old proof is worthless.
            let other = auth_message(
                "joe",
                "Y24=",
                "Y24=b3Ro",
                &B64.encode(salt),
                kdf.iterations(),
            );
            assert!(verify(&c.stored_key, &c.server_key, &other, &proof).is_none());
            assert!(verify(&c.stored_key, &c.server_key, &m, "not base64!").is_none());
            assert!(verify(&c.stored_key, &c.server_key, &m, "AAAA").is_none());
        }
    }

    #[test]
    fn authids_are_saslprepped() {
        assert_eq!(prepared_authid("joe").unwrap(), "joe");
        // A soft hyphen goes, a non-ASCII space becomes a space.
        assert_eq!(prepared_authid("I\u{00AD}X").unwrap(), "IX");
        assert_eq!(prepared_authid("a\u{2000}b").unwrap(), "a b");
        assert!(prepared_authid("a\u{0007}b").is_err());
    }

    #[test]
    fn kdf_names_and_costs_are_checked() {
        assert_eq!(
            Kdf::parse("argon2id-13", 4096, Some(512)),
            Ok(Kdf::Argon2id13 {
                iterations: 4096,
                memory: 512
            })
        );
        assert_eq!(
            Kdf::parse("pbkdf2", 1000, None),
            Ok(Kdf::Pbkdf2 { iterations: 1000 })
        );
        assert!(
            Kdf::parse("argon2id-13", 4096, None)
                .unwrap_err()
                .contains("memory")
        );
        assert!(
            Kdf::parse("scrypt", 1, None)
                .unwrap_err()
                .contains("unknown kdf \"scrypt\"")
        );
        assert!(
            Kdf::parse("pbkdf2", 0, None)
                .unwrap_err()
                .contains("iterations")
        );
        assert!(
            Kdf::parse("argon2id-13", 1, Some(1 << 30))
                .unwrap_err()
                .contains("memory")
        );
    }
}
