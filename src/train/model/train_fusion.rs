//! Stage 3: fusion (spec §5.6). States are computed once, in evaluation mode, from the frozen
//! VGAE and GAT of the variant; then one of
//! - `dqn` (default): a Q-network over the 21 actions `α = a/20`, ε-greedy with ε decaying
//!   linearly, reward ±1 (−`fn_cost` for a false negative) **of the fused rule**
//!   ([`fusion::reward`] → [`fusion::decide`]), FIFO replay, Huber loss, γ = 0 by default (a
//!   contextual bandit; with γ > 0 Double DQN on the next window of the same stream);
//! - `mlp`: the MLP ablation on the same states, BCE with logits;
//! - `fixed`: the fused rule with a constant `α`, nothing trained.
//!
//! Validation uses the same fused rule on all val states (F1, or accuracy when val has no
//! attacks); the best network is kept.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::time::Instant;

use candle_core::{D, Device, Tensor};
use rand::Rng as _;
use rand::seq::SliceRandom;
use serde_json::{Value, json};

use super::TrainError;
use super::checkpoint::{self, ModelMeta, write_json, write_text};
use serde::Serialize;

use super::batch::{Scoring, Splits, all};
use super::config::{Common, Keys, Profile, Size, common, size};
use super::fusion::{
    self, FusionMethod, FusionMlp, FusionModel, NUM_ACTIONS, QConfig, QNet, State, states_tensor,
};
use super::gat::Gat;
use super::init::{ParamStore, Rng, Snapshot, rng, sub_seed};
use super::layers::Mode;
use super::metrics::{Metrics, ThresholdMethod, accuracy, f1, score_f64};
use super::optim::Optim;
use super::progress::{LogRow, Progress, Report, TrainLog, fmt_opt};
use super::vgae::{Vgae, bce_with_logits};

/// The `kdgat.dqn` stage (whatever `method`). *Differs* from spec §5.7's quick budget
/// (5 episodes × 4 steps, 3 MLP epochs): 20 × 8 and 10, so that the Q-network is trained at
/// all (160 steps instead of 20); the cost is seconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FusionStageConfig {
    #[serde(flatten)]
    pub common: Common,
    pub size: Size,
    pub method: FusionMethod,
    pub fixed_alpha: f64,
    pub gamma: f64,
    pub eps_start: f64,
    pub eps_end: f64,
    pub eps_decay_frac: f64,
    pub fn_cost: f64,
    pub lr: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub episodes: usize,
    pub episode_size: usize,
    pub steps_per_episode: usize,
    pub batch: usize,
    pub buffer: usize,
    pub target_update: usize,
    pub val_every: usize,
    pub max_train_states: usize,
    pub mlp_epochs: usize,
    pub mlp_batch: usize,
    pub mlp_lr: f64,
}

impl FusionStageConfig {
    pub fn from_json(v: &Value) -> Result<Self, TrainError> {
        let mut k = Keys::new(v, "kdgat.dqn")?;
        let common = common(&mut k)?;
        let size = size(&mut k)?;
        let quick = common.profile == Profile::Quick;
        let large = size == Size::Large;
        let pick = |q: usize, l: usize, s: usize| {
            if quick {
                q
            } else if large {
                l
            } else {
                s
            }
        };
        let method =
            FusionMethod::parse(k.choice("method", &["dqn", "mlp", "fixed"], Some("dqn"))?)
                .expect("choice validated");
        let cfg = FusionStageConfig {
            method,
            fixed_alpha: k.f64("fixed_alpha", 0.85)?,
            gamma: k.f64("gamma", 0.0)?,
            eps_start: k.f64("eps_start", 1.0)?,
            eps_end: k.f64("eps_end", 0.05)?,
            eps_decay_frac: k.f64("eps_decay_frac", 0.8)?,
            fn_cost: k.f64("fn_cost", 1.0)?,
            lr: k.f64("lr", 1e-3)?,
            weight_decay: k.f64("weight_decay", 1e-5)?,
            grad_clip: k.f64("grad_clip", 1.0)?,
            episodes: k.usize("episodes", pick(20, 500, 500))?,
            episode_size: k.usize("episode_size", pick(256, 20_000, 20_000))?.max(1),
            steps_per_episode: k.usize("steps_per_episode", pick(8, 16, 16))?,
            batch: k.usize("batch", pick(32, 128, 64))?.max(1),
            buffer: k.usize("buffer", pick(2048, 100_000, 50_000))?.max(1),
            target_update: k.usize("target_update", pick(10, 100, 50))?.max(1),
            val_every: k.usize("val_every", pick(1, 50, 50))?.max(1),
            max_train_states: k
                .usize("max_train_states", pick(2000, 150_000, 150_000))?
                .max(1),
            mlp_epochs: k.usize("mlp_epochs", pick(10, 100, 100))?,
            mlp_batch: k.usize("mlp_batch", 128)?.max(1),
            mlp_lr: k.f64("mlp_lr", 1e-3)?,
            common,
            size,
        };
        if !(0.0..=1.0).contains(&cfg.fixed_alpha) {
            return Err(TrainError::Config(format!(
                "key `fixed_alpha` is {}, expected a value in [0, 1]",
                cfg.fixed_alpha
            )));
        }
        k.finish("kdgat.dqn")?;
        Ok(cfg)
    }
}

