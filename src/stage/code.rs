//! Code identities of the built-in stage kinds, computed by `build.rs` at compile time.

use crate::derivation::CodeIdentity;

/// One built-in kind's code identity: (kind, blake3 hex of its sources, locked crates).
pub type CodeGroup = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

include!(concat!(env!("OUT_DIR"), "/code_identity.rs"));

/// The code identity of built-in kind `kind`: the digest of its sources and the locked
/// versions of its crates. Panics if `build.rs` does not list the kind, which is a bug caught
/// by the tests below.
pub fn identity(kind: &str) -> CodeIdentity {
    let (_, digest, crates) = CODE_IDENTITIES
        .iter()
        .find(|(k, _, _)| *k == kind)
        .unwrap_or_else(|| panic!("build.rs lists no code group for stage kind `{kind}`"));
    CodeIdentity {
        digest: digest.to_string(),
        crates: crates
            .iter()
            .map(|(c, v)| (c.to_string(), v.to_string()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_has_a_digest_and_locked_crates() {
        assert!(!CODE_IDENTITIES.is_empty());
        for (kind, digest, crates) in CODE_IDENTITIES {
            assert_eq!(digest.len(), 64, "{kind}");
            for (c, v) in *crates {
                assert_ne!(*v, "unlocked", "{kind}: crate {c} is not in Cargo.lock");
            }
        }
    }
}
