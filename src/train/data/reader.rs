//! Streaming readers: one file in, frames out in file order, with per-file counts.
//!
//! [`read_file`] opens a file (or a zip's single data member, [`super::zip`]) and dispatches on
//! the format: the CSV mapping ([`super::csv_reader`]) or a line-oriented text form
//! ([`super::candump`]). Frames go to a sink one at a time; nothing is buffered beyond the
//! reader's own block, so a file of any size reads in constant memory.
//!
//! What happens to bad input (spec §2.1), never a panic:
//!
//! | input | outcome |
//! |---|---|
//! | wrong field count (a truncated line), unparsable label, byte or DLC field, unknown label value with both label lists given, an ID wider than the format allows (a 29-bit ID in an 11-bit format) | row skipped, counted in [`ReadStats::malformed`] with the first [`MALFORMED_EXAMPLES`] line numbers |
//! | more malformed rows than `malformed_threshold` (default 1%) of the file's rows | [`ReadError::TooManyMalformed`], naming file, line, field and what was expected |
//! | unparsable ID (`na`, empty, not hex/decimal) | frame kept with `id = None` (maps to UNK), counted in `unparsable_ids` |
//! | payload longer than 8 bytes (CAN FD) | first 8 bytes kept, counted in `long_payloads` |
//! | candump error frame | skipped, counted in `error_frames` |
//! | empty file, or header only | zero frames (the caller reports the file as empty) |
//! | CRLF line ends, UTF-8 BOM, surrounding spaces, RFC 4180 quoting | read as usual |
//! | a zip with no or several data members | [`ReadError::ZipMembers`] naming them |
//! | a header without a mapped column | [`ReadError::MissingColumn`] |
//! | no label in the file and no `assume_label` | [`ReadError::Unlabelled`] |

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::format::{Format, FormatKind};
use super::frame::Frame;

/// How many malformed rows per file are reported by line.
pub const MALFORMED_EXAMPLES: usize = 5;

/// The default share of malformed rows above which a file is an error.
pub const DEFAULT_MALFORMED_THRESHOLD: f64 = 0.01;

/// One skipped row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Malformed {
    /// 1-based line number in the (decompressed) file.
    pub line: u64,
    /// The field at fault (column name, `field N`, or `row` for a wrong field count).
    pub field: String,
    /// What was expected and what was found.
    pub message: String,
}

/// Per-file reading counts, written to the manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReadStats {
    /// Data rows seen (header, blank and comment lines excluded), malformed ones included.
    pub rows: u64,
    /// Frames passed to the sink.
    pub frames: u64,
    pub malformed: u64,
    pub malformed_examples: Vec<Malformed>,
    /// Frames kept with an unparsable ID (mapped to UNK).
    pub unparsable_ids: u64,
    /// Frames whose payload had more than 8 bytes (CAN FD); truncated to 8.
    pub long_payloads: u64,
    /// candump remote frames (kept, no bytes).
    pub remote_frames: u64,
    /// candump error frames (skipped).
    pub error_frames: u64,
    /// Frames whose timestamp field was present but not a number (kept, no timestamp).
    pub unparsable_timestamps: u64,
    /// Steps where a timestamp is smaller than the previous frame's.
    pub non_monotonic_ts: u64,
    /// Reading stopped at `max_frames` before the end of the file.
    pub truncated: bool,
}

/// Errors that stop reading a file.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error("`{}`: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}`, line {line}: {message}", file.display())]
    Csv {
        file: PathBuf,
        line: u64,
        message: String,
    },
    #[error("`{}`: not a readable zip archive: {message}", file.display())]
    Zip { file: PathBuf, message: String },
    #[error(
        "`{}`: a zip must hold exactly one data member (`__MACOSX/` and dot-files aside), found {}: {}",
        file.display(), members.len(), members.join(", ")
    )]
    ZipMembers { file: PathBuf, members: Vec<String> },
    #[error("`{}`: the header has no column `{column}` (header: {})", file.display(), header.join(","))]
    MissingColumn {
        file: PathBuf,
        column: String,
        header: Vec<String>,
    },
    #[error(
        "`{}`, line {line}: this format has no label here and the dataset sets no `assume_label` (\"normal\" or \"attack\")",
        file.display()
    )]
    Unlabelled { file: PathBuf, line: u64 },
    #[error(
        "`{}`: {malformed} of {rows} rows are malformed (more than {:.2}%); first at line {line}, field `{field}`: {message}",
        file.display(), threshold * 100.0
    )]
    TooManyMalformed {
        file: PathBuf,
        malformed: u64,
        rows: u64,
        threshold: f64,
        line: u64,
        field: String,
        message: String,
    },
}

/// How to read one file.
#[derive(Clone, Debug)]
pub struct ReadOptions {
    /// The label of frames whose file carries none (`Some(false)` = normal).
    pub assume_label: Option<bool>,
    /// Stop after this many frames (the first K windows need `(K−1)·S + W + 1`).
    pub max_frames: Option<u64>,
    /// Share of malformed rows above which the file is an error.
    pub malformed_threshold: f64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            assume_label: None,
            max_frames: None,
            malformed_threshold: DEFAULT_MALFORMED_THRESHOLD,
        }
    }
}