/// A trained fusion model and what its stage writes.
pub struct TrainedFusion {
    pub config: FusionStageConfig,
    pub store: ParamStore,
    pub model: FusionModel,
    pub log: TrainLog,
    pub best_step: Option<usize>,
    pub best_criterion: Option<f64>,
    pub criterion_name: &'static str,
    /// Metrics of the fused score on all val windows.
    pub val: Metrics,
    pub train_states: usize,
}

/// The validation criterion of hard decisions: F1, or accuracy when there are no attacks.
fn criterion(y: &[u8], pred: &[bool]) -> (f64, &'static str) {
    if y.contains(&1) {
        (f1(y, pred).unwrap_or(0.0), "val_f1")
    } else {
        (accuracy(y, pred).unwrap_or(0.0), "val_accuracy")
    }
}

/// Mean Huber loss (δ = 1) between `a` and `b`.
fn huber(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let d = (a - b)?.abs()?;
    let q = d.clamp(0f32, 1f32)?;
    ((q.sqr()? * 0.5)? + (d - &q)?)?.mean_all()
}

/// One replay entry: state index, action, reward, next state index (`None` = done).
type Transition = (usize, usize, f32, Option<usize>);

/// Trains the fusion model of `cfg` from the frozen `vgae` and `gat`.
pub fn train_fusion(
    cfg: &FusionStageConfig,
    data: &Splits,
    vgae: &Vgae,
    gat: &Gat,
    report: Report,
) -> Result<TrainedFusion, TrainError> {
    super::tune_process();
    let device = cfg.common.device.device()?;
    let seed = cfg.common.seed;
    let scoring = Scoring {
        device: device.clone(),
        num_ids: data.num_ids,
        batch_graphs: cfg.common.eval_batch_graphs,
    };
    let progress = Progress::new(
        report,
        cfg.method.as_str(),
        match cfg.method {
            FusionMethod::Dqn => cfg.episodes,
            FusionMethod::Mlp => cfg.mlp_epochs,
            FusionMethod::Fixed => 1,
        },
    );
    // Training states: all train windows, or a seeded uniform subset (pitfall 16).
    let mut idx = all(&data.train);
    if idx.len() > cfg.max_train_states {
        let mut r = rng(seed, "subset:fusion");
        idx.shuffle(&mut r);
        idx.truncate(cfg.max_train_states);
        idx.sort_unstable();
    }
    let method_needs_train = cfg.method != FusionMethod::Fixed;
    let train_states = if method_needs_train {
        scoring.states(vgae, gat, &data.train, &idx)?
    } else {
        Vec::new()
    };
    let train_y: Vec<u8> = idx.iter().map(|&g| data.train.y[g]).collect();
    let val_states = scoring.states(vgae, gat, &data.val, &all(&data.val))?;
    let val_y = &data.val.y;
    progress.note(&format!(
        "{} fusion ({}): {} training states, {} val states",
        cfg.size.as_str(),
        cfg.method.as_str(),
        train_states.len(),
        val_states.len()
    ));
    let store = ParamStore::new(
        sub_seed(seed, &format!("init:{}", cfg.method.as_str())),
        &device,
    );
    let mut log = TrainLog::default();
    let (model, best_step, best_criterion, criterion_name) = match cfg.method {
        FusionMethod::Fixed => {
            let a = cfg.fixed_alpha as f32;
            let pred: Vec<bool> = val_states.iter().map(|s| fusion::fuse(a, s).1).collect();
            let (c, name) = criterion(val_y, &pred);
            progress.step(0, &format!("fixed α {a}: {name} {c:.4}"));
            (FusionModel::Fixed(a), None, Some(c), name)
        }
        FusionMethod::Dqn => {
            let q = QNet::new(&QConfig::for_size(cfg.size), store.var_builder())?;
            let (step, c, name) = train_dqn(
                cfg,
                &q,
                &store,
                (&train_states, &train_y, &idx),
                data,
                (&val_states, val_y),
                &device,
                &mut log,
                &progress,
            )?;
            (FusionModel::Dqn(q), step, c, name)
        }
        FusionMethod::Mlp => {
            let m = FusionMlp::new(store.var_builder())?;
            let (step, c, name) = train_mlp(
                cfg,
                &m,
                &store,
                (&train_states, &train_y),
                (&val_states, val_y),
                &device,
                &mut log,
                &progress,
            )?;
            (FusionModel::Mlp(m), step, c, name)
        }
    };
    progress.finish();
    let scored = model.score(&val_states, &device)?;
    let scores: Vec<f64> = scored.iter().map(|(s, _)| score_f64(*s)).collect();
    let val = Metrics::compute(val_y, &scores, 0.5, ThresholdMethod::Fused);
    progress.note(&format!(
        "val f1 {} accuracy {}",
        fmt_opt(val.f1),
        fmt_opt(val.accuracy)
    ));
    Ok(TrainedFusion {
        config: cfg.clone(),
        store,
        model,
        log,
        best_step,
        best_criterion,
        criterion_name,
        val,
        train_states: train_states.len(),
    })
}

