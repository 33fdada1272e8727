//! Benchmarks of the KD-GAT models (run by the scripts in `benches/`; see BENCHMARKS.md).
//!
//! ```text
//! kdgat_bench train-gat  [--kernel fused|index_add] [--batch 64] [--iters 30] [--dump FILE]
//! kdgat_bench infer      [--size large|small] [--batch 512] [--reps 5]
//! ```
//! Data: the windows of `DoS-1.csv` (`--csv`, default `../shared/data/can/can-train-and-test/`)
//! or, if it is missing, synthetic windows. `train-gat` times one training pass (forward in
//! train mode, weighted CE, backward) of the teacher GAT on one fixed batch, the same batch
//! `--dump` writes for `benches/pyg_gat_train.py`. `infer` times the full eval-mode pipeline
//! (batching, VGAE, GAT, fusion state, Q-network, fused rule) over all windows.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::Device;
use kdbuild::train::data::graphs::GraphSet;
use kdbuild::train::model::batch::{Batch, BatchOptions, Scoring, all};
use kdbuild::train::model::checkpoint::write_safetensors;
use kdbuild::train::model::config::Size;
use kdbuild::train::model::fusion::{FusionModel, QConfig, QNet};
use kdbuild::train::model::gat::{Gat, GatConfig};
use kdbuild::train::model::gatconv::Kernel;
use kdbuild::train::model::infer::{Engine, Workspace};
use kdbuild::train::model::init::{ParamStore, rng};
use kdbuild::train::model::kd::{class_weights, weighted_ce};
use kdbuild::train::model::layers::Mode;
use kdbuild::train::model::optim::Optim;
use kdbuild::train::model::synth;
use kdbuild::train::model::vgae::{Vgae, VgaeConfig};

/// CPU seconds (user + system) this process has used so far: with one thread, a measure that
/// other processes on a busy machine disturb much less than wall time.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

/// All windows of the sample file (or synthetic ones) and the vocabulary size.
fn windows(args: &[String]) -> (GraphSet, usize) {
    let path = arg(
        args,
        "--csv",
        "../shared/data/can/can-train-and-test/DoS-1.csv",
    );
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let rows = synth::read_ctt_csv(&text);
            let mut ids: Vec<u32> = rows.iter().map(|r| r.0).collect();
            ids.sort();
            ids.dedup();
            let frames: Vec<synth::Frame> = rows
                .iter()
                .map(|r| synth::Frame {
                    id: ids.binary_search(&r.0).unwrap() as u32,
                    bytes: r.1,
                    len: r.2,
                    attack: r.3,
                })
                .collect();
            let mut s = GraphSet::new();
            synth::window_graphs(&frames, 100, 100, 0, &mut s);
            eprintln!("data: {path}, {} windows", s.len());
            (s, ids.len() + 1)
        }
        Err(_) => {
            let d = synth::splits(53, 300, 100, 1);
            eprintln!("data: synthetic, {} windows", d.train.len());
            (d.train, 53)
        }
    }
}

