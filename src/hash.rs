//! Typed digests: the identity of a derivation and the content of an output are different
//! things (buck2's split between action key and content digest), so they get different types
//! that can never be swapped.
//!
//! Pure: no IO. See `store::tree_hash` for hashing files on disk.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// The nix-base32 alphabet: digits and lowercase letters without `e o u t`, so that hashes
/// never spell words (as in Nix store paths).
const NIX_BASE32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Length in bytes of a [`DrvHash`]: 160 bits, which nix-base32 writes in exactly 32 characters.
pub const DRV_HASH_BYTES: usize = 20;
/// Length in characters of a [`DrvHash`] as written in store paths.
pub const DRV_HASH_CHARS: usize = 32;

/// Errors from parsing a written digest.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HashParseError {
    #[error("`{0}` is not a derivation hash: expected 32 nix-base32 characters")]
    BadDrvHash(String),
    #[error("`{0}` is not a content hash: expected `blake3:` and 64 hex digits")]
    BadContentHash(String),
}

/// Encodes bytes as nix-base32, exactly as Nix does (least significant 5-bit group first,
/// written from the end), so the result reads like a Nix store path hash.
pub fn nix_base32_encode(bytes: &[u8]) -> String {
    let len = (bytes.len() * 8).div_ceil(5);
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let lo = (bytes[i] as u16) >> j;
        let hi = if i + 1 < bytes.len() {
            (bytes[i + 1] as u16) << (8 - j)
        } else {
            0
        };
        out.push(NIX_BASE32[((lo | hi) & 0x1f) as usize] as char);
    }
    out
}

/// Decodes nix-base32 into `N` bytes; `None` if a character is outside the alphabet, the length
/// is wrong or unused high bits are set.
pub fn nix_base32_decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    let len = (N * 8).div_ceil(5);
    if s.len() != len {
        return None;
    }
    let mut out = [0u8; N];
    for (n, c) in s.bytes().rev().enumerate() {
        let digit = NIX_BASE32.iter().position(|&a| a == c)? as u16;
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        out[i] |= (digit << j) as u8;
        let carry = digit >> (8 - j);
        if i + 1 < N {
            out[i + 1] |= carry as u8;
        } else if carry != 0 {
            return None;
        }
    }
    Some(out)
}

/// The identity of a derivation: blake3 of its canonical encoding, truncated to 160 bits.
/// Known before anything is built; names its store path.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DrvHash([u8; DRV_HASH_BYTES]);

impl DrvHash {
    /// Hashes already-canonical bytes (see `derivation::canonical`).
    pub fn of_canonical(bytes: &[u8]) -> Self {
        let full = blake3::hash(bytes);
        let mut out = [0u8; DRV_HASH_BYTES];
        out.copy_from_slice(&full.as_bytes()[..DRV_HASH_BYTES]);
        DrvHash(out)
    }

    pub fn as_bytes(&self) -> &[u8; DRV_HASH_BYTES] {
        &self.0
    }
}

impl fmt::Display for DrvHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&nix_base32_encode(&self.0))
    }
}

impl fmt::Debug for DrvHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DrvHash({self})")
    }
}

impl FromStr for DrvHash {
    type Err = HashParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        nix_base32_decode::<DRV_HASH_BYTES>(s)
            .map(DrvHash)
            .ok_or_else(|| HashParseError::BadDrvHash(s.to_string()))
    }
}

impl serde::Serialize for DrvHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DrvHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The content of an output tree or source file set: a blake3 Merkle hash, recorded when a
/// path is registered (Nix's narHash). Written `blake3:<64 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    pub fn from_blake3(h: blake3::Hash) -> Self {
        ContentHash(*h.as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The bare 64 hex digits, without the `blake3:` prefix.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blake3:{}", self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

impl FromStr for ContentHash {
    type Err = HashParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || HashParseError::BadContentHash(s.to_string());
        let hex = s.strip_prefix("blake3:").ok_or_else(bad)?;
        blake3::Hash::from_hex(hex)
            .map(Self::from_blake3)
            .map_err(|_| bad())
    }
}

impl serde::Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix_base32_matches_nix() {
        // Nix writes sha256("") as this; the same bytes must give the same text here.
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert_eq!(
            nix_base32_encode(&bytes),
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
        let back = nix_base32_decode::<32>("0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73");
        assert_eq!(back.unwrap().to_vec(), bytes);
    }

    #[test]
    fn nix_base32_round_trips() {
        let h = DrvHash::of_canonical(b"anything");
        let s = h.to_string();
        assert_eq!(s.len(), DRV_HASH_CHARS);
        assert_eq!(s.parse::<DrvHash>().unwrap(), h);
    }

    #[test]
    fn bad_hashes_are_rejected() {
        assert!("e".repeat(32).parse::<DrvHash>().is_err()); // `e` is not in the alphabet
        assert!("0".repeat(31).parse::<DrvHash>().is_err());
        assert!("sha256:00".parse::<ContentHash>().is_err());
    }

    #[test]
    fn content_hash_round_trips() {
        let h = ContentHash::from_blake3(blake3::hash(b"x"));
        assert_eq!(h.to_string().parse::<ContentHash>().unwrap(), h);
    }
}
