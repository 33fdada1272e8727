//! Line-oriented text formats: SocketCAN `candump` (log and default forms, spec §2.2) and the
//! HCRL originals' `normal_run_data.txt` text form. Neither is CSV, so they are tokenised by
//! whitespace here; lines are read as bytes (LF or CRLF, a leading UTF-8 BOM stripped).
//!
//! candump forms:
//! - log (`candump -l`): `(<ts>) <iface> <ID>#<hex> [label]`; `<ID>#R[<n>]` is a remote
//!   frame (no bytes); `<ID>##<flags><hex>` is CAN FD (first 8 bytes kept, counted);
//! - default: `[(<ts>)] <iface> <ID> [<dlc>] <b0> <b1> … [label]`, `remote request` in place
//!   of the bytes for a remote frame.
//!
//! An ID with bit `0x20000000` (CAN_ERR_FLAG) is an error frame: skipped and counted. A line
//! with no label token takes `assume_label`; without one the file is rejected.

use std::io::BufRead;
use std::ops::ControlFlow;

use super::format::CandumpSpec;
use super::frame::{self, BadByte, Frame, IdField, MAX_ID_29};
use super::reader::{ReadCtx, ReadError};

/// CAN_ERR_FLAG of SocketCAN.
const ERR_FLAG: u64 = 0x2000_0000;

/// A per-line callback: `(line number, line, ctx)`, `Break` to stop.
type OnLine<'f> = dyn FnMut(u64, &[u8], &mut ReadCtx) -> Result<ControlFlow<()>, ReadError> + 'f;

/// Calls `f(line_number, line)` for each line without its terminator; a BOM on the first
/// line is removed.
fn for_each_line(
    input: &mut dyn BufRead,
    ctx: &mut ReadCtx,
    f: &mut OnLine<'_>,
) -> Result<(), ReadError> {
    let mut buf = Vec::with_capacity(256);
    let mut lineno = 0u64;
    loop {
        buf.clear();
        let n = input.read_until(b'\n', &mut buf).map_err(|e| ctx.io(e))?;
        if n == 0 {
            return Ok(());
        }
        lineno += 1;
        let mut line: &[u8] = &buf;
        if lineno == 1 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        while let [rest @ .., b'\n' | b'\r'] = line {
            line = rest;
        }
        if f(lineno, line, ctx)?.is_break() {
            return Ok(());
        }
    }
}

