//! The CSV mapping reader (spec §2.2 "generic csv"), on the `csv` crate: RFC 4180 quoting,
//! LF/CRLF and the UTF-8 BOM are the crate's; field rules are [`super::frame`]'s.
//!
//! Records are read as raw bytes into one reused [`csv::ByteRecord`], so a row costs no
//! allocation and no UTF-8 check.

use std::io::Read;

use super::format::{Col, CsvMapping, DlcUnit, LabelPos, LabelValues, PayloadSpec};
use super::frame::{self, Base, Frame, IdField};
use super::reader::{ReadCtx, ReadError};

/// Payload columns after the header is known.
enum PayloadIdx {
    Hex(usize),
    Columns(Vec<usize>, Base),
    Run(usize, Base),
}

enum LabelIdx<'m> {
    Col(usize, &'m LabelValues),
    After(&'m LabelValues),
    Assume(bool),
}

/// The mapping with every column resolved to an index.
struct Resolved<'m> {
    names: Vec<String>,
    id: usize,
    id_base: Base,
    id_max: u32,
    payload: PayloadIdx,
    dlc: Option<(usize, DlcUnit)>,
    label: LabelIdx<'m>,
    ts: Option<usize>,
    /// With a header, every row has exactly its field count.
    exact: Option<usize>,
    /// The fields a row needs at least (headerless, no run).
    min_fields: usize,
}

impl Resolved<'_> {
    fn name(&self, i: usize) -> String {
        self.names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("field {}", i + 1))
    }
}

fn resolve<'m>(
    m: &'m CsvMapping,
    header: Option<&csv::ByteRecord>,
    ctx: &ReadCtx,
) -> Result<Resolved<'m>, ReadError> {
    let names: Vec<String> = header
        .map(|h| {
            h.iter()
                .map(|f| String::from_utf8_lossy(frame::trim(f)).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let idx = |c: &Col| -> Result<usize, ReadError> {
        match c {
            Col::Index(i) => Ok(*i),
            Col::Name(n) => {
                names
                    .iter()
                    .position(|h| h == n)
                    .ok_or_else(|| ReadError::MissingColumn {
                        file: ctx.file.to_path_buf(),
                        column: n.clone(),
                        header: names.clone(),
                    })
            }
        }
    };
    let id = idx(&m.id.col)?;
    let payload = match &m.payload {
        PayloadSpec::Hex { col } => PayloadIdx::Hex(idx(col)?),
        PayloadSpec::Columns { cols, base } => {
            PayloadIdx::Columns(cols.iter().map(&idx).collect::<Result<_, _>>()?, *base)
        }
        PayloadSpec::Run { start, base } => PayloadIdx::Run(*start, *base),
    };
    let dlc = match &m.dlc {
        Some(d) => Some((idx(&d.col)?, d.unit)),
        None => None,
    };
    let label = match (&m.label, ctx.opts.assume_label) {
        (Some(l), _) => match &l.pos {
            LabelPos::Col(c) => LabelIdx::Col(idx(c)?, &l.values),
            LabelPos::AfterPayload => LabelIdx::After(&l.values),
        },
        (None, Some(a)) => LabelIdx::Assume(a),
        (None, None) => {
            return Err(ReadError::Unlabelled {
                file: ctx.file.to_path_buf(),
                line: 1,
            });
        }
    };
    let ts = m.timestamp.as_ref().map(&idx).transpose()?;
    let mut min_fields = id + 1;
    match &payload {
        PayloadIdx::Hex(i) => min_fields = min_fields.max(i + 1),
        PayloadIdx::Columns(c, _) => {
            min_fields = min_fields.max(c.iter().max().map_or(0, |m| m + 1))
        }
        PayloadIdx::Run(s, _) => min_fields = min_fields.max(*s),
    }
    if let Some((d, _)) = dlc {
        min_fields = min_fields.max(d + 1);
    }
    if let LabelIdx::Col(c, _) = label {
        min_fields = min_fields.max(c + 1);
    }
    if let Some(t) = ts {
        min_fields = min_fields.max(t + 1);
    }
    // Rows of a DLC-long run vary in length; the run check counts their fields instead.
    let exact = match payload {
        PayloadIdx::Run(..) => None,
        _ => header.map(|h| h.len()),
    };
    Ok(Resolved {
        exact,
        names,
        id,
        id_base: m.id.base,
        id_max: m.id.max,
        payload,
        dlc,
        label,
        ts,
        min_fields,
    })
}

/// Reads `input` with mapping `m` into `ctx`.
pub(crate) fn read(
    m: &CsvMapping,
    input: &mut dyn Read,
    ctx: &mut ReadCtx,
) -> Result<(), ReadError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(m.delimiter)
        .buffer_capacity(1 << 16)
        .from_reader(input);
    let mut rec = csv::ByteRecord::new();
    let csv_err = |ctx: &ReadCtx, e: csv::Error| -> ReadError {
        let line = e.position().map_or(0, |p| p.line());
        match e.into_kind() {
            csv::ErrorKind::Io(source) => ctx.io(source),
            other => ReadError::Csv {
                file: ctx.file.to_path_buf(),
                line,
                message: format!("{other:?}"),
            },
        }
    };
    let header = if m.header {
        // Skip leading blank lines: the csv crate yields none, so the first record is it.
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => Some(rec.clone()),
            Ok(false) => return Ok(()), // empty file
            Err(e) => return Err(csv_err(ctx, e)),
        }
    } else {
        None
    };
    let r = resolve(m, header.as_ref(), ctx)?;
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_err(ctx, e)),
        }
        // A line that is only spaces (or, headerless, only a BOM remnant) is not a row.
        if rec.len() == 1 && frame::trim(&rec[0]).is_empty() {
            continue;
        }
        ctx.stats.rows += 1;
        let line = rec.position().map_or(0, |p| p.line());
        if let Some(n) = r.exact {
            if rec.len() != n {
                ctx.malformed(
                    line,
                    "row",
                    format!("expected {n} fields, found {}", rec.len()),
                );
                continue;
            }
        } else if rec.len() < r.min_fields {
            ctx.malformed(
                line,
                "row",
                format!(
                    "expected at least {} fields, found {}",
                    r.min_fields,
                    rec.len()
                ),
            );
            continue;
        }
        if let Some(f) = row(&r, &rec, line, ctx)
            && ctx.emit(&f).is_break()
        {
            break;
        }
    }
    Ok(())
}

