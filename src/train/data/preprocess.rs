//! One dataset → one preprocess output: list the files (layout), hash and de-duplicate them,
//! read them, cut windows, split, build the vocabulary from training windows, build graphs,
//! and write everything the trainers load.
//!
//! # Output layout
//!
//! ```text
//! <out>/
//!   graphs/train.safetensors        GraphSet (see `graphs`): x, node_ptr, edge_src/dst, edge_ptr,
//!   graphs/val.safetensors            [edge_attr], y, node_y, file, window; metadata `files`
//!   graphs/<test split>.safetensors one per test folder (`test_01_…`), and `test_streams`
//!                                     when the dataset has streams
//!   vocab.json                      {"ids": [sorted CAN IDs], "unk": n, "num_ids": n+1}
//!   manifest.json                   see `manifest::Manifest`: files with hashes and reading
//!                                     counts, duplicates and test overlaps, windows per split
//!                                     and class, num_ids, unk_row_rate per split, warnings
//! ```
//!
//! Every split named in the manifest has its file, even when empty. The `files` metadata of
//! each set lists the files that were read (paths relative to the dataset root), the same list
//! in every split; a graph's `file` indexes it and its `window` is the window's index in that
//! file. The output is deterministic: the same data and config give identical bytes, whatever
//! the thread count. [`load`] reads an output back (manifest, vocabulary, every split).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use indexmap::IndexMap;
use thiserror::Error;

use super::graph::GraphBuilder;
use super::graphs::{GraphSet, GraphSetError};
use super::layout::{self, Decision, InputFile, Layout, LayoutError, Role};
use super::manifest::{
    ConfigSummary, DatasetSummary, Duplicate, FileEntry, MANIFEST_VERSION, Manifest, SplitSummary,
    TestOverlap, Totals,
};
use super::options::{DatasetConfig, StageConfig};
use super::reader::{self, ReadError, ReadOptions, ReadStats};
use super::split::{self, Axis, EMBARGO, Kind, Mode, SplitConfig, SplitFile, TRAIN, VAL};
use super::vocab::{Vocab, VocabBuilder};
use super::window::Stream;

/// Why a preprocess failed.
#[derive(Debug, Error)]
pub enum PreprocessError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("`{}` has no timestamps, so it cannot be cut by time (set `split_axis = \"rows\"`)", file.display())]
    NoTimestamps { file: PathBuf },
    #[error("`{}`: no training windows (every `train`/`stream` file is empty or too short for one window)", root.display())]
    NoTrainingWindows { root: PathBuf },
    #[error("`{}`: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    GraphSet(#[from] GraphSetError),
    #[error("`{}`: {message}", path.display())]
    Load { path: PathBuf, message: String },
}

/// The result of a preprocess, before it is written.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub manifest: Manifest,
    pub vocab: Vocab,
    /// Split name → graphs, in manifest order.
    pub sets: IndexMap<String, GraphSet>,
}

/// Runs `f` over `items` on up to `threads` threads; results in item order.
fn par_map<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut slots: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    let chunks: Vec<Vec<(usize, R)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= items.len() {
                            return out;
                        }
                        out.push((i, f(&items[i])));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    for (i, r) in chunks.into_iter().flatten() {
        slots[i] = Some(r);
    }
    slots.into_iter().flatten().collect()
}

/// One file that is read, with what reading gave.
struct ReadFile {
    /// Index into the plan's files.
    plan: usize,
    stream: Stream,
    stats: ReadStats,
    /// Frames read (the stream is freed once its graphs are built).
    frames: usize,
    windows: usize,
}

/// Per file and split: what its graphs contributed.
#[derive(Default, Clone)]
struct Contribution {
    rows: u64,
    unk_rows: u64,
}

