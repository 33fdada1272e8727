//! The frame record every reader yields (spec §2.1), and the field parsers the readers share.
//!
//! The parsers work on raw bytes (no UTF-8 decoding, no allocation) because they run once per
//! field of every row: at 100 MB/s that is tens of millions of calls a second.

/// The largest CAN identifier: 29 bits (extended frames).
pub const MAX_ID_29: u32 = 0x1FFF_FFFF;
/// The largest 11-bit (standard) CAN identifier.
pub const MAX_ID_11: u32 = 0x7FF;

/// One CAN message, in file order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Frame {
    /// Timestamp in the file's unit (seconds); feeds no feature, only time splits and the
    /// non-monotonic count.
    pub ts: Option<f64>,
    /// The CAN ID, or `None` when the field could not be parsed (`na`, empty): such a frame is
    /// kept and maps to UNK (spec §2.1).
    pub id: Option<u32>,
    /// Payload, absent bytes 0.
    pub bytes: [u8; 8],
    /// Number of payload bytes present (0–8).
    pub len: u8,
    /// `true` = attack.
    pub label: bool,
}

/// The numeric base of an ID or byte field; declared by the format, never guessed, because
/// `100` is valid in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    Hex,
    Dec,
}

/// Trims ASCII whitespace from both ends (fields are trimmed, spec §2.1).
#[inline]
pub fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

#[inline]
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// What parsing an ID field gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdField {
    /// A valid ID.
    Id(u32),
    /// Not a number (`na`, empty, a stray letter): the frame is kept as UNK and counted.
    Unparsable,
    /// A number too large for the format's width (a 29-bit ID in an 11-bit format, or more
    /// than 29 bits): the row is malformed.
    OutOfRange(u64),
}

/// Parses an ID in `base` (hex may carry `0x`), checking it against `max`.
#[inline]
pub fn parse_id(field: &[u8], base: Base, max: u32) -> IdField {
    let f = trim(field);
    let digits = match base {
        Base::Hex => f
            .strip_prefix(b"0x")
            .or_else(|| f.strip_prefix(b"0X"))
            .unwrap_or(f),
        Base::Dec => f,
    };
    if digits.is_empty() {
        return IdField::Unparsable;
    }
    let mut v: u64 = 0;
    for &c in digits {
        let d = match base {
            Base::Hex => match hex_digit(c) {
                Some(d) => d as u64,
                None => return IdField::Unparsable,
            },
            Base::Dec => match c {
                b'0'..=b'9' => (c - b'0') as u64,
                _ => return IdField::Unparsable,
            },
        };
        v = match base {
            Base::Hex => v << 4 | d,
            Base::Dec => v * 10 + d,
        };
        if v > u32::MAX as u64 {
            // Saturate: the value is out of range either way; keep scanning for non-digits.
            v = u32::MAX as u64 + 1;
        }
    }
    if v > max as u64 {
        IdField::OutOfRange(v)
    } else {
        IdField::Id(v as u32)
    }
}

/// What parsing a hex payload field gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload {
    pub bytes: [u8; 8],
    pub len: u8,
    /// The payload had more than 8 bytes (CAN FD); only the first 8 are kept.
    pub long: bool,
}

/// Parses a hex payload: separators (space, `:`, `.`) are stripped, `na` or empty means no
/// bytes, an odd digit count is left-padded with one `0`, and with a DLC (in bytes) the digits
/// are left-padded to `2·DLC` (DAGA writes `0` for eight zero bytes). The first 8 bytes are
/// kept. `None` if a character is not a hex digit.
#[inline]
pub fn parse_hex_payload(field: &[u8], dlc: Option<u8>) -> Option<Payload> {
    let f = trim(field);
    let mut out = Payload {
        bytes: [0; 8],
        len: 0,
        long: false,
    };
    if f.is_empty() || f.eq_ignore_ascii_case(b"na") {
        return Some(out);
    }
    // Count digits and validate in one pass.
    let mut ndig = 0usize;
    for &c in f {
        if hex_digit(c).is_some() {
            ndig += 1;
        } else if !matches!(c, b' ' | b':' | b'.') {
            return None;
        }
    }
    if ndig == 0 {
        return Some(out);
    }
    let mut total = ndig + (ndig & 1);
    if let Some(d) = dlc {
        total = total.max(2 * d as usize);
    }
    let pad = total - ndig;
    let nbytes = total / 2;
    out.long = nbytes > 8;
    out.len = nbytes.min(8) as u8;
    // Digit k of the padded string (k < pad is '0').
    let mut k = pad;
    for &c in f {
        let Some(d) = hex_digit(c) else { continue };
        let byte = k / 2;
        if byte >= 8 {
            break;
        }
        if k.is_multiple_of(2) {
            out.bytes[byte] = d << 4;
        } else {
            out.bytes[byte] |= d;
        }
        k += 1;
    }
    Some(out)
}

/// A byte field that is not a number from 0 to 255.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadByte;

