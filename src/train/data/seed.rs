//! Seeds (spec §5.1): every purpose (`split`, `init`, `dropout`, `unk`, …) draws from its own
//! sub-seed `hash(seed, purpose)`, so adding a consumer of randomness never shifts another.
//! Generators are ChaCha8 (`rand_chacha`): portable and reproducible across platforms.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The sub-seed of `purpose` under `seed`.
pub fn sub_seed(seed: u64, purpose: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"kdgat.seed.v1\0");
    h.update(&seed.to_le_bytes());
    h.update(purpose.as_bytes());
    let b = h.finalize();
    u64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

/// A generator for `purpose` under `seed`, further keyed by `key` (e.g. a file's content hash,
/// so that a file's split does not depend on which other files the dataset has).
pub fn rng(seed: u64, purpose: &str, key: &[u8]) -> ChaCha8Rng {
    let mut h = blake3::Hasher::new();
    h.update(b"kdgat.rng.v1\0");
    h.update(&sub_seed(seed, purpose).to_le_bytes());
    h.update(key);
    ChaCha8Rng::from_seed(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn purposes_and_keys_are_independent() {
        assert_ne!(sub_seed(42, "split"), sub_seed(42, "init"));
        assert_ne!(sub_seed(42, "split"), sub_seed(43, "split"));
        assert_eq!(sub_seed(42, "split"), sub_seed(42, "split"));
        let a: u64 = rng(42, "split", b"a").random();
        let b: u64 = rng(42, "split", b"b").random();
        let a2: u64 = rng(42, "split", b"a").random();
        assert_ne!(a, b);
        assert_eq!(a, a2);
    }
}