/// The DQN loop; returns the best validation step and criterion.
#[allow(clippy::too_many_arguments)]
fn train_dqn(
    cfg: &FusionStageConfig,
    q: &QNet,
    store: &ParamStore,
    (states, ys, idx): (&[State], &[u8], &[usize]),
    data: &Splits,
    (val_states, val_y): (&[State], &[u8]),
    device: &Device,
    log: &mut TrainLog,
    progress: &Progress,
) -> Result<(Option<usize>, Option<f64>, &'static str), TrainError> {
    if states.is_empty() {
        return Err(TrainError::Data(
            "the fusion stage has no training windows".into(),
        ));
    }
    let seed = cfg.common.seed;
    let target_store = ParamStore::new(sub_seed(seed, "init:dqn-target"), device);
    let target = QNet::new(&q.cfg, target_store.var_builder())?;
    target_store.restore(&store.snapshot()?)?;
    let mut opt = Optim::new(store.trainable(), cfg.lr, cfg.weight_decay, cfg.grad_clip)?;
    let mut r = rng(seed, "dqn");
    let mut rng_drop = rng(seed, "dropout:dqn");
    // Next window of the same stream, for γ > 0 (done at a stream's end or outside the set).
    let next: Vec<Option<usize>> = if cfg.gamma > 0.0 {
        let pos: BTreeMap<(u32, u32), usize> = idx
            .iter()
            .enumerate()
            .map(|(i, &g)| ((data.train.file[g], data.train.window[g]), i))
            .collect();
        idx.iter()
            .map(|&g| {
                pos.get(&(data.train.file[g], data.train.window[g] + 1))
                    .copied()
            })
            .collect()
    } else {
        vec![None; states.len()]
    };
    let decay = ((cfg.eps_decay_frac * cfg.episodes as f64).round() as usize).max(1);
    let mut buffer: VecDeque<Transition> = VecDeque::with_capacity(cfg.buffer.min(1 << 20));
    let mut best: Option<(f64, usize, Snapshot)> = None;
    let mut name = "val_f1";
    let mut steps = 0usize;
    for ep in 0..cfg.episodes {
        let t0 = Instant::now();
        let eps = if ep < decay {
            cfg.eps_start + (cfg.eps_end - cfg.eps_start) * ep as f64 / decay as f64
        } else {
            cfg.eps_end
        };
        let draw: Vec<usize> = (0..cfg.episode_size)
            .map(|_| r.random_range(0..states.len()))
            .collect();
        let picked: Vec<State> = draw.iter().map(|&i| states[i]).collect();
        let greedy = FusionModel::greedy_actions(q, &picked, device)?;
        let mut reward_sum = 0f64;
        for (k, &i) in draw.iter().enumerate() {
            let a = if r.random::<f64>() < eps {
                r.random_range(0..NUM_ACTIONS)
            } else {
                greedy[k]
            };
            let rew = fusion::reward(a, &states[i], ys[i], cfg.fn_cost as f32);
            reward_sum += rew as f64;
            if buffer.len() == cfg.buffer {
                buffer.pop_front();
            }
            buffer.push_back((i, a, rew, next[i]));
        }
        let mut losses = Vec::new();
        for _ in 0..cfg.steps_per_episode {
            if buffer.len() < cfg.batch {
                continue;
            }
            let pick = rand::seq::index::sample(&mut r, buffer.len(), cfg.batch);
            let batch: Vec<Transition> = pick.iter().map(|p| buffer[p]).collect();
            let s = states_tensor(
                &batch.iter().map(|t| states[t.0]).collect::<Vec<_>>(),
                device,
            )?;
            let acts = Tensor::from_iter(batch.iter().map(|t| t.1 as u32), device)?;
            let rewards: Vec<f32> = batch.iter().map(|t| t.2).collect();
            let y = if cfg.gamma > 0.0 {
                bootstrap(cfg.gamma, q, &target, states, &batch, &rewards, device)?
            } else {
                Tensor::from_vec(rewards, batch.len(), device)?
            };
            let qsa = q
                .forward(&s, &mut Mode::Train(&mut rng_drop))?
                .gather(&acts.unsqueeze(1)?, 1)?
                .squeeze(1)?;
            let loss = huber(&qsa, &y)?;
            opt.step(&loss)?;
            losses.push(loss.to_scalar::<f32>()? as f64);
            steps += 1;
            if steps.is_multiple_of(cfg.target_update) {
                target_store.restore(&store.snapshot()?)?;
            }
        }
        let validate = (ep + 1).is_multiple_of(cfg.val_every) || ep + 1 == cfg.episodes;
        let (mut crit, mut improved) = (None, false);
        if validate {
            let acts = FusionModel::greedy_actions(q, val_states, device)?;
            let pred: Vec<bool> = acts
                .iter()
                .zip(val_states)
                .map(|(&a, s)| fusion::decide(a, s).1)
                .collect();
            let (c, n) = criterion(val_y, &pred);
            name = n;
            crit = Some(c);
            improved = best.as_ref().is_none_or(|(b, _, _)| c > *b);
            if improved {
                best = Some((c, ep, store.snapshot()?));
            }
        }
        let train_loss =
            (!losses.is_empty()).then(|| losses.iter().sum::<f64>() / losses.len() as f64);
        let seconds = t0.elapsed().as_secs_f64();
        log.push(LogRow {
            stage: "dqn",
            step: ep,
            train_loss,
            criterion: crit,
            best: improved,
            epsilon: Some(eps),
            lr: opt.lr(),
            seconds,
            ..Default::default()
        });
        progress.step(
            ep,
            &format!(
                "loss {} reward {:.3} eps {eps:.3} {name} {}{} ({seconds:.1} s)",
                fmt_opt(train_loss),
                reward_sum / draw.len().max(1) as f64,
                fmt_opt(crit),
                if improved { " best" } else { "" }
            ),
        );
    }
    Ok(match best {
        Some((c, ep, snap)) => {
            store.restore(&snap)?;
            (Some(ep), Some(c), name)
        }
        None => (None, None, name),
    })
}