fn train_gat(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let (set, num_ids) = windows(args);
    let kernel = match arg(args, "--kernel", "fused").as_str() {
        "index_add" => Kernel::IndexAdd,
        _ => Kernel::Fused,
    };
    let bsz: usize = arg(args, "--batch", "64").parse()?;
    let iters: usize = arg(args, "--iters", "30").parse()?;
    let dev = Device::Cpu;
    // A fixed batch with both classes: windows spread over the file.
    let idx: Vec<usize> = (0..bsz).map(|i| i * set.len() / bsz).collect();
    let b = Batch::new(&set, &idx, &dev, BatchOptions::eval(num_ids))?;
    let cfg = GatConfig::for_size(Size::Large, num_ids);
    let store = ParamStore::new(1, &dev);
    let mut gat = Gat::new(&cfg, store.var_builder())?;
    gat.set_kernel(kernel);
    if let Some(p) = args
        .iter()
        .position(|a| a == "--dump")
        .and_then(|i| args.get(i + 1))
    {
        dump(p, &b, &set, &idx, &store)?;
    }
    if args.iter().any(|a| a == "--check-forward") {
        let l = gat.forward(&b, &mut Mode::Eval)?.logits.to_vec2::<f32>()?;
        println!("eval logits[:3] {:?}", &l[..3]);
    }
    let w = class_weights(&b.y);
    let mut r = rng(1, "bench");
    // One training pass without the optimizer step: forward in train mode (dropout),
    // class-weighted CE, backward. Without a step the weights stay fixed, so every pass costs
    // the same (a model trained to zero loss on one batch is not a workload).
    let mut step = || -> candle_core::Result<f32> {
        let logits = gat.forward(&b, &mut Mode::Train(&mut r))?.logits;
        let loss = weighted_ce(&logits, &b.y_t, &b.y, w)?;
        let grads = loss.backward()?;
        drop(grads);
        loss.to_scalar::<f32>()
    };
    for _ in 0..3 {
        step()?;
    }
    let t0 = Instant::now();
    let c0 = cpu_seconds();
    let verbose = args.iter().any(|a| a == "--verbose");
    for i in 0..iters {
        let ti = Instant::now();
        let l = step()?;
        if verbose {
            eprintln!(
                "step {i}: loss {l:.6} ({:.1} ms)",
                ti.elapsed().as_secs_f64() * 1e3
            );
        }
    }
    let dt = t0.elapsed().as_secs_f64() / iters as f64;
    let cpu = (cpu_seconds() - c0) / iters as f64;
    if args.iter().any(|a| a == "--split") {
        let (mut tf, mut tb, mut ts) = (0f64, 0f64, 0f64);
        let mut opt2 = Optim::new(store.trainable(), 3e-3, 1e-4, 1.0)?;
        for _ in 0..iters {
            let t = Instant::now();
            let logits = gat.forward(&b, &mut Mode::Train(&mut r))?.logits;
            let loss = weighted_ce(&logits, &b.y_t, &b.y, w)?;
            loss.to_scalar::<f32>()?;
            tf += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let grads = loss.backward()?;
            tb += t.elapsed().as_secs_f64();
            drop(grads);
            let t = Instant::now();
            opt2.step(&loss)?;
            ts += t.elapsed().as_secs_f64();
        }
        let n = iters as f64 / 1e3;
        println!(
            "forward {:.1} ms, backward {:.1} ms, backward+clip+adamw {:.1} ms",
            tf / n,
            tb / n,
            ts / n
        );
    }
    println!(
        "candle teacher GAT forward+backward ({kernel:?}, {} threads): batch {bsz} graphs, {} nodes, {} attention edges: {:.1} ms/step wall ({:.0} graphs/s), {:.1} ms/step CPU",
        candle_core::utils::get_num_threads(),
        b.num_nodes,
        b.gat.num_edges(),
        dt * 1e3,
        bsz as f64 / dt,
        cpu * 1e3
    );
    Ok(())
}

/// Writes the batch (PyG layout: `x [N,11]`, `edge_index [2,E]` with the window edges, `batch`,
/// `y`) and the initial weights, for the PyG side of the benchmark.
fn dump(
    path: &str,
    b: &Batch,
    set: &GraphSet,
    idx: &[usize],
    store: &ParamStore,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut x = Vec::new();
    let (mut src, mut dst) = (Vec::new(), Vec::new());
    let mut off = 0i64;
    for &g in idx {
        let gr = set.graph(g);
        x.extend_from_slice(gr.x);
        src.extend(gr.edge_src.iter().map(|&s| s as i64 + off));
        dst.extend(gr.edge_dst.iter().map(|&d| d as i64 + off));
        off += gr.num_nodes() as i64;
    }
    let f32b = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let i64b = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let e = src.len();
    let mut ei = src.clone();
    ei.extend(&dst);
    let batch: Vec<i64> = b.graph_host.iter().map(|&g| g as i64).collect();
    let y: Vec<i64> = b.y.iter().map(|&v| v as i64).collect();
    let mut t = vec![
        ("x".to_string(), "F32", vec![b.num_nodes, 11], f32b(&x)),
        ("edge_index".to_string(), "I64", vec![2, e], i64b(&ei)),
        ("batch".to_string(), "I64", vec![b.num_nodes], i64b(&batch)),
        ("y".to_string(), "I64", vec![b.num_graphs], i64b(&y)),
    ];
    for (name, v) in store.all() {
        let vals = v.flatten_all()?.to_vec1::<f32>()?;
        t.push((
            format!("model.{name}"),
            "F32",
            v.dims().to_vec(),
            f32b(&vals),
        ));
    }
    write_safetensors(std::path::Path::new(path), &t, &BTreeMap::new())?;
    eprintln!("wrote {path}");
    Ok(())
}