/// Parses one byte column (0–255) in `base`; `Ok(None)` for an empty cell (an absent byte).
#[inline]
pub fn parse_byte(field: &[u8], base: Base) -> Result<Option<u8>, BadByte> {
    let f = trim(field);
    if f.is_empty() {
        return Ok(None);
    }
    let digits = match base {
        Base::Hex => f
            .strip_prefix(b"0x")
            .or_else(|| f.strip_prefix(b"0X"))
            .unwrap_or(f),
        Base::Dec => f,
    };
    if digits.is_empty() || digits.len() > 3 {
        return Err(BadByte);
    }
    let mut v: u32 = 0;
    for &c in digits {
        let d = match base {
            Base::Hex => hex_digit(c).ok_or(BadByte)? as u32,
            Base::Dec if c.is_ascii_digit() => (c - b'0') as u32,
            Base::Dec => return Err(BadByte),
        };
        v = match base {
            Base::Hex => v * 16 + d,
            Base::Dec => v * 10 + d,
        };
    }
    u8::try_from(v).map(Some).map_err(|_| BadByte)
}

/// Parses a decimal unsigned integer (a DLC).
#[inline]
pub fn parse_uint(field: &[u8]) -> Option<u32> {
    let f = trim(field);
    if f.is_empty() || f.len() > 9 {
        return None;
    }
    let mut v: u32 = 0;
    for &c in f {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Some(v)
}

/// Parses a timestamp (`1672531200.003365`, `9e-06`); `None` if it is not a finite number.
#[inline]
pub fn parse_ts(field: &[u8]) -> Option<f64> {
    let f = trim(field);
    if f.is_empty() {
        return None;
    }
    // Timestamps are ASCII; anything else is not a number.
    let s = std::str::from_utf8(f).ok()?;
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_by_declared_base() {
        assert_eq!(parse_id(b"0C1", Base::Hex, MAX_ID_11), IdField::Id(0xC1));
        assert_eq!(
            parse_id(b" 0x1E5 ", Base::Hex, MAX_ID_11),
            IdField::Id(0x1E5)
        );
        assert_eq!(parse_id(b"100", Base::Dec, MAX_ID_29), IdField::Id(100));
        assert_eq!(parse_id(b"100", Base::Hex, MAX_ID_29), IdField::Id(0x100));
        assert_eq!(parse_id(b"na", Base::Hex, MAX_ID_29), IdField::Unparsable);
        assert_eq!(parse_id(b"", Base::Hex, MAX_ID_29), IdField::Unparsable);
        assert_eq!(parse_id(b"1G0", Base::Hex, MAX_ID_29), IdField::Unparsable);
        assert_eq!(
            parse_id(b"18FCF200", Base::Hex, MAX_ID_11),
            IdField::OutOfRange(0x18FC_F200)
        );
        assert_eq!(
            parse_id(b"FFFFFFFFFFFF", Base::Hex, MAX_ID_29),
            IdField::OutOfRange(u32::MAX as u64 + 1)
        );
        assert_eq!(
            parse_id(b"217058307", Base::Dec, MAX_ID_29),
            IdField::Id(0x0CF0_0C03)
        );
    }

    #[test]
    fn payload_padding_and_truncation() {
        let p = parse_hex_payload(b"0102", None).unwrap();
        assert_eq!((p.len, &p.bytes[..2], p.long), (2, &[1u8, 2][..], false));
        // Odd digit count: one leading zero.
        let p = parse_hex_payload(b"123", None).unwrap();
        assert_eq!((p.len, &p.bytes[..2]), (2, &[0x01u8, 0x23][..]));
        // DAGA: `0` with DLC 8 is eight zero bytes.
        let p = parse_hex_payload(b"0", Some(8)).unwrap();
        assert_eq!((p.len, p.bytes), (8, [0; 8]));
        // DLC left-pads.
        let p = parse_hex_payload(b"FF", Some(2)).unwrap();
        assert_eq!((p.len, &p.bytes[..2]), (2, &[0u8, 0xFF][..]));
        // Separators.
        let p = parse_hex_payload(b"DE:AD.BE EF", None).unwrap();
        assert_eq!(&p.bytes[..4], &[0xDE, 0xAD, 0xBE, 0xEF]);
        // Longer than 8 bytes: first 8 kept, flagged.
        let p = parse_hex_payload(b"00112233445566778899", None).unwrap();
        assert_eq!(
            (p.len, p.long, p.bytes),
            (8, true, [0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77])
        );
        assert_eq!(parse_hex_payload(b"na", None).unwrap().len, 0);
        assert_eq!(parse_hex_payload(b"", Some(8)).unwrap().len, 0);
        assert!(parse_hex_payload(b"0G", None).is_none());
    }

    #[test]
    fn bytes_and_numbers() {
        assert_eq!(parse_byte(b"255", Base::Dec), Ok(Some(255)));
        assert_eq!(parse_byte(b"256", Base::Dec), Err(BadByte));
        assert_eq!(parse_byte(b"ff", Base::Hex), Ok(Some(255)));
        assert_eq!(parse_byte(b" ", Base::Dec), Ok(None));
        assert_eq!(parse_byte(b"x", Base::Dec), Err(BadByte));
        assert_eq!(parse_uint(b"64"), Some(64));
        assert_eq!(parse_uint(b"-1"), None);
        assert_eq!(parse_ts(b"9e-06"), Some(9e-6));
        assert_eq!(parse_ts(b"nan"), None);
        assert_eq!(trim(b" \t a b \r"), b"a b");
    }
}
