//! The KD-GAT stage kinds: thin adapters from the engine's [`StageKind`](super::StageKind) to
//! `crate::train`, which knows nothing of the engine. One file per kind (so `build.rs` can hash
//! each kind's own adapter), plus what they share in [`common`].
//!
//! Each adapter parses the derivation's config into the trainer's config, loads the inputs,
//! calls `crate::train::model` and writes the outputs; nothing here trains or scores.
//!
//! Inputs (by name) and runtime references (what an output needs to be used, walked by `gc`
//! and `why-depends`):
//!
//! | kind | inputs | references |
//! |---|---|---|
//! | `kdgat.vgae` | `data`, `teacher` (iff `kd`) | `teacher` where it has one; the model itself is self-contained (`vocab.json` is copied in) |
//! | `kdgat.gat` | `data`, `vgae` (curriculum difficulty), `teacher` (iff `kd`) | `teacher` where it has one |
//! | `kdgat.dqn` | `data`, `vgae`, `gat` | `vgae`, `gat`: fusion runs on their outputs |
//! | `kdgat.eval` | `data`, `vgae`, `gat`, `dqn` | all four: what it evaluated |
//!
//! A distilled student runs without its teacher, but its `config.json` records the teacher's
//! store path as provenance, and an output that names a store path refers to it (Nix finds
//! runtime references exactly so). So `teacher` is a runtime reference: `why-depends` shows
//! `student-…-gat --teacher--> teacher-…-gat`, and `gc --runtime-only` keeps the teacher of a
//! kept student.
//!
//! Input layout: `data` is a preprocess output (`graphs/<split>.safetensors` for `train`,
//! `val` and each test split, `vocab.json` `{"ids": [...], "unk": n}`, `manifest.json`);
//! model inputs hold `model.safetensors`.

pub mod common;
pub mod dqn;
pub mod eval;
pub mod gat;
pub mod vgae;

pub mod preprocess;

use super::Registry;

/// Adds every KD-GAT stage kind to `r`.
pub fn register(r: &mut Registry) {
    r.register(Box::new(preprocess::Preprocess));
    r.register(Box::new(vgae::VgaeStage));
    r.register(Box::new(gat::GatStage));
    r.register(Box::new(dqn::DqnStage));
    r.register(Box::new(eval::EvalStage));
}

#[cfg(test)]
mod tests {
    /// `build.rs` lists, per model kind, exactly the files that kind runs: every model module
    /// is in some group, and one stage's trainer is never in another's.
    #[test]
    fn code_groups_are_tight_and_complete() {
        let build = include_str!("../../../build.rs");
        let group = |kind: &str| -> Vec<&str> {
            let start = build.find(&format!("\"{kind}\",")).expect("kind listed");
            let rest = &build[start..];
            let end = rest.find("MODEL_CRATES").expect("group ends");
            rest[..end]
                .split('"')
                .filter(|s| s.ends_with(".rs"))
                .collect()
        };
        let kinds = ["kdgat.vgae", "kdgat.gat", "kdgat.dqn", "kdgat.eval"];
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/train/model");
        let mut files = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            if e.file_type().unwrap().is_dir() {
                for f in std::fs::read_dir(e.path()).unwrap() {
                    let f = f.unwrap().file_name().into_string().unwrap();
                    files.push(format!("{name}/{f}"));
                }
            } else {
                files.push(name);
            }
        }
        for name in files {
            if name == "synth.rs" || name.ends_with("/tests.rs") {
                continue; // test and benchmark fixtures: no stage runs them
            }
            let path = format!("src/train/model/{name}");
            assert!(
                kinds.iter().any(|k| group(k).contains(&path.as_str())),
                "{path} is in no code group of build.rs"
            );
        }
        let own = [
            ("kdgat.vgae", "train_vgae.rs"),
            ("kdgat.gat", "train_gat.rs"),
            ("kdgat.dqn", "train_fusion.rs"),
            ("kdgat.eval", "eval.rs"),
        ];
        for (kind, _) in own {
            for (other, file) in own {
                let listed = group(kind).contains(&format!("src/train/model/{file}").as_str());
                assert_eq!(listed, kind == other, "{file} in the group of {kind}");
            }
        }
    }
}
