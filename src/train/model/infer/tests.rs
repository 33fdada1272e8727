use super::*;
use crate::train::model::batch::{Scoring, all};
use crate::train::model::config::Size;
use crate::train::model::fusion::{FusionMlp, QConfig, QNet};
use crate::train::model::gat::GatConfig;
use crate::train::model::init::ParamStore;
use crate::train::model::synth;
use crate::train::model::vgae::VgaeConfig;
use candle_core::{Device, Tensor};

/// Models with random weights and BatchNorm statistics away from (0, 1), so that every
/// folded term matters.
fn models(size: Size, num_ids: usize, seed: u64) -> (Vgae, Gat, QNet, FusionMlp) {
    let dev = Device::Cpu;
    let sv = ParamStore::new(seed, &dev);
    let vgae = Vgae::new(&VgaeConfig::for_size(size, num_ids), sv.var_builder()).unwrap();
    let mut k = 0f32;
    for (conv, bn) in vgae
        .encoder
        .iter()
        .map(|(c, b)| (c, Some(b)))
        .chain(vgae.decoder.iter().map(|(c, b)| (c, b.as_ref())))
    {
        let n = conv.cfg.out_dim();
        if let Some(bn) = bn {
            k += 1.0;
            let mean: Vec<f32> = (0..n)
                .map(|i| ((i as f32 + k) * 0.37).sin() * 0.3)
                .collect();
            let var: Vec<f32> = (0..n)
                .map(|i| 0.5 + ((i as f32 * k) * 0.11).cos().abs())
                .collect();
            bn.running_mean
                .set(&Tensor::new(mean, &dev).unwrap())
                .unwrap();
            bn.running_var
                .set(&Tensor::new(var, &dev).unwrap())
                .unwrap();
        }
    }
    let sg = ParamStore::new(seed + 1, &dev);
    let gat = Gat::new(&GatConfig::for_size(size, num_ids), sg.var_builder()).unwrap();
    let sq = ParamStore::new(seed + 2, &dev);
    let q = QNet::new(&QConfig::for_size(size), sq.var_builder()).unwrap();
    let sm = ParamStore::new(seed + 3, &dev);
    let mlp = FusionMlp::new(sm.var_builder()).unwrap();
    (vgae, gat, q, mlp)
}

fn close(a: f32, b: f32, tol: f32) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

/// The engine computes what the candle models compute in evaluation mode: every state
/// feature, and every decision whose margin exceeds float rounding.
#[test]
fn engine_matches_the_candle_models() {
    let data = synth::splits(24, 40, 100, 5);
    let set = &data.tests[0].1;
    for size in [Size::Small, Size::Large] {
        let (vgae, gat, q, mlp) = models(size, data.num_ids, 11);
        let (q, mlp) = (q, mlp);
        let scoring = Scoring {
            device: Device::Cpu,
            num_ids: data.num_ids,
            batch_graphs: 16,
        };
        let want = scoring.states(&vgae, &gat, set, &all(set)).unwrap();
        for fusion in [FusionModel::Dqn(q), FusionModel::Mlp(mlp)] {
            let engine = Engine::new(&vgae, &gat, &fusion).unwrap();
            let mut ws = Workspace::default();
            let got = engine.states(&mut ws, set, &all(set)).unwrap();
            assert_eq!(got.len(), want.len());
            for (g, (a, b)) in got.iter().zip(&want).enumerate() {
                for f in 0..a.len() {
                    assert!(
                        close(a[f], b[f], 2e-4),
                        "{size:?} graph {g} feature {f}: engine {} candle {}",
                        a[f],
                        b[f]
                    );
                }
            }
            let dg = engine.score(&mut ws, &want);
            let dw = fusion.score(&want, &Device::Cpu).unwrap();
            let mut compared = 0;
            for ((sg, ag), (sw, aw)) in dg.iter().zip(&dw) {
                assert!(close(*sg, *sw, 1e-4), "{size:?} score {sg} vs {sw}");
                if (sw - 0.5).abs() > 1e-3 {
                    assert_eq!(ag, aw);
                    compared += 1;
                }
            }
            assert!(compared > dw.len() / 2, "too few decisions compared");
        }
    }
}

/// Results are the same bits on every instruction set and for every batch size.
#[test]
fn results_do_not_depend_on_isa_or_batch() {
    let data = synth::splits(20, 6, 100, 9);
    let set = &data.tests[1].1;
    let (vgae, gat, q, _) = models(Size::Small, data.num_ids, 3);
    let fusion = FusionModel::Dqn(q);
    let reference = {
        let mut e = Engine::with_isa(&vgae, &gat, &fusion, Isa::Portable).unwrap();
        e.batch_graphs = 1;
        e.states(&mut Workspace::default(), set, &all(set)).unwrap()
    };
    for isa in [Isa::Avx512, Isa::Avx2, Isa::Portable] {
        if !isa.is_available() {
            continue;
        }
        for bsz in [3, 64] {
            let mut e = Engine::with_isa(&vgae, &gat, &fusion, isa).unwrap();
            e.batch_graphs = bsz;
            let got = e.states(&mut Workspace::default(), set, &all(set)).unwrap();
            for (a, b) in got.iter().zip(&reference) {
                let bits = |s: &State| s.map(f32::to_bits);
                assert_eq!(bits(a), bits(b), "{isa:?} batch {bsz}");
            }
        }
    }
}

#[test]
fn ids_outside_the_vocabulary_are_an_error() {
    let data = synth::splits(20, 2, 100, 1);
    let (vgae, gat, q, _) = models(Size::Small, 3, 1);
    let engine = Engine::new(&vgae, &gat, &FusionModel::Dqn(q)).unwrap();
    let err = engine
        .states(&mut Workspace::default(), &data.val, &[0])
        .unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
}