fn infer(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let (set, num_ids) = windows(args);
    let size = match arg(args, "--size", "small").as_str() {
        "large" => Size::Large,
        _ => Size::Small,
    };
    let bsz: usize = arg(args, "--batch", "512").parse()?;
    let reps: usize = arg(args, "--reps", "5").parse()?;
    let dev = Device::Cpu;
    let sv = ParamStore::new(1, &dev);
    let vgae = Vgae::new(&VgaeConfig::for_size(size, num_ids), sv.var_builder())?;
    let sg = ParamStore::new(2, &dev);
    let gat = Gat::new(&GatConfig::for_size(size, num_ids), sg.var_builder())?;
    let sq = ParamStore::new(3, &dev);
    let fusion = FusionModel::Dqn(QNet::new(&QConfig::for_size(size), sq.var_builder())?);
    let scoring = Scoring {
        device: dev.clone(),
        num_ids,
        batch_graphs: bsz,
    };
    let idx = all(&set);
    if !args.iter().any(|a| a == "--engine") {
        let run = || -> Result<usize, Box<dyn std::error::Error>> {
            let states = scoring.states(&vgae, &gat, &set, &idx)?;
            let decisions = fusion.score(&states, &dev)?;
            Ok(decisions.iter().filter(|d| d.1).count())
        };
        let (dt, cpu) = timed(reps, run)?;
        report("candle", size, bsz, set.len(), dt, cpu);
    }
    // The inference engine on the same models; its decisions checked against candle's.
    let mut engine = Engine::new(&vgae, &gat, &fusion)?;
    engine.batch_graphs = arg(args, "--engine-batch", "16").parse()?;
    let mut ws = Workspace::default();
    let want = fusion.score(&scoring.states(&vgae, &gat, &set, &idx)?, &dev)?;
    let states = engine.states(&mut ws, &set, &idx)?;
    let got = engine.score(&mut ws, &states);
    let same = want.iter().zip(&got).filter(|(a, b)| a.1 == b.1).count();
    let dmax = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a.0 - b.0).abs())
        .fold(0f32, f32::max);
    println!(
        "engine ({}): {same}/{} decisions equal candle's, largest score difference {dmax:.2e}",
        engine.isa().as_str(),
        want.len()
    );
    let run = || -> Result<usize, Box<dyn std::error::Error>> {
        let states = engine.states(&mut ws, &set, &idx)?;
        Ok(engine
            .score(&mut ws, &states)
            .iter()
            .filter(|d| d.1)
            .count())
    };
    let (dt, cpu) = timed(reps, run)?;
    report("engine", size, engine.batch_graphs, set.len(), dt, cpu);
    Ok(())
}

/// Wall and CPU seconds per call of `run`, after one warm-up call.
fn timed(
    reps: usize,
    mut run: impl FnMut() -> Result<usize, Box<dyn std::error::Error>>,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    run()?;
    let t0 = Instant::now();
    let c0 = cpu_seconds();
    for _ in 0..reps {
        run()?;
    }
    let dt = t0.elapsed().as_secs_f64() / reps as f64;
    Ok((dt, (cpu_seconds() - c0) / reps as f64))
}

/// One result line, parsed by `benches/infer.sh`.
fn report(path: &str, size: Size, bsz: usize, windows: usize, dt: f64, cpu: f64) {
    let wps = windows as f64 / dt;
    println!(
        "{path} {} inference (VGAE + GAT + fusion, {} threads, batch {bsz}): {windows} windows in {:.1} ms: {:.0} windows/s = {:.0}x real time (40 windows/s); CPU {:.1} ms",
        size.as_str(),
        candle_core::utils::get_num_threads(),
        dt * 1e3,
        wps,
        wps / 40.0,
        cpu * 1e3
    );
}

fn train_vgae(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let (set, num_ids) = windows(args);
    let size = match arg(args, "--size", "large").as_str() {
        "small" => Size::Small,
        _ => Size::Large,
    };
    let bsz: usize = arg(args, "--batch", "64").parse()?;
    let iters: usize = arg(args, "--iters", "20").parse()?;
    let dev = Device::Cpu;
    let idx: Vec<usize> = (0..bsz).map(|i| i * set.len() / bsz).collect();
    let b = Batch::new(
        &set,
        &idx,
        &dev,
        BatchOptions {
            nbr_target: true,
            ..BatchOptions::eval(num_ids)
        },
    )?;
    let store = ParamStore::new(1, &dev);
    let vgae = Vgae::new(&VgaeConfig::for_size(size, num_ids), store.var_builder())?;
    let mut opt = Optim::new(store.trainable(), 2e-3, 1e-4, 1.0)?;
    let mut r = rng(1, "bench");
    let mut step = || -> candle_core::Result<f32> {
        let out = vgae.forward(&b, &mut Mode::Train(&mut r))?;
        let loss = kdbuild::train::model::vgae::task_loss(&out, &b)?;
        opt.step(&loss)?;
        loss.to_scalar::<f32>()
    };
    for _ in 0..3 {
        step()?;
    }
    let t0 = Instant::now();
    let c0 = cpu_seconds();
    for _ in 0..iters {
        step()?;
    }
    let dt = t0.elapsed().as_secs_f64() / iters as f64;
    let cpu = (cpu_seconds() - c0) / iters as f64;
    println!(
        "candle {} VGAE train step ({} threads): batch {bsz} graphs, {} nodes: {:.1} ms/step wall ({:.0} graphs/s), {:.1} ms/step CPU",
        size.as_str(),
        candle_core::utils::get_num_threads(),
        b.num_nodes,
        dt * 1e3,
        bsz as f64 / dt,
        cpu * 1e3
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    kdbuild::train::model::tune_process();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("train-gat") => train_gat(&args),
        Some("infer") => infer(&args),
        Some("train-vgae") => train_vgae(&args),
        _ => {
            eprintln!("usage: kdgat_bench train-gat|infer [options]");
            std::process::exit(2)
        }
    }
}
