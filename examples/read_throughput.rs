//! Reading + windowing throughput of one CAN file on one thread: parse every frame (a zip is
//! decompressed in place), build the vocabulary, and build the graph of every window with
//! the 11 node features (and optionally the edge features). Run by
//! `benches/read_throughput.sh`; prints one line per run and a summary.
//!
//! ```text
//! cargo run --release --example read_throughput -- <file> <preset> [--window 100] [--stride 100] [--repeat 5] [--edge-features]
//! ```
//!
//! MB/s counts decompressed bytes (what the parser reads), MB = 10^6 bytes.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use kdbuild::train::data::format::preset;
use kdbuild::train::data::graph::GraphBuilder;
use kdbuild::train::data::graphs::GraphSet;
use kdbuild::train::data::reader::{ReadOptions, read_file};
use kdbuild::train::data::vocab::Vocab;
use kdbuild::train::data::window::{Geometry, Stream};

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: read_throughput <file> <preset> [--window N] [--stride N] [--repeat N] [--edge-features]";
    let path = PathBuf::from(args.next().expect(usage));
    let format = preset(&args.next().expect(usage)).expect("unknown preset");
    let (mut window, mut stride, mut repeat, mut edges) = (100usize, 100usize, 5usize, false);
    while let Some(a) = args.next() {
        let mut num = || args.next().and_then(|v| v.parse().ok()).expect(usage);
        match a.as_str() {
            "--window" => window = num(),
            "--stride" => stride = num(),
            "--repeat" => repeat = num(),
            "--edge-features" => edges = true,
            _ => panic!("{usage}"),
        }
    }
    let g = Geometry { window, stride };
    let bytes = kdbuild::train::data::zip::content_hash(&path)
        .expect("readable file")
        .1;
    println!(
        "file {} ({} preset): {:.1} MB decompressed; W={window} S={stride} edge_features={edges}",
        path.display(),
        format.name,
        bytes as f64 / 1e6
    );
    let mut totals = Vec::new();
    for run in 0..repeat {
        let t0 = Instant::now();
        let mut stream = Stream::default();
        let stats = read_file(&format, &path, &ReadOptions::default(), &mut |f| {
            stream.push(f);
            ControlFlow::Continue(())
        })
        .expect("readable");
        let t_read = t0.elapsed().as_secs_f64();
        let n = g.num_windows(stream.len());
        let vocab = Vocab::new(stream.ids.iter().copied());
        let v = vocab.map(&stream.ids);
        let mut b = GraphBuilder::new(vocab.num_ids as usize, window, edges);
        let mut set = GraphSet::new();
        for k in 0..n {
            let r = g.rows(k, stream.len());
            b.push(
                &mut set,
                &v[r.start..=r.end],
                &stream.bytes[r.clone()],
                &stream.labels[r],
                0,
                k as u32,
            );
        }
        let total = t0.elapsed().as_secs_f64();
        std::hint::black_box(&set);
        println!(
            "run {run}: {} frames, {} windows ({} nodes, {} edges); read {:.3} s, windows {:.3} s, total {:.3} s: {:.1} MB/s, {:.2} M frames/s (read only {:.1} MB/s)",
            stats.frames,
            set.len(),
            set.num_nodes(),
            set.num_edges(),
            t_read,
            total - t_read,
            total,
            bytes as f64 / 1e6 / total,
            stats.frames as f64 / 1e6 / total,
            bytes as f64 / 1e6 / t_read,
        );
        totals.push((total, stats.frames));
    }
    totals.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (median, frames) = totals[totals.len() / 2];
    let (best, _) = totals[0];
    println!(
        "summary: median {:.3} s = {:.1} MB/s, {:.2} M frames/s; best {:.3} s = {:.1} MB/s",
        median,
        bytes as f64 / 1e6 / median,
        frames as f64 / 1e6 / median,
        best,
        bytes as f64 / 1e6 / best
    );
}