/// Double-DQN targets `r + γ(1−done)·Q_tgt(s', argmax_a Q(s', a))`.
fn bootstrap(
    gamma: f64,
    q: &QNet,
    target: &QNet,
    states: &[State],
    batch: &[Transition],
    rewards: &[f32],
    device: &Device,
) -> candle_core::Result<Tensor> {
    let nexts: Vec<State> = batch
        .iter()
        .map(|t| t.3.map(|n| states[n]).unwrap_or([0.0; fusion::STATE_DIM]))
        .collect();
    let not_done: Vec<f32> = batch.iter().map(|t| t.3.is_some() as u8 as f32).collect();
    let ns = states_tensor(&nexts, device)?;
    let a = q.forward(&ns, &mut Mode::Eval)?.argmax(D::Minus1)?;
    let qt = target
        .forward(&ns, &mut Mode::Eval)?
        .gather(&a.unsqueeze(1)?, 1)?
        .squeeze(1)?;
    let nd = Tensor::from_vec(not_done, batch.len(), device)?;
    let r = Tensor::from_vec(rewards.to_vec(), batch.len(), device)?;
    r + ((qt * nd)? * gamma)?
}

/// The MLP ablation's loop.
#[allow(clippy::too_many_arguments)]
fn train_mlp(
    cfg: &FusionStageConfig,
    m: &FusionMlp,
    store: &ParamStore,
    (states, ys): (&[State], &[u8]),
    (val_states, val_y): (&[State], &[u8]),
    device: &Device,
    log: &mut TrainLog,
    progress: &Progress,
) -> Result<(Option<usize>, Option<f64>, &'static str), TrainError> {
    if states.is_empty() {
        return Err(TrainError::Data(
            "the fusion stage has no training windows".into(),
        ));
    }
    let seed = cfg.common.seed;
    let mut opt = Optim::new(store.trainable(), cfg.mlp_lr, 0.0, cfg.grad_clip)?;
    let mut r: Rng = rng(seed, "mlp");
    let mut rng_drop = rng(seed, "dropout:mlp");
    let mut order: Vec<usize> = (0..states.len()).collect();
    let mut best: Option<(f64, usize, Snapshot)> = None;
    let mut name = "val_f1";
    let model = FusionModel::Mlp(FusionMlp::new(store.var_builder())?);
    for epoch in 0..cfg.mlp_epochs {
        let t0 = Instant::now();
        order.shuffle(&mut r);
        let (mut sum, mut n) = (0f64, 0usize);
        for c in order.chunks(cfg.mlp_batch) {
            let s = states_tensor(&c.iter().map(|&i| states[i]).collect::<Vec<_>>(), device)?;
            let t = Tensor::from_iter(c.iter().map(|&i| ys[i] as f32), device)?;
            let z = m.forward(&s, &mut Mode::Train(&mut rng_drop))?;
            let loss = bce_with_logits(&z, &t)?.mean_all()?;
            opt.step(&loss)?;
            sum += loss.to_scalar::<f32>()? as f64 * c.len() as f64;
            n += c.len();
        }
        let pred: Vec<bool> = model
            .score(val_states, device)?
            .iter()
            .map(|p| p.1)
            .collect();
        let (c, nm) = criterion(val_y, &pred);
        name = nm;
        let improved = best.as_ref().is_none_or(|(b, _, _)| c > *b);
        if improved {
            best = Some((c, epoch, store.snapshot()?));
        }
        let seconds = t0.elapsed().as_secs_f64();
        let train_loss = sum / n.max(1) as f64;
        log.push(LogRow {
            stage: "mlp",
            step: epoch,
            train_loss: Some(train_loss),
            criterion: Some(c),
            best: improved,
            lr: opt.lr(),
            seconds,
            ..Default::default()
        });
        progress.step(
            epoch,
            &format!(
                "loss {train_loss:.4} {name} {c:.4}{} ({seconds:.1} s)",
                if improved { " best" } else { "" }
            ),
        );
    }
    Ok(match best {
        Some((c, ep, snap)) => {
            store.restore(&snap)?;
            (Some(ep), Some(c), name)
        }
        None => (None, None, name),
    })
}