/// Whether the input is the HCRL text form (first token `Timestamp:`), without consuming it.
pub(crate) fn looks_like_hcrl_text(input: &mut dyn BufRead) -> std::io::Result<bool> {
    let head = input.fill_buf()?;
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    Ok(frame::trim(head).starts_with(b"Timestamp:"))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn label_of(
    spec: &CandumpSpec,
    token: Option<&[u8]>,
    line: u64,
    ctx: &mut ReadCtx,
) -> Result<Option<bool>, ReadError> {
    match token {
        Some(t) => match spec.labels.classify(t) {
            Some(l) => Ok(Some(l)),
            None => {
                ctx.malformed(
                    line,
                    "label",
                    format!(
                        "expected a label token ({}), found {:?}",
                        spec.labels.describe(),
                        lossy(t)
                    ),
                );
                Ok(None)
            }
        },
        None => match ctx.opts.assume_label {
            Some(a) => Ok(Some(a)),
            None => Err(ReadError::Unlabelled {
                file: ctx.file.to_path_buf(),
                line,
            }),
        },
    }
}

/// The ID token: `Some(None)` for an error frame (skipped), `None` for a malformed row.
fn id_of(tok: &[u8], line: u64, ctx: &mut ReadCtx) -> Option<Option<Option<u32>>> {
    match frame::parse_id(tok, frame::Base::Hex, u32::MAX) {
        IdField::Id(v) if v as u64 & ERR_FLAG != 0 => {
            ctx.stats.error_frames += 1;
            Some(None)
        }
        IdField::Id(v) if v > MAX_ID_29 => {
            ctx.malformed(
                line,
                "id",
                format!("expected an ID of at most 29 bits, found {v:#X}"),
            );
            None
        }
        IdField::Id(v) => Some(Some(Some(v))),
        IdField::Unparsable => {
            ctx.stats.unparsable_ids += 1;
            Some(Some(None))
        }
        IdField::OutOfRange(v) => {
            ctx.malformed(
                line,
                "id",
                format!("expected an ID of at most 29 bits, found {v:#X}"),
            );
            None
        }
    }
}

/// Reads candump text.
pub(crate) fn read(
    spec: &CandumpSpec,
    input: &mut dyn BufRead,
    ctx: &mut ReadCtx,
) -> Result<(), ReadError> {
    for_each_line(input, ctx, &mut |line, text, ctx| {
        let t = frame::trim(text);
        if t.is_empty() || t.starts_with(b"#") {
            return Ok(ControlFlow::Continue(()));
        }
        ctx.stats.rows += 1;
        let tokens: Vec<&[u8]> = t
            .split(|c| c.is_ascii_whitespace())
            .filter(|s| !s.is_empty())
            .collect();
        let frame = parse_line(spec, &tokens, line, ctx)?;
        match frame {
            Some(f) => Ok(ctx.emit(&f)),
            None => Ok(ControlFlow::Continue(())),
        }
    })
}

/// One candump line → a frame; `None` when skipped (malformed or an error frame).
fn parse_line(
    spec: &CandumpSpec,
    tokens: &[&[u8]],
    line: u64,
    ctx: &mut ReadCtx,
) -> Result<Option<Frame>, ReadError> {
    let mut i = 0;
    let mut ts = None;
    if let Some(t) = tokens.first()
        && t.starts_with(b"(")
    {
        let inner = t.strip_prefix(b"(").unwrap_or(t);
        let inner = inner.strip_suffix(b")").unwrap_or(inner);
        ts = frame::parse_ts(inner);
        if ts.is_none() {
            ctx.stats.unparsable_timestamps += 1;
        }
        i = 1;
    }
    // Interface, then the ID (with `#` in the log form).
    if tokens.len() < i + 2 {
        ctx.malformed(
            line,
            "row",
            format!("expected `<iface> <ID>…`, found {} tokens", tokens.len()),
        );
        return Ok(None);
    }
    let id_tok = tokens[i + 1];
    let rest = &tokens[i + 2..];
    let mut f = Frame {
        ts,
        id: None,
        bytes: [0; 8],
        len: 0,
        label: false,
    };
    if let Some(hash) = id_tok.iter().position(|&c| c == b'#') {
        // Log form.
        let Some(id) = id_of(&id_tok[..hash], line, ctx) else {
            return Ok(None);
        };
        let Some(id) = id else { return Ok(None) };
        f.id = id;
        let data = &id_tok[hash + 1..];
        if let Some(fd) = data.strip_prefix(b"#") {
            // CAN FD: one flags digit, then the data.
            let hexd = fd.get(1..).unwrap_or(b"");
            match frame::parse_hex_payload(hexd, None) {
                Some(p) => {
                    f.bytes = p.bytes;
                    f.len = p.len;
                    ctx.stats.long_payloads += 1;
                }
                None => {
                    ctx.malformed(
                        line,
                        "data",
                        format!("expected CAN FD flags and hex data, found {:?}", lossy(fd)),
                    );
                    return Ok(None);
                }
            }
        } else if data.first().is_some_and(|c| *c == b'R' || *c == b'r') {
            ctx.stats.remote_frames += 1;
        } else {
            match frame::parse_hex_payload(data, None) {
                Some(p) => {
                    f.bytes = p.bytes;
                    f.len = p.len;
                    if p.long {
                        ctx.stats.long_payloads += 1;
                    }
                }
                None => {
                    ctx.malformed(
                        line,
                        "data",
                        format!("expected hex data after `#`, found {:?}", lossy(data)),
                    );
                    return Ok(None);
                }
            }
        }
        if rest.len() > 1 {
            ctx.malformed(
                line,
                "row",
                format!(
                    "expected at most one label token after the frame, found {}",
                    rest.len()
                ),
            );
            return Ok(None);
        }
        match label_of(spec, rest.first().copied(), line, ctx)? {
            Some(l) => f.label = l,
            None => return Ok(None),
        }
        return Ok(Some(f));
    }
    // Default form.
    let Some(id) = id_of(id_tok, line, ctx) else {
        return Ok(None);
    };
    let Some(id) = id else { return Ok(None) };
    f.id = id;
    let mut j = 0;
    let mut dlc = None;
    if let Some(t) = rest.first()
        && t.starts_with(b"[")
    {
        let inner = t.strip_prefix(b"[").and_then(|x| x.strip_suffix(b"]"));
        match inner.and_then(frame::parse_uint) {
            Some(d) => dlc = Some(d as usize),
            None => {
                ctx.malformed(
                    line,
                    "dlc",
                    format!("expected `[<dlc>]`, found {:?}", lossy(t)),
                );
                return Ok(None);
            }
        }
        j = 1;
    }
    if rest.len() >= j + 2
        && rest[j].eq_ignore_ascii_case(b"remote")
        && rest[j + 1].eq_ignore_ascii_case(b"request")
    {
        ctx.stats.remote_frames += 1;
        j += 2;
    } else {
        let is_byte = |t: &[u8]| t.len() == 2 && t.iter().all(|c| c.is_ascii_hexdigit());
        let n = match dlc {
            Some(d) => {
                if rest.len() < j + d || !rest[j..j + d].iter().all(|t| is_byte(t)) {
                    ctx.malformed(
                        line,
                        "data",
                        format!("expected {d} hex bytes after `[{d}]`"),
                    );
                    return Ok(None);
                }
                d
            }
            None => rest[j..].iter().take_while(|t| is_byte(t)).count(),
        };
        for k in 0..n {
            let b = frame::parse_byte(rest[j + k], frame::Base::Hex)
                .ok()
                .flatten()
                .unwrap_or(0);
            if k < 8 {
                f.bytes[k] = b;
            }
        }
        if n > 8 {
            ctx.stats.long_payloads += 1;
        }
        f.len = n.min(8) as u8;
        j += n;
    }
    let tail = &rest[j..];
    if tail.len() > 1 {
        ctx.malformed(
            line,
            "row",
            format!(
                "expected at most one label token after the bytes, found {}",
                tail.len()
            ),
        );
        return Ok(None);
    }
    match label_of(spec, tail.first().copied(), line, ctx)? {
        Some(l) => f.label = l,
        None => return Ok(None),
    }
    Ok(Some(f))
}

/// Reads HCRL's `normal_run_data.txt` form:
/// `Timestamp: <f> ID: <hex> 000 DLC: <n> <bytes…>` (the `000` token is ignored). The file
/// carries no label: `assume_label` is required.
pub(crate) fn read_hcrl_text(input: &mut dyn BufRead, ctx: &mut ReadCtx) -> Result<(), ReadError> {
    let Some(label) = ctx.opts.assume_label else {
        return Err(ReadError::Unlabelled {
            file: ctx.file.to_path_buf(),
            line: 1,
        });
    };
    for_each_line(input, ctx, &mut |line, text, ctx| {
        let t = frame::trim(text);
        if t.is_empty() {
            return Ok(ControlFlow::Continue(()));
        }
        ctx.stats.rows += 1;
        let tok: Vec<&[u8]> = t
            .split(|c| c.is_ascii_whitespace())
            .filter(|s| !s.is_empty())
            .collect();
        let shape_ok =
            tok.len() >= 7 && tok[0] == b"Timestamp:" && tok[2] == b"ID:" && tok[5] == b"DLC:";
        if !shape_ok {
            ctx.malformed(
                line,
                "row",
                "expected `Timestamp: <t> ID: <hex> 000 DLC: <n> <bytes…>`",
            );
            return Ok(ControlFlow::Continue(()));
        }
        let Some(n) = frame::parse_uint(tok[6]) else {
            ctx.malformed(
                line,
                "DLC",
                format!("expected a DLC, found {:?}", lossy(tok[6])),
            );
            return Ok(ControlFlow::Continue(()));
        };
        let n = n as usize;
        if tok.len() != 7 + n {
            ctx.malformed(
                line,
                "row",
                format!(
                    "expected {n} bytes after `DLC: {n}`, found {}",
                    tok.len() - 7
                ),
            );
            return Ok(ControlFlow::Continue(()));
        }
        let mut f = Frame {
            ts: frame::parse_ts(tok[1]),
            id: None,
            bytes: [0; 8],
            len: n.min(8) as u8,
            label,
        };
        match frame::parse_id(tok[3], frame::Base::Hex, MAX_ID_29) {
            IdField::Id(v) => f.id = Some(v),
            IdField::Unparsable => ctx.stats.unparsable_ids += 1,
            IdField::OutOfRange(v) => {
                ctx.malformed(
                    line,
                    "ID",
                    format!("expected an ID of at most 29 bits, found {v:#X}"),
                );
                return Ok(ControlFlow::Continue(()));
            }
        }
        for k in 0..n {
            match frame::parse_byte(tok[7 + k], frame::Base::Hex) {
                Ok(b) if k < 8 => f.bytes[k] = b.unwrap_or(0),
                Ok(_) => {}
                Err(BadByte) => {
                    ctx.malformed(
                        line,
                        format!("byte {k}"),
                        format!("expected a hex byte, found {:?}", lossy(tok[7 + k])),
                    );
                    return Ok(ControlFlow::Continue(()));
                }
            }
        }
        if n > 8 {
            ctx.stats.long_payloads += 1;
        }
        Ok(ctx.emit(&f))
    })
}

#[cfg(test)]
mod tests {
    use crate::train::data::format::preset;
    use crate::train::data::reader::{ReadError, ReadOptions, read_bytes};

    fn opts(assume: Option<bool>) -> ReadOptions {
        ReadOptions {
            assume_label: assume,
            malformed_threshold: 1.0,
            ..Default::default()
        }
    }

    #[test]
    fn log_form_remote_fd_error_and_labels() {
        let text = "\u{feff}(1.5) can0 123#DEADBEEF 1\n\
                    # comment\n\
                    \n\
                    (1.6) can0 12345678#R attack\r\n\
                    (1.7) can0 456##1112233445566778899AA normal\n\
                    (1.8) can0 20000080#0000000000000000 0\n\
                    (1.9) can0 789#00 maybe\n\
                    (2.0) can0 7FF#R2 r\n";
        let (f, s) = read_bytes(&preset("candump").unwrap(), text.as_bytes(), &opts(None)).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(
            (f[0].id, f[0].len, f[0].label, f[0].ts),
            (Some(0x123), 4, true, Some(1.5))
        );
        assert_eq!(&f[0].bytes[..4], &[0xDE, 0xAD, 0xBE, 0xEF]);
        assert_eq!(
            (f[1].id, f[1].len, f[1].label),
            (Some(0x1234_5678), 0, true)
        );
        assert_eq!((f[2].len, f[2].bytes[0], f[2].label), (8, 0x11, false));
        assert_eq!(s.error_frames, 1);
        assert_eq!(s.remote_frames, 2);
        assert_eq!(s.long_payloads, 1);
        assert_eq!(s.malformed, 1);
        assert_eq!(s.malformed_examples[0].line, 7);
    }

    #[test]
    fn default_form_with_assumed_label() {
        let text = " (000.000000)  can0  18FCF200   [8]  E1 FF FF FF FF FF FF FF\n  can0  123   [3]  11 22 33\n  can0  124   [0]  remote request\n  can0  125   [2]  11\n";
        let (f, s) = read_bytes(
            &preset("candump").unwrap(),
            text.as_bytes(),
            &opts(Some(false)),
        )
        .unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(
            (f[0].id, f[0].len, f[0].bytes[0]),
            (Some(0x18FC_F200), 8, 0xE1)
        );
        assert_eq!((f[1].ts, f[1].len, f[1].bytes[2]), (None, 3, 0x33));
        assert_eq!(s.remote_frames, 1);
        assert_eq!(s.malformed, 1);
    }

    #[test]
    fn unlabelled_without_assume_label_is_an_error() {
        let e = read_bytes(
            &preset("candump").unwrap(),
            b"(1.0) can0 123#00\n",
            &opts(None),
        )
        .unwrap_err();
        assert!(matches!(e, ReadError::Unlabelled { line: 1, .. }));
    }

    #[test]
    fn hcrl_text_form() {
        let text = "Timestamp: 1479121434.850202        ID: 0350    000    DLC: 8    05 28 84 66 6d 00 00 a2\nTimestamp: 1479121434.850423        ID: 02c0    000    DLC: 8    14 00 00 00 00 00 00 00\n";
        let f = preset("hcrl-car-hacking").unwrap();
        assert!(read_bytes(&f, text.as_bytes(), &opts(None)).is_err());
        let (fr, _) = read_bytes(&f, text.as_bytes(), &opts(Some(false))).unwrap();
        assert_eq!(fr.len(), 2);
        assert_eq!(
            (fr[0].id, fr[0].bytes[4], fr[0].label),
            (Some(0x350), 0x6d, false)
        );
    }
}
