//! Builds a synthetic store for the store-operation benchmarks (`benches/store_ops.sh`):
//! real directories, content hashes, database rows, references, derivation rows and result
//! links, as realizes would leave them, without running builds.
//!
//! The store holds chains shaped like KD-GAT (`preprocess → vgae → gat → dqn → eval`, each
//! stage referring to the ones before it as the KD-GAT stages do); every second chain is a
//! student whose GAT refers to the previous chain's GAT as its `teacher`. `--rooted PCT` of
//! the chains get a result link (an indirect GC root) on their eval; the rest is garbage.
//!
//! ```text
//! cargo run --release --example synth_store -- STORE [--paths N] [--files F] [--file-bytes B] [--rooted PCT]
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use kdbuild::derivation::{Builder, CodeIdentity, Derivation, Input};
use kdbuild::hash::ContentHash;
use kdbuild::realize::results::link_result;
use kdbuild::store::{Store, tree_hash};
use kdbuild::store_path::StorePath;

const STAGES: [&str; 5] = ["preprocess", "vgae", "gat", "dqn", "eval"];

struct Args {
    store: PathBuf,
    paths: usize,
    files: usize,
    file_bytes: usize,
    rooted: usize,
}

fn args() -> Args {
    let mut a = std::env::args().skip(1);
    let mut out = Args {
        store: PathBuf::from(a.next().expect("usage: synth_store STORE [--paths N] ...")),
        paths: 100_000,
        files: 1,
        file_bytes: 256,
        rooted: 50,
    };
    while let Some(flag) = a.next() {
        let v: usize = a
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--paths" => out.paths = v,
            "--files" => out.files = v,
            "--file-bytes" => out.file_bytes = v,
            "--rooted" => out.rooted = v,
            _ => panic!("unknown flag {flag}"),
        }
    }
    out
}

/// Deterministic bytes that differ per path and file (xorshift).
fn fill(buf: &mut [u8], mut seed: u64) {
    seed |= 1;
    for chunk in buf.chunks_mut(8) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let b = seed.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

fn main() {
    let a = args();
    let t0 = Instant::now();
    let mut store = Store::open(&a.store).expect("open store");
    let root = store.root().to_path_buf();
    let chains = a.paths.div_ceil(STAGES.len());
    let mut buf = vec![0u8; a.file_bytes];
    // (path, drv hash, target, content hash, size, refs/inputs as (path, input name))
    type Row = (String, String, String, String, u64, Vec<(String, String)>);
    let mut rows: Vec<Row> = Vec::with_capacity(chains * STAGES.len());
    let mut evals = Vec::with_capacity(chains);
    let mut prev_gat: Option<String> = None;
    for c in 0..chains {
        let mut here: Vec<String> = Vec::new();
        for (k, stage) in STAGES.iter().enumerate() {
            if rows.len() >= a.paths {
                break;
            }
            let target = format!("c{c:06}-{stage}");
            // References, as the KD-GAT stages declare them: each stage refers to the ones
            // before it; a student's GAT also to its teacher's GAT.
            let names = ["data", "vgae", "gat", "dqn"];
            let mut refs: Vec<(String, String)> = here
                .iter()
                .zip(names)
                .map(|(p, n)| (p.clone(), n.to_string()))
                .collect();
            if *stage == "gat"
                && c % 2 == 1
                && let Some(t) = &prev_gat
            {
                refs.push((t.clone(), "teacher".into()));
            }
            // A real derivation whose inputs are those references (a `command` stage refers
            // to every input), so that `verify` finds the store consistent.
            let mut inputs = BTreeMap::new();
            for (p, n) in &refs {
                let sp: StorePath = p.parse().expect("store path");
                inputs.insert(
                    n.clone(),
                    Input::Derivation {
                        hash: sp.hash(),
                        name: sp.name().to_string(),
                    },
                );
            }
            if *stage == "preprocess" {
                inputs.insert(
                    "raw".into(),
                    Input::Source {
                        name: "demo".into(),
                        content: ContentHash([7; 32]),
                        config: serde_json::json!({}),
                    },
                );
            }
            let drv = Derivation {
                name: target.clone(),
                stage: stage.to_string(),
                kind: "command".into(),
                builder: Builder::Command {
                    argv: vec!["true".into()],
                    env: BTreeMap::new(),
                },
                config: serde_json::json!({ "chain": c }),
                inputs,
                scripts: BTreeMap::new(),
                code: CodeIdentity::default(),
                recorded: Default::default(),
            };
            let hash = drv.hash().expect("hash");
            let sp = StorePath::new(hash, &target).expect("valid name");
            store.write_derivation(&hash, &drv).expect("drv file");
            let dir = root.join(sp.to_string());
            fs::create_dir_all(&dir).expect("mkdir");
            for f in 0..a.files {
                fill(&mut buf, (c as u64) << 20 | (k as u64) << 10 | f as u64);
                fs::write(dir.join(format!("part{f}")), &buf).expect("write");
            }
            let h = tree_hash::hash_tree(&dir).expect("hash");
            tree_hash::make_read_only(&dir, true).expect("chmod");
            let path = sp.to_string();
            rows.push((
                path.clone(),
                hash.to_string(),
                target,
                h.hash.to_string(),
                h.size,
                refs,
            ));
            if *stage == "gat" {
                prev_gat = Some(path.clone());
            }
            if *stage == "eval" {
                evals.push(sp.clone());
            }
            here.push(path);
        }
    }
    let written = t0.elapsed();
    for batch in rows.chunks(10_000) {
        store
            .db
            .write(|tx| {
                let mut vp = tx.prepare_cached(
                    "INSERT INTO valid_paths (path, drv_hash, target, content_hash, size, registered_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0)",
                )?;
                let mut rf = tx.prepare_cached(
                    "INSERT INTO refs (referrer, reference, reason) VALUES (?1, ?2, ?3)",
                )?;
                let mut dv = tx.prepare_cached(
                    "INSERT INTO derivations (drv_hash, target, stage, kind, created_at)
                     VALUES (?1, ?2, ?3, 'command', 0)",
                )?;
                let mut di = tx.prepare_cached(
                    "INSERT INTO drv_inputs (drv_hash, name, input) VALUES (?1, ?2, ?3)",
                )?;
                for (path, drv, target, content, size, refs) in batch {
                    vp.execute(rusqlite::params![path, drv, target, content, *size as i64])?;
                    let id = tx.last_insert_rowid();
                    let stage = target.rsplit('-').next().unwrap_or("");
                    dv.execute(rusqlite::params![drv, target, stage])?;
                    if stage == "preprocess" {
                        di.execute(rusqlite::params![drv, "raw", "source:demo"])?;
                    }
                    for (r, why) in refs {
                        rf.execute(rusqlite::params![id, r, why])?;
                        di.execute(rusqlite::params![drv, why, r])?;
                    }
                }
                Ok(())
            })
            .expect("insert rows");
    }
    let results = root.parent().unwrap_or(&root).join("results");
    let mut rooted = 0;
    for (c, sp) in evals.iter().enumerate() {
        if c % 100 < a.rooted {
            link_result(&store, &results, sp).expect("result link");
            rooted += 1;
        }
    }
    eprintln!(
        "{} paths ({} chains, {} rooted) in {:?}: files and hashes {:?}, rows and roots {:?}",
        rows.len(),
        chains,
        rooted,
        t0.elapsed(),
        written,
        t0.elapsed() - written
    );
}