/// Where frames go: return `Break` to stop reading.
pub type Sink<'a> = &'a mut dyn FnMut(&Frame) -> ControlFlow<()>;

/// State shared by the format readers while one file is read.
pub(crate) struct ReadCtx<'a, 's> {
    pub file: &'a Path,
    pub opts: &'a ReadOptions,
    pub stats: ReadStats,
    sink: Sink<'s>,
    last_ts: Option<f64>,
}

impl<'a, 's> ReadCtx<'a, 's> {
    pub fn new(file: &'a Path, opts: &'a ReadOptions, sink: Sink<'s>) -> Self {
        ReadCtx {
            file,
            opts,
            stats: ReadStats::default(),
            sink,
            last_ts: None,
        }
    }

    /// Records a skipped row.
    pub fn malformed(&mut self, line: u64, field: impl Into<String>, message: impl Into<String>) {
        self.stats.malformed += 1;
        if self.stats.malformed_examples.len() < MALFORMED_EXAMPLES {
            self.stats.malformed_examples.push(Malformed {
                line,
                field: field.into(),
                message: message.into(),
            });
        }
    }

    /// Passes a frame on; `Break` when the sink or `max_frames` says stop.
    #[inline]
    pub fn emit(&mut self, f: &Frame) -> ControlFlow<()> {
        if let Some(t) = f.ts {
            if let Some(prev) = self.last_ts
                && t < prev
            {
                self.stats.non_monotonic_ts += 1;
            }
            self.last_ts = Some(t);
        }
        self.stats.frames += 1;
        let flow = (self.sink)(f);
        if flow.is_break() {
            self.stats.truncated = true;
            return flow;
        }
        if let Some(max) = self.opts.max_frames
            && self.stats.frames >= max
        {
            self.stats.truncated = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    pub fn io(&self, source: std::io::Error) -> ReadError {
        ReadError::Io {
            file: self.file.to_path_buf(),
            source,
        }
    }

    /// The malformed-share check, once the file is read.
    pub fn finish(self) -> Result<ReadStats, ReadError> {
        let s = self.stats;
        if s.rows > 0 && (s.malformed as f64) > self.opts.malformed_threshold * s.rows as f64 {
            let first = s.malformed_examples.first().cloned().unwrap_or(Malformed {
                line: 0,
                field: String::new(),
                message: String::new(),
            });
            return Err(ReadError::TooManyMalformed {
                file: self.file.to_path_buf(),
                malformed: s.malformed,
                rows: s.rows,
                threshold: self.opts.malformed_threshold,
                line: first.line,
                field: first.field,
                message: first.message,
            });
        }
        Ok(s)
    }
}

/// Reads frames from `input` (already decompressed) in `format`. `file` names it in errors.
pub fn read_stream(
    format: &Format,
    input: &mut dyn std::io::Read,
    file: &Path,
    opts: &ReadOptions,
    sink: Sink<'_>,
) -> Result<ReadStats, ReadError> {
    let mut ctx = ReadCtx::new(file, opts, sink);
    match &format.kind {
        FormatKind::Csv(m) => super::csv_reader::read(m, input, &mut ctx)?,
        FormatKind::HcrlCarHacking(m) => {
            let mut buf = std::io::BufReader::with_capacity(1 << 16, input);
            if super::candump::looks_like_hcrl_text(&mut buf).map_err(|e| ctx.io(e))? {
                super::candump::read_hcrl_text(&mut buf, &mut ctx)?;
            } else {
                super::csv_reader::read(m, &mut buf, &mut ctx)?;
            }
        }
        FormatKind::Candump(c) => {
            let mut buf = std::io::BufReader::with_capacity(1 << 16, input);
            super::candump::read(c, &mut buf, &mut ctx)?;
        }
    }
    ctx.finish()
}

/// Reads the file at `path` (a `.zip` is read as its single data member, in place).
pub fn read_file(
    format: &Format,
    path: &Path,
    opts: &ReadOptions,
    sink: Sink<'_>,
) -> Result<ReadStats, ReadError> {
    super::zip::with_data(path, &mut |r| {
        read_stream(format, r, path, opts, &mut *sink)
    })
}

/// Reads a whole file into a vector (tests and small files).
pub fn read_all(
    format: &Format,
    path: &Path,
    opts: &ReadOptions,
) -> Result<(Vec<Frame>, ReadStats), ReadError> {
    let mut frames = Vec::new();
    let stats = read_file(format, path, opts, &mut |f| {
        frames.push(*f);
        ControlFlow::Continue(())
    })?;
    Ok((frames, stats))
}

/// Reads bytes already in memory (tests, fuzzing).
pub fn read_bytes(
    format: &Format,
    bytes: &[u8],
    opts: &ReadOptions,
) -> Result<(Vec<Frame>, ReadStats), ReadError> {
    let mut frames = Vec::new();
    let mut input = bytes;
    let stats = read_stream(format, &mut input, Path::new("<memory>"), opts, &mut |f| {
        frames.push(*f);
        ControlFlow::Continue(())
    })?;
    Ok((frames, stats))
}
