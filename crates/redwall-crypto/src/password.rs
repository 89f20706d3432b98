//! Password hashing: argon2id for everything we write, bcrypt accepted on read.
//!
//! Node-RED's `adminAuth` stores bcrypt hashes (bcryptjs, usually `$2a$08$`
//! or `$2b$08$`). Those are verified so existing users can log in, and are
//! reported as needing a rehash so the caller replaces them with argon2id on
//! the first successful login.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use rand::RngCore;

use crate::CryptoError;

/// Salt length in bytes for new hashes (the PHC string format recommends 16).
const SALT_LEN: usize = 16;

/// Password used to build the dummy hash for [`PasswordHasher::dummy_verify`].
/// Its value is irrelevant; only the cost of verifying against it matters.
const DUMMY_PASSWORD: &str = "redwall-dummy-password-for-timing-equalisation";

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Argon2Params {
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Number of passes over memory.
    pub iterations: u32,
    /// Degree of parallelism (lanes).
    pub parallelism: u32,
}

impl Default for Argon2Params {
    /// The OWASP Password Storage Cheat Sheet's first recommendation for
    /// argon2id: 19 MiB of memory, 2 iterations, 1 lane.
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl Argon2Params {
    /// Converts to the argon2 crate's type, which validates the values.
    fn to_argon2(self) -> Result<Params, CryptoError> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None).map_err(|e| {
            CryptoError::InvalidParams(format!(
                "memory_kib={}, iterations={}, parallelism={}: {e} \
                 (need iterations >= 1, parallelism >= 1 and memory_kib >= 8 * parallelism)",
                self.memory_kib, self.iterations, self.parallelism
            ))
        })
    }
}

/// Outcome of checking a password against a stored hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    /// Wrong password, or a stored hash we cannot parse.
    Invalid,
    /// The password matches.
    Valid {
        /// The stored hash uses another algorithm or other parameters than
        /// the hasher's; the caller should store a fresh [`PasswordHasher::hash`].
        needs_rehash: bool,
    },
}

impl Verification {
    /// True for [`Verification::Valid`], whatever `needs_rehash` says.
    pub fn is_valid(&self) -> bool {
        matches!(self, Verification::Valid { .. })
    }
}