/// One record → a frame, or `None` (counted as malformed).
#[inline]
fn row(r: &Resolved, rec: &csv::ByteRecord, line: u64, ctx: &mut ReadCtx) -> Option<Frame> {
    let dlc = match r.dlc {
        None => None,
        Some((i, unit)) => match frame::parse_uint(&rec[i]) {
            Some(v) => Some(match unit {
                DlcUnit::Bytes => v,
                DlcUnit::Bits => v.div_ceil(8),
            }),
            None => {
                ctx.malformed(
                    line,
                    r.name(i),
                    format!(
                        "expected a DLC (a non-negative integer), found {:?}",
                        String::from_utf8_lossy(&rec[i])
                    ),
                );
                return None;
            }
        },
    };
    let id = match frame::parse_id(&rec[r.id], r.id_base, r.id_max) {
        IdField::Id(v) => Some(v),
        IdField::Unparsable => {
            ctx.stats.unparsable_ids += 1;
            None
        }
        IdField::OutOfRange(v) => {
            ctx.malformed(
                line,
                r.name(r.id),
                format!(
                    "expected an ID of at most {} bits, found {v:#X}",
                    if r.id_max == frame::MAX_ID_11 { 11 } else { 29 }
                ),
            );
            return None;
        }
    };
    let mut bytes = [0u8; 8];
    let mut len = 0u8;
    let mut label_at = None;
    match &r.payload {
        PayloadIdx::Hex(i) => {
            let d = dlc.map(|d| d.min(64) as u8);
            match frame::parse_hex_payload(&rec[*i], d) {
                Some(p) => {
                    bytes = p.bytes;
                    len = p.len;
                    if p.long {
                        ctx.stats.long_payloads += 1;
                    }
                }
                None => {
                    ctx.malformed(
                        line,
                        r.name(*i),
                        format!(
                            "expected hex payload digits, found {:?}",
                            String::from_utf8_lossy(&rec[*i])
                        ),
                    );
                    return None;
                }
            }
        }
        PayloadIdx::Columns(cols, base) => {
            for (j, &c) in cols.iter().enumerate() {
                match frame::parse_byte(&rec[c], *base) {
                    Ok(Some(b)) => {
                        bytes[j] = b;
                        len = j as u8 + 1;
                    }
                    Ok(None) => {}
                    Err(frame::BadByte) => {
                        ctx.malformed(
                            line,
                            r.name(c),
                            format!(
                                "expected a byte (0–255, {}), found {:?}",
                                if *base == Base::Hex { "hex" } else { "decimal" },
                                String::from_utf8_lossy(&rec[c])
                            ),
                        );
                        return None;
                    }
                }
            }
        }
        PayloadIdx::Run(start, base) => {
            let n = dlc.unwrap_or(0) as usize;
            let needed = start + n + usize::from(matches!(r.label, LabelIdx::After(_)));
            // Trailing empty fields (a stray comma) are tolerated; missing ones are not.
            if rec.len() < needed || rec.iter().skip(needed).any(|f| !frame::trim(f).is_empty()) {
                ctx.malformed(
                    line,
                    "row",
                    format!("expected {needed} fields for DLC {n}, found {}", rec.len()),
                );
                return None;
            }
            if n > 8 {
                ctx.stats.long_payloads += 1;
            }
            for j in 0..n {
                match frame::parse_byte(&rec[start + j], *base) {
                    Ok(b) => {
                        if j < 8 {
                            bytes[j] = b.unwrap_or(0);
                        }
                    }
                    Err(frame::BadByte) => {
                        ctx.malformed(
                            line,
                            r.name(start + j),
                            format!(
                                "expected a hex byte, found {:?}",
                                String::from_utf8_lossy(&rec[start + j])
                            ),
                        );
                        return None;
                    }
                }
            }
            len = n.min(8) as u8;
            label_at = Some(start + n);
        }
    }
    let label = match &r.label {
        LabelIdx::Assume(a) => *a,
        LabelIdx::Col(i, values) => classify(r, rec, *i, values, line, ctx)?,
        LabelIdx::After(values) => classify(r, rec, label_at.unwrap_or(0), values, line, ctx)?,
    };
    let ts = match r.ts {
        None => None,
        Some(i) => {
            let t = frame::parse_ts(&rec[i]);
            if t.is_none() && !frame::trim(&rec[i]).is_empty() {
                ctx.stats.unparsable_timestamps += 1;
            }
            t
        }
    };
    Some(Frame {
        ts,
        id,
        bytes,
        len,
        label,
    })
}

