//! Trains one KD-GAT variant chain (VGAE → GAT → fusion → evaluation) on the can-train-and-test
//! sample `DoS-1.csv` (or synthetic data) with the library API, and prints timings and test
//! metrics. Useful for sizing the `quick` profile:
//!
//! ```text
//! cargo run --release --example kdgat_variant -- ../shared/data/can/can-train-and-test/DoS-1.csv ['{"epochs": 10}']
//! ```
//! With `KDGAT_OUT=DIR`, each variant's `metrics.json` and `metrics.csv` go to `DIR/<variant>/`.

use std::time::Instant;

use kdbuild::train::model::batch::Scoring;
use kdbuild::train::model::eval::{DataInfo, EvalStageConfig, RunLabels, evaluate};
use kdbuild::train::model::progress::Report;
use kdbuild::train::model::train_fusion::FusionStageConfig;
use kdbuild::train::model::train_gat::GatStageConfig;
use kdbuild::train::model::train_vgae::VgaeStageConfig;
use kdbuild::train::model::{synth, train_fusion, train_gat, train_vgae};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    kdbuild::train::model::tune_process();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let data = match args.first() {
        Some(p) => synth::stream_splits(
            &synth::read_ctt_csv(&std::fs::read_to_string(p)?),
            100,
            "DoS-1.csv",
        ),
        None => synth::splits(40, 400, 100, 1),
    };
    let extra: serde_json::Value = args
        .get(1)
        .map(|s| serde_json::from_str(s))
        .transpose()?
        .unwrap_or(json!({}));
    eprintln!(
        "train {} windows ({} attacks), val {}, test {}; num_ids {}",
        data.train.len(),
        data.train.y.iter().filter(|&&y| y == 1).count(),
        data.val.len(),
        data.tests[0].1.len(),
        data.num_ids
    );
    let merge = |mut base: serde_json::Value| {
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    };
    let t0 = Instant::now();
    let mut results = Vec::new();
    let mut teacher = None;
    for (variant, size, kd) in [
        ("teacher", "large", false),
        ("student", "small", true),
        ("student_nokd", "small", false),
    ] {
        let t = Instant::now();
        let vc = VgaeStageConfig::from_json(&merge(json!({"size": size, "kd": kd})))?;
        let v = train_vgae::train_vgae(
            &vc,
            &data,
            teacher
                .as_ref()
                .map(|(v, _): &(train_vgae::TrainedVgae, train_gat::TrainedGat)| &v.model),
            Report::Auto,
        )?;
        let tv = t.elapsed().as_secs_f64();
        let gc = GatStageConfig::from_json(&merge(json!({"size": size, "kd": kd})))?;
        let g = train_gat::train_gat(
            &gc,
            &data,
            &v.model,
            teacher
                .as_ref()
                .map(|(_, g): &(train_vgae::TrainedVgae, train_gat::TrainedGat)| &g.model),
            Report::Auto,
        )?;
        let tg = t.elapsed().as_secs_f64() - tv;
        let fc = FusionStageConfig::from_json(&json!({"size": size}))?;
        let f = train_fusion::train_fusion(&fc, &data, &v.model, &g.model, Report::Auto)?;
        let tf = t.elapsed().as_secs_f64() - tv - tg;
        let ec = EvalStageConfig::from_json(&json!({}))?;
        let scoring = Scoring {
            device: candle_core::Device::Cpu,
            num_ids: data.num_ids,
            batch_graphs: ec.common.eval_batch_graphs,
        };
        let labels = RunLabels {
            dataset: "dos1".into(),
            variant: variant.into(),
            seed: 42,
            profile: "quick".into(),
            config_sha256: String::new(),
        };
        let e = evaluate(
            &data,
            &v.model,
            &g.model,
            &f.model,
            &scoring,
            &labels,
            &DataInfo::default(),
        )?;
        let te = t.elapsed().as_secs_f64() - tv - tg - tf;
        if let Ok(dir) = std::env::var("KDGAT_OUT") {
            let d = std::path::Path::new(&dir).join(variant);
            std::fs::create_dir_all(&d)?;
            e.write(&d)?;
        }
        eprintln!("{variant}: vgae {tv:.1}s gat {tg:.1}s fusion {tf:.1}s eval {te:.1}s");
        results.push((
            variant,
            e.metric("gat", "test", "f1"),
            e.metric("vgae", "test", "roc_auc"),
            e.metric("fusion", "test", "f1"),
        ));
        if variant == "teacher" {
            teacher = Some((v, g));
        }
    }
    for r in results {
        println!(
            "{}: test gat f1 {:?}, vgae auc {:?}, fusion f1 {:?}",
            r.0, r.1, r.2, r.3
        );
    }
    println!("total {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
