//! Private-room passwords: only a salted argon2 hash is kept, and both hashing and checking
//! are deliberately slow, so callers run them off the async runtime (on the password gate's
//! threads).
//!
//! Argon2 needs 19 MiB of working memory per hash. Each thread keeps one buffer for it and
//! reuses it, instead of allocating and freeing 19 MiB per hash: with glibc, that pattern grew
//! the server by about 19 MiB per wrong password and never gave it back (measured: 200 MB after
//! ten checks on two threads), because freeing a large block raises the allocator's mmap
//! threshold and later blocks of the same size come from the heap, fragmented.

use std::cell::RefCell;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use thiserror::Error;

/// Largest argon2 memory cost (KiB) a stored hash may ask for: a hand-edited state file must not
/// make each check allocate gigabytes. Four times what this server itself uses.
const MAX_STORED_M_COST: u32 = 4 * Params::DEFAULT_M_COST;

/// The password could not be hashed.
#[derive(Debug, Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

thread_local! {
    /// This thread's argon2 working memory, grown to the largest cost seen and then reused.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

fn with_memory<T>(blocks: usize, work: impl FnOnce(&mut [Block]) -> T) -> T {
    MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < blocks {
            memory.resize(blocks, Block::new());
        }
        work(&mut memory[..blocks])
    })
}

/// Hashes a new room password into PHC string form (`$argon2id$...`).
pub fn hash(password: &str) -> Result<String, HashError> {
    let error = |e: &dyn std::fmt::Display| HashError(e.to_string());
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(|e| error(&e))?;
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    with_memory(params.block_count(), |blocks| {
        argon2.hash_password_into_with_memory(password.as_bytes(), salt_raw, &mut out, blocks)
    })
    .map_err(|e| error(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| error(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| error(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches a stored hash; a malformed stored hash, or one asking for more
/// memory than [`MAX_STORED_M_COST`], matches nothing.
pub fn verify(password: &str, stored_hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored_hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let Ok(version) = parsed
        .version
        .map_or(Ok(Version::default()), Version::try_from)
    else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    if params.m_cost() > MAX_STORED_M_COST {
        return false;
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_raw) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = &mut out[..expected.len()];
    let computed = with_memory(blocks, |memory| {
        argon2.hash_password_into_with_memory(password.as_bytes(), salt_raw, out, memory)
    });
    // Output's equality is constant-time.
    computed.is_ok() && Output::new(out).is_ok_and(|computed| computed == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_and_wrong_passwords() {
        let stored = hash("s3cret").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(!stored.contains("s3cret"));
        assert!(verify("s3cret", &stored));
        assert!(!verify("s3cret ", &stored));
        assert!(!verify("s3cret", "not a hash"));
    }

    #[test]
    fn hashes_made_elsewhere_still_verify() {
        use argon2::PasswordHasher;
        let salt = SaltString::generate(&mut OsRng);
        let stored = Argon2::default()
            .hash_password(b"moby dick", &salt)
            .unwrap()
            .to_string();
        assert!(verify("moby dick", &stored));
        assert!(!verify("moby", &stored));
        // And ours verify with the library's own checker.
        use argon2::PasswordVerifier;
        let ours = hash("moby dick").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"moby dick", &parsed)
                .is_ok()
        );
    }
}