fn hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the dataset at `root` and builds its graphs and manifest (nothing is written).
pub fn preprocess(
    root: &Path,
    dataset: &DatasetConfig,
    stage: &StageConfig,
    threads: usize,
) -> Result<Output, PreprocessError> {
    let plan = layout::plan(root, &dataset.layout, &dataset.format, dataset.assume_label)?;
    let files = &plan.files;
    let geometry = stage.geometry;
    let mut warnings = Vec::new();

    // 1. Content hashes, then de-duplication.
    let hashed: Vec<Result<([u8; 32], u64), ReadError>> =
        par_map(files, threads, |f| super::zip::content_hash(&f.path));
    let mut hashes = Vec::with_capacity(files.len());
    let mut sizes = Vec::with_capacity(files.len());
    for h in hashed {
        let (h, n) = h?;
        hashes.push(h);
        sizes.push(n);
    }
    let decisions = layout::dedup(files, &hashes, dataset.drop_test_overlaps);

    // 2. Read what is kept.
    let to_read: Vec<usize> = (0..files.len())
        .filter(|&i| {
            matches!(
                decisions[i],
                Decision::Read | Decision::TestOverlap { dropped: false, .. }
            )
        })
        .collect();
    let max_frames = stage.max_windows_per_file.map(|k| geometry.frames_for(k));
    let read: Vec<Result<ReadFile, ReadError>> = par_map(&to_read, threads, |&i| {
        let f: &InputFile = &files[i];
        let opts = ReadOptions {
            assume_label: f.assume_label,
            max_frames,
            malformed_threshold: dataset.malformed_threshold,
        };
        let mut stream = Stream::default();
        let stats = reader::read_file(&f.format, &f.path, &opts, &mut |fr| {
            stream.push(fr);
            ControlFlow::Continue(())
        })?;
        let mut windows = geometry.num_windows(stream.len());
        if let Some(k) = stage.max_windows_per_file {
            windows = windows.min(k);
        }
        Ok(ReadFile {
            plan: i,
            frames: stream.len(),
            stream,
            stats,
            windows,
        })
    });
    let read: Vec<ReadFile> = read.into_iter().collect::<Result<_, _>>()?;
    for r in &read {
        let rel = &files[r.plan].rel;
        if r.stream.is_empty() {
            warnings.push(format!("`{rel}`: no frames (empty file)"));
        } else if r.windows == 0 {
            warnings.push(format!("`{rel}`: one frame only, no window"));
        }
    }

    // 3. Split names and assignment.
    let mut test_names: Vec<String> = files
        .iter()
        .filter_map(|f| match &f.role {
            Role::Test(n) => Some(n.clone()),
            _ => None,
        })
        .collect();
    test_names.sort();
    test_names.dedup();
    let has_streams = files.iter().any(|f| f.role == Role::Stream);
    let mut split_names = vec!["train".to_string(), "val".to_string()];
    split_names.extend(test_names.iter().cloned());
    if has_streams {
        split_names.push("test_streams".to_string());
    }
    let split_index = |name: &str| split_names.iter().position(|n| n == name).unwrap_or(0) as u16;
    let streams_test = split_index("test_streams");
    let split_files: Vec<SplitFile> = read
        .iter()
        .map(|r| {
            let f = &files[r.plan];
            let kind = match &f.role {
                Role::Train => Kind::Train,
                Role::Stream => Kind::Stream { test: streams_test },
                Role::Test(n) => Kind::Test {
                    split: split_index(n),
                },
            };
            let covered = if r.windows == 0 {
                0
            } else {
                geometry.rows(r.windows - 1, r.stream.len()).end
            };
            let window_ts = if stage.axis == Axis::Time && f.role == Role::Stream {
                (0..r.windows)
                    .map(|k| r.stream.ts_at(geometry.rows(k, r.stream.len()).start))
                    .collect()
            } else {
                Vec::new()
            };
            SplitFile {
                kind,
                hash: hashes[r.plan],
                windows: r.windows,
                has_attack: r.stream.labels[..covered].iter().any(|&l| l),
                window_ts,
            }
        })
        .collect();
    let split_cfg = SplitConfig {
        mode: stage.mode,
        val_fraction: stage.val_fraction,
        embargo: stage.embargo(),
        stream_fractions: stage.stream_fractions,
        axis: stage.axis,
        seed: stage.seed,
    };
    let assignment = split::assign(&split_files, &split_cfg).map_err(|e| match e {
        split::SplitError::NoTimestamps { file } => PreprocessError::NoTimestamps {
            file: files[read[file].plan].path.clone(),
        },
    })?;
    warnings.extend(assignment.warnings.iter().cloned());

    // 4. Vocabulary from training windows (their frames and each last row's successor).
    let mut vb = VocabBuilder::default();
    let mut any_train = false;
    for (r, a) in read.iter().zip(&assignment.windows) {
        for (k, &s) in a.iter().enumerate() {
            if s == TRAIN {
                any_train = true;
                let rows = geometry.rows(k, r.stream.len());
                vb.add(&r.stream.ids[rows.start..=rows.end]);
            }
        }
    }
    if !any_train {
        return Err(PreprocessError::NoTrainingWindows {
            root: root.to_path_buf(),
        });
    }
    let vocab = vb.build();

    // 5. Graphs, per file in parallel, joined in file order.
    let num_splits = split_names.len();
    let mut per_file: Vec<(Vec<GraphSet>, Vec<Contribution>)> =
        par_map(&(0..read.len()).collect::<Vec<_>>(), threads, |&fi| {
            let r = &read[fi];
            let a = &assignment.windows[fi];
            let v = vocab.map(&r.stream.ids);
            let mut builder =
                GraphBuilder::new(vocab.num_ids as usize, geometry.window, stage.edge_features);
            let mut sets: Vec<GraphSet> = (0..num_splits).map(|_| GraphSet::new()).collect();
            let mut contrib = vec![Contribution::default(); num_splits];
            for (k, &s) in a.iter().enumerate() {
                if s == EMBARGO {
                    continue;
                }
                let rows = geometry.rows(k, r.stream.len());
                let set = &mut sets[s as usize];
                builder.push(
                    set,
                    &v[rows.start..=rows.end],
                    &r.stream.bytes[rows.clone()],
                    &r.stream.labels[rows.clone()],
                    fi as u32,
                    k as u32,
                );
                let c = &mut contrib[s as usize];
                c.rows += rows.len() as u64;
                c.unk_rows += v[rows].iter().filter(|&&x| x == vocab.unk).count() as u64;
            }
            (sets, contrib)
        });
    let mut read = read;
    for r in &mut read {
        r.stream = Stream::default();
    }
    let read_names: Vec<String> = read.iter().map(|r| files[r.plan].rel.clone()).collect();
    let mut sets: IndexMap<String, GraphSet> = IndexMap::new();
    let mut summaries: IndexMap<String, SplitSummary> = IndexMap::new();
    for (si, name) in split_names.iter().enumerate() {
        let mut set = GraphSet::new();
        set.files = read_names.clone();
        if stage.edge_features {
            set.edge_attr = Some(Vec::new());
        }
        let mut sum = SplitSummary {
            path: format!("graphs/{name}.safetensors"),
            ..Default::default()
        };
        for (fs, contrib) in &mut per_file {
            // Taken, so each file's part is freed once joined.
            let part = std::mem::take(&mut fs[si]);
            if !part.is_empty() {
                sum.files += 1;
            }
            set.append(&part);
            sum.rows += contrib[si].rows;
            sum.unk_rows += contrib[si].unk_rows;
        }
        sum.windows = set.len();
        sum.attack = set.y.iter().filter(|&&y| y == 1).count();
        sum.normal = sum.windows - sum.attack;
        sum.nodes = set.num_nodes();
        sum.edges = set.num_edges();
        sum.unk_row_rate = if sum.rows > 0 {
            sum.unk_rows as f64 / sum.rows as f64
        } else {
            0.0
        };
        if sum.windows == 0 {
            warnings.push(format!("split `{name}` has no windows"));
        } else if sum.attack == 0 {
            warnings.push(format!("split `{name}` has no attack windows"));
        }
        sets.insert(name.clone(), set);
        summaries.insert(name.clone(), sum);
    }

    // 6. Manifest.
    let mut entries: Vec<FileEntry> = files
        .iter()
        .enumerate()
        .map(|(i, f)| FileEntry {
            path: f.rel.clone(),
            role: f.role.to_string(),
            format: f.format.name.clone(),
            hash: hex(&hashes[i]),
            bytes: sizes[i],
            status: match decisions[i] {
                Decision::Read => "read",
                Decision::Duplicate { .. } => "duplicate",
                Decision::TestOverlap { dropped: true, .. } => "test_overlap_dropped",
                Decision::TestOverlap { dropped: false, .. } => "test_overlap_kept",
            }
            .to_string(),
            same_as: match decisions[i] {
                Decision::Read => None,
                Decision::Duplicate { of } | Decision::TestOverlap { of, .. } => {
                    Some(files[of].rel.clone())
                }
            },
            ..Default::default()
        })
        .collect();
    let mut totals = Totals {
        files_listed: files.len(),
        files_read: read.len(),
        ..Default::default()
    };
    for (r, a) in read.iter().zip(&assignment.windows) {
        let e = &mut entries[r.plan];
        e.windows = r.windows;
        e.trailing_rows = if r.windows > 0 {
            r.frames.saturating_sub(1) - geometry.rows(r.windows - 1, r.frames).end
        } else {
            0
        };
        let mut per: BTreeMap<String, usize> = BTreeMap::new();
        for &s in a {
            let name = if s == EMBARGO {
                "embargo"
            } else {
                split_names[s as usize].as_str()
            };
            *per.entry(name.to_string()).or_default() += 1;
        }
        totals.windows += r.windows;
        totals.embargo_windows += per.get("embargo").copied().unwrap_or(0);
        e.splits = per;
        let s = &r.stats;
        totals.rows += s.rows;
        totals.frames += s.frames;
        totals.malformed_rows += s.malformed;
        totals.unparsable_ids += s.unparsable_ids;
        totals.long_payloads += s.long_payloads;
        totals.error_frames += s.error_frames;
        totals.non_monotonic_ts += s.non_monotonic_ts;
        if s.malformed > 0 {
            warnings.push(format!(
                "`{}`: {} malformed rows skipped (first at line {})",
                files[r.plan].rel,
                s.malformed,
                s.malformed_examples.first().map_or(0, |m| m.line)
            ));
        }
        e.read = Some(r.stats.clone());
    }
    let mut duplicates = Vec::new();
    let mut overlaps = Vec::new();
    for (i, d) in decisions.iter().enumerate() {
        match d {
            Decision::Read => {}
            Decision::Duplicate { of } => duplicates.push(Duplicate {
                path: files[i].rel.clone(),
                same_as: files[*of].rel.clone(),
            }),
            Decision::TestOverlap { of, dropped } => overlaps.push(TestOverlap {
                path: files[i].rel.clone(),
                split: match &files[i].role {
                    Role::Test(n) => n.clone(),
                    other => other.to_string(),
                },
                same_as: files[*of].rel.clone(),
                dropped: *dropped,
            }),
        }
    }
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        hash: "blake3".into(),
        dataset: DatasetSummary {
            format: dataset.format.name.clone(),
            layout: match dataset.layout {
                Layout::Folders => "folders",
                Layout::Streams => "streams",
                Layout::Manifest(_) => "manifest",
            }
            .into(),
            drop_test_overlaps: dataset.drop_test_overlaps,
            malformed_threshold: dataset.malformed_threshold,
        },
        config: ConfigSummary {
            seed: stage.seed,
            profile: stage.profile.clone(),
            window: geometry.window,
            stride: geometry.stride,
            split: match stage.mode {
                Mode::Block => "block",
                Mode::File => "file",
            }
            .into(),
            val_fraction: stage.val_fraction,
            embargo_windows: stage.embargo(),
            stream_fractions: stage.stream_fractions,
            split_axis: match stage.axis {
                Axis::Rows => "rows",
                Axis::Time => "time",
            }
            .into(),
            max_windows_per_file: stage.max_windows_per_file.unwrap_or(0),
            edge_features: stage.edge_features,
        },
        num_ids: vocab.num_ids,
        unk: vocab.unk,
        splits: summaries,
        files: entries,
        duplicates,
        test_overlaps: overlaps,
        ignored: plan.ignored.clone(),
        warnings,
        totals,
    };
    // Unused split indices stay valid: VAL exists even when empty.
    debug_assert_eq!(split_index("val"), VAL);
    Ok(Output {
        manifest,
        vocab,
        sets,
    })
}