impl TrainedFusion {
    /// Writes `model.safetensors` (Q-network, MLP, or only metadata for `fixed`),
    /// `config.json`, `train_log.csv` and `metrics.json` into `out`.
    pub fn write(&self, out: &Path, data: &Splits, provenance: Value) -> Result<(), TrainError> {
        let (kind, architecture) = match &self.model {
            FusionModel::Dqn(q) => ("qnet", serde_json::to_value(&q.cfg).expect("serialises")),
            FusionModel::Mlp(_) => ("mlp", json!({"hidden": [64, 32], "dropout": 0.2})),
            FusionModel::Fixed(a) => ("fixed", json!({"fixed_alpha": *a as f64})),
        };
        let meta = ModelMeta {
            kind,
            size: self.config.size.as_str(),
            architecture: architecture.clone(),
            num_ids: data.num_ids,
            vocab_sha256: &data.vocab_sha256,
            best_epoch: self.best_step,
            criterion_name: self.criterion_name,
            criterion: self.best_criterion,
        };
        checkpoint::save(
            &out.join("model.safetensors"),
            &self.store,
            |_| true,
            &meta.to_map(),
        )?;
        write_json(
            &out.join("config.json"),
            &json!({
                "stage": "kdgat.dqn",
                "config": self.config,
                "method": self.config.method.as_str(),
                "architecture": architecture,
                "num_params": self.store.num_params(),
                "train_states": self.train_states,
                "provenance": provenance,
            }),
        )?;
        write_text(&out.join("train_log.csv"), &self.log.to_csv())?;
        write_json(
            &out.join("metrics.json"),
            &json!({
                "schema": "kdgat.stage_metrics.v1",
                "stage": "fusion",
                "fusion_method": self.config.method.as_str(),
                "best_step": self.best_step,
                "criterion_name": self.criterion_name,
                "criterion": self.best_criterion,
                "val": self.val.to_json(),
            }),
        )
    }
}