/// Hashes and verifies passwords with fixed argon2id parameters.
///
/// Cheap to clone: it holds the parameters and one precomputed dummy hash.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Argon2Params,
    argon2_params: Params,
    /// A hash of [`DUMMY_PASSWORD`] made with `params`, verified by
    /// [`PasswordHasher::dummy_verify`].
    dummy_hash: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// Creates a hasher, rejecting parameters argon2 does not accept.
    ///
    /// This computes one hash (for [`PasswordHasher::dummy_verify`]), so it
    /// costs as much as a login; create it once at start-up.
    pub fn new(params: Argon2Params) -> Result<Self, CryptoError> {
        let argon2_params = params.to_argon2()?;
        let mut hasher = Self {
            params,
            argon2_params,
            dummy_hash: String::new(),
        };
        hasher.dummy_hash = hasher.hash(DUMMY_PASSWORD)?;
        Ok(hasher)
    }

    /// The parameters new hashes are made with.
    pub fn params(&self) -> Argon2Params {
        self.params
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            self.argon2_params.clone(),
        )
    }

    /// Hashes a password with argon2id and a fresh random 16-byte salt,
    /// returning a PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`).
    pub fn hash(&self, password: &str) -> Result<String, CryptoError> {
        let mut salt_bytes = [0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt_bytes);
        let salt = SaltString::encode_b64(&salt_bytes)
            .map_err(|e| CryptoError::Hash(format!("salt encoding: {e}")))?;
        let hash = self
            .argon2()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| CryptoError::Hash(e.to_string()))?;
        Ok(hash.to_string())
    }

    /// Checks `password` against a stored hash.
    ///
    /// * argon2 PHC strings (argon2id, argon2i, argon2d) are verified with
    ///   the parameters they record; `needs_rehash` is set when those differ
    ///   from this hasher's or the algorithm/version is not argon2id v19.
    /// * bcrypt hashes (`$2a$`, `$2b$`, `$2y$`) are verified and always
    ///   report `needs_rehash: true`.
    /// * Anything else, including malformed input, is [`Verification::Invalid`].
    pub fn verify(&self, password: &str, stored: &str) -> Verification {
        if is_bcrypt_hash(stored) {
            // bcrypt (like bcryptjs) only uses the first 72 bytes of the
            // password; `bcrypt::verify` truncates the same way.
            return match bcrypt::verify(password, stored) {
                Ok(true) => Verification::Valid { needs_rehash: true },
                _ => Verification::Invalid,
            };
        }
        let Ok(parsed) = PasswordHash::new(stored) else {
            return Verification::Invalid;
        };
        // Only argon2 PHC strings: the argon2 verifier would reject other
        // identifiers anyway, but being explicit keeps scrypt/pbkdf2 strings
        // from ever reaching it.
        let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
            return Verification::Invalid;
        };
        // The verifier recomputes the hash with the algorithm, version,
        // parameters and salt recorded in `parsed`, not with ours.
        if self
            .argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_err()
        {
            return Verification::Invalid;
        }
        Verification::Valid {
            needs_rehash: self.argon2_needs_rehash(algorithm, &parsed),
        }
    }

    fn argon2_needs_rehash(&self, algorithm: Algorithm, parsed: &PasswordHash<'_>) -> bool {
        if algorithm != Algorithm::Argon2id {
            return true;
        }
        if parsed.version != Some(Version::V0x13.into()) {
            return true;
        }
        let Ok(stored) = Params::try_from(parsed) else {
            return true;
        };
        let output_len = parsed.hash.map(|h| h.len());
        stored.m_cost() != self.params.memory_kib
            || stored.t_cost() != self.params.iterations
            || stored.p_cost() != self.params.parallelism
            || output_len != Some(Params::DEFAULT_OUTPUT_LEN)
    }

    /// Spends the time of one argon2id verification with this hasher's
    /// parameters and discards the result.
    ///
    /// Call it when a login names an unknown user, so that the response
    /// takes as long as for a known user with a wrong password and does not
    /// reveal which accounts exist.
    pub fn dummy_verify(&self, password: &str) {
        let outcome = self.verify(password, &self.dummy_hash);
        // Keep the optimiser from reasoning the work away.
        std::hint::black_box(outcome);
    }
}