#[inline]
fn classify(
    r: &Resolved,
    rec: &csv::ByteRecord,
    i: usize,
    values: &LabelValues,
    line: u64,
    ctx: &mut ReadCtx,
) -> Option<bool> {
    let v = frame::trim(rec.get(i).unwrap_or(b""));
    match values.classify(v) {
        Some(l) => Some(l),
        None => {
            ctx.malformed(
                line,
                r.name(i),
                format!(
                    "expected a label ({}), found {:?}",
                    values.describe(),
                    String::from_utf8_lossy(v)
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::train::data::format::preset;
    use crate::train::data::reader::{ReadError, ReadOptions, read_bytes};

    fn ctt(
        text: &str,
    ) -> (
        Vec<crate::train::data::frame::Frame>,
        crate::train::data::reader::ReadStats,
    ) {
        read_bytes(
            &preset("can-train-and-test").unwrap(),
            text.as_bytes(),
            &ReadOptions {
                malformed_threshold: 1.0,
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn reads_rows_in_order() {
        let (f, s) = ctt(
            "timestamp,arbitration_id,data_field,attack\r\n1.0,1E5,460196E001FE6701,0\r\n2.0,000,0000000000000000,1\r\n",
        );
        assert_eq!(s.rows, 2);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].id, Some(0x1E5));
        assert_eq!(f[0].bytes, [0x46, 0x01, 0x96, 0xE0, 0x01, 0xFE, 0x67, 0x01]);
        assert_eq!((f[1].label, f[1].ts), (true, Some(2.0)));
    }

    #[test]
    fn malformed_rows_are_counted_with_lines() {
        let (f, s) = ctt(
            "timestamp,arbitration_id,data_field,attack\n1,1,00,0\n2,1E5\n3,1,00,7\n4,1,0G,0\n5,FFF,00,0\n",
        );
        assert_eq!(f.len(), 1);
        assert_eq!(s.malformed, 4);
        let lines: Vec<u64> = s.malformed_examples.iter().map(|m| m.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6]);
        assert_eq!(s.malformed_examples[1].field, "attack");
        assert_eq!(s.malformed_examples[3].field, "arbitration_id");
    }

    #[test]
    fn missing_column_names_it() {
        let e = read_bytes(
            &preset("can-train-and-test").unwrap(),
            b"timestamp,id,data_field,attack\n",
            &ReadOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(e, ReadError::MissingColumn { ref column, .. } if column == "arbitration_id")
        );
    }

    #[test]
    fn hcrl_shifted_flag() {
        let f = preset("hcrl-car-hacking").unwrap();
        let text = "1478198376.389427,0316,8,05,21,68,09,21,21,00,6f,R\n1478198376.389636,018f,2,fe,5b,T\n1478198376.3,0260,3,01,02,R,extra\n";
        let (frames, s) = read_bytes(
            &f,
            text.as_bytes(),
            &ReadOptions {
                malformed_threshold: 1.0,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].id, Some(0x316));
        assert_eq!(frames[0].len, 8);
        assert!(!frames[0].label);
        assert_eq!((frames[1].len, frames[1].label), (2, true));
        assert_eq!(&frames[1].bytes[..2], &[0xfe, 0x5b]);
        assert_eq!(s.malformed, 1);
    }
}