/// Writes an [`Output`] into `dir` (the layout of the module doc).
pub fn write(out: &Output, dir: &Path) -> Result<(), PreprocessError> {
    let werr = |path: PathBuf| move |source| PreprocessError::Write { path, source };
    let graphs = dir.join("graphs");
    std::fs::create_dir_all(&graphs).map_err(werr(graphs.clone()))?;
    for (name, set) in &out.sets {
        set.save(&graphs.join(format!("{name}.safetensors")))?;
    }
    let vocab = dir.join("vocab.json");
    let mut v = serde_json::to_string_pretty(&out.vocab).unwrap_or_default();
    v.push('\n');
    std::fs::write(&vocab, v).map_err(werr(vocab.clone()))?;
    let manifest = dir.join("manifest.json");
    let mut m = serde_json::to_string_pretty(&out.manifest).unwrap_or_default();
    m.push('\n');
    std::fs::write(&manifest, m).map_err(werr(manifest.clone()))?;
    Ok(())
}

/// Loads a preprocess output written by [`write()`] (what the trainers read from the
/// preprocess store path): manifest, vocabulary, and every split the manifest names.
pub fn load(dir: &Path) -> Result<Output, PreprocessError> {
    let read = |name: &str| -> Result<String, PreprocessError> {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| PreprocessError::Load {
            path,
            message: e.to_string(),
        })
    };
    let manifest =
        Manifest::from_json(&read("manifest.json")?).map_err(|e| PreprocessError::Load {
            path: dir.join("manifest.json"),
            message: e.to_string(),
        })?;
    let vocab: Vocab =
        serde_json::from_str(&read("vocab.json")?).map_err(|e| PreprocessError::Load {
            path: dir.join("vocab.json"),
            message: e.to_string(),
        })?;
    if vocab.num_ids != manifest.num_ids {
        return Err(PreprocessError::Load {
            path: dir.join("vocab.json"),
            message: format!(
                "num_ids {} differs from the manifest's {}",
                vocab.num_ids, manifest.num_ids
            ),
        });
    }
    let mut sets = IndexMap::new();
    for (name, s) in &manifest.splits {
        sets.insert(name.clone(), GraphSet::load(&dir.join(&s.path))?);
    }
    Ok(Output {
        manifest,
        vocab,
        sets,
    })
}

/// [`preprocess()`] then [`write()`]: the whole stage, engine-free.
pub fn run(
    root: &Path,
    dataset: &DatasetConfig,
    stage: &StageConfig,
    out: &Path,
    threads: usize,
) -> Result<Manifest, PreprocessError> {
    let o = preprocess(root, dataset, stage, threads)?;
    write(&o, out)?;
    Ok(o.manifest)
}