/// True when `s` has the shape of a bcrypt hash as Node-RED stores them:
/// `$2a$`, `$2b$` or `$2y$`, a two-digit cost, `$`, then 53 characters of
/// bcrypt's base64 alphabet (22 for the salt, 31 for the hash).
pub fn is_bcrypt_hash(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 60 {
        return false;
    }
    let version_ok = matches!(&b[..4], b"$2a$" | b"$2b$" | b"$2y$");
    let cost_ok = b[4].is_ascii_digit() && b[5].is_ascii_digit() && b[6] == b'$';
    let body_ok = b[7..]
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'/');
    version_ok && cost_ok && body_ok
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// Cheap parameters so the test suite stays fast.
    const CHEAP: Argon2Params = Argon2Params {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
    };

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(CHEAP).unwrap()
    }

    #[test]
    fn default_params_are_owasp_argon2id() {
        let p = Argon2Params::default();
        assert_eq!((p.memory_kib, p.iterations, p.parallelism), (19_456, 2, 1));
    }

    #[test]
    fn default_params_hash_and_verify() {
        let hasher = PasswordHasher::new(Argon2Params::default()).unwrap();
        let hash = hasher.hash("correct horse").unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert_eq!(
            hasher.verify("correct horse", &hash),
            Verification::Valid {
                needs_rehash: false
            }
        );
        assert_eq!(hasher.verify("wrong horse", &hash), Verification::Invalid);
    }

    #[test]
    fn right_password_verifies_wrong_does_not() {
        let h = cheap();
        let hash = h.hash("s3cret").unwrap();
        assert_eq!(
            h.verify("s3cret", &hash),
            Verification::Valid {
                needs_rehash: false
            }
        );
        assert_eq!(h.verify("s3cret ", &hash), Verification::Invalid);
        assert_eq!(h.verify("", &hash), Verification::Invalid);
    }

    #[test]
    fn salts_are_random() {
        let h = cheap();
        let a = h.hash("same").unwrap();
        let b = h.hash("same").unwrap();
        assert_ne!(a, b);
        let salt = PasswordHash::new(&a).unwrap().salt.unwrap();
        // 16 bytes in unpadded base64 is 22 characters.
        assert_eq!(salt.as_str().len(), 22);
    }

    #[test]
    fn changed_params_need_rehash() {
        let old = cheap();
        let hash = old.hash("pw").unwrap();
        for params in [
            Argon2Params {
                memory_kib: 512,
                ..CHEAP
            },
            Argon2Params {
                iterations: 2,
                ..CHEAP
            },
            Argon2Params {
                memory_kib: 256,
                parallelism: 2,
                ..CHEAP
            },
        ] {
            let new = PasswordHasher::new(params).unwrap();
            assert_eq!(
                new.verify("pw", &hash),
                Verification::Valid { needs_rehash: true },
                "{params:?}"
            );
            assert_eq!(new.verify("nope", &hash), Verification::Invalid);
        }
    }

    #[test]
    fn other_argon2_variants_verify_but_need_rehash() {
        let params = CHEAP.to_argon2().unwrap();
        let salt = SaltString::encode_b64(&[9u8; 16]).unwrap();
        for alg in [Algorithm::Argon2i, Algorithm::Argon2d] {
            let hash = Argon2::new(alg, Version::V0x13, params.clone())
                .hash_password(b"pw", &salt)
                .unwrap()
                .to_string();
            assert_eq!(
                cheap().verify("pw", &hash),
                Verification::Valid { needs_rehash: true }
            );
            assert_eq!(cheap().verify("px", &hash), Verification::Invalid);
        }
    }

    #[test]
    fn invalid_params_are_rejected_with_a_message() {
        for bad in [
            Argon2Params {
                memory_kib: 256,
                iterations: 0,
                parallelism: 1,
            },
            Argon2Params {
                memory_kib: 256,
                iterations: 1,
                parallelism: 0,
            },
            Argon2Params {
                memory_kib: 4,
                iterations: 1,
                parallelism: 1,
            },
        ] {
            let err = PasswordHasher::new(bad).unwrap_err();
            assert!(matches!(err, CryptoError::InvalidParams(_)));
            assert!(err.to_string().contains("memory_kib="), "{err}");
        }
    }

    #[test]
    fn bcrypt_2a_as_bcryptjs_writes_is_accepted_with_rehash() {
        let parts = bcrypt::hash_with_result("node-red-pw", 4).unwrap();
        let hash = parts.format_for_version(bcrypt::Version::TwoA);
        assert!(hash.starts_with("$2a$04$"));
        assert!(is_bcrypt_hash(&hash));
        let h = cheap();
        assert_eq!(
            h.verify("node-red-pw", &hash),
            Verification::Valid { needs_rehash: true }
        );
        assert_eq!(h.verify("node-red-pX", &hash), Verification::Invalid);
    }

    #[test]
    fn bcrypt_2y_is_accepted() {
        let parts = bcrypt::hash_with_result("pw", 4).unwrap();
        let hash = parts.format_for_version(bcrypt::Version::TwoY);
        assert!(hash.starts_with("$2y$04$"));
        assert_eq!(
            cheap().verify("pw", &hash),
            Verification::Valid { needs_rehash: true }
        );
    }

    /// Literal cost-8 hashes of "password": the first is the example in
    /// Node-RED's default `settings.js` (made by bcryptjs), the second was
    /// made with the bcrypt crate as `$2b$`.
    #[test]
    fn literal_bcrypt_cost_8_hashes_verify() {
        let h = cheap();
        for hash in [
            "$2a$08$zZWtXTja0fB1pzD4sHCMyOCMYz2Z6dNbM6tl8sJogENOMcxWV9DN.",
            "$2b$08$SYl/I6KHi1ejjtcLPpVUmege2OjuY8m3Xs1Tkm3MY4/mcCrcQPxXe",
        ] {
            assert!(is_bcrypt_hash(hash));
            assert_eq!(
                h.verify("password", hash),
                Verification::Valid { needs_rehash: true },
                "{hash}"
            );
            assert_eq!(h.verify("Password", hash), Verification::Invalid);
        }
    }

    #[test]
    fn bcrypt_only_uses_the_first_72_bytes_like_bcryptjs() {
        let long = "x".repeat(72);
        let hash = bcrypt::hash(&long, 4).unwrap();
        let longer = format!("{long}ignored");
        assert!(cheap().verify(&longer, &hash).is_valid());
    }

    #[test]
    fn garbage_is_invalid_and_never_panics() {
        let h = cheap();
        let good = h.hash("pw").unwrap();
        let mut cases = vec![
            String::new(),
            "$".into(),
            "$argon2id$".into(),
            "$argon2id$v=19$m=256,t=1,p=1$".into(),
            "$argon2id$v=99$m=256,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaA".into(),
            "$argon2id$v=19$m=1,t=0,p=0$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNo".into(),
            "$scrypt$ln=4,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
            "$2a$99$UUiT3dxAsm.y3Jfcno9eyecnQc3hTLAt4FC3N56bCC6DLPs8XhvtO".into(),
            "$2a$08$UUiT3dxAsm.y3Jfcno9eyecnQc3hTLAt4FC3N56bCC6DLPs8Xhvt".into(),
            "$2x$08$UUiT3dxAsm.y3Jfcno9eyecnQc3hTLAt4FC3N56bCC6DLPs8XhvtO".into(),
            "plaintext-password".into(),
            "ü$2a$08$é".into(),
            "$".repeat(10_000),
        ];
        // Every truncation of a real hash.
        for i in 0..good.len() {
            cases.push(good[..i].to_string());
        }
        for case in cases {
            assert_eq!(h.verify("pw", &case), Verification::Invalid, "{case:?}");
        }
    }

    #[test]
    fn is_bcrypt_hash_checks_shape() {
        let ok = "$2b$08$UUiT3dxAsm.y3Jfcno9eyecnQc3hTLAt4FC3N56bCC6DLPs8XhvtO";
        assert!(is_bcrypt_hash(ok));
        assert!(!is_bcrypt_hash(&ok[..59]));
        assert!(!is_bcrypt_hash(&ok.replace("$2b$", "$2x$")));
        assert!(!is_bcrypt_hash(&ok.replace("$08$", "$8a$")));
        assert!(!is_bcrypt_hash(&ok.replacen('U', "+", 1)));
        assert!(!is_bcrypt_hash(&ok.replacen('U', "é", 1)));
        assert!(!is_bcrypt_hash("$argon2id$v=19$m=256,t=1,p=1$abc$def"));
    }

    #[test]
    fn dummy_verify_uses_the_hasher_params() {
        let h = cheap();
        assert!(h.dummy_hash.starts_with("$argon2id$v=19$m=256,t=1,p=1$"));
        h.dummy_verify("anything");
        assert!(h.verify(DUMMY_PASSWORD, &h.dummy_hash).is_valid());
    }

    #[test]
    fn debug_does_not_dump_the_dummy_hash() {
        let dbg = format!("{:?}", cheap());
        assert!(!dbg.contains("argon2id"), "{dbg}");
        assert!(dbg.contains("memory_kib: 256"));
    }
}
