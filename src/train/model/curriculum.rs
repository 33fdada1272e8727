//! The GAT's curriculum (spec §5.4), re-sampled every epoch (pitfall 10: [O1] built its loader
//! once, a static 1:1 sample).
//!
//! Epoch `e`: progress `p = min(e/ramp, 1)`; normal:attack ratio `r = r0 + p·(r1' − r0)` with
//! `r1' = min(r1, |M|/|A|)`; percentile `q = q0 + p·(q1 − q0)`; hard pool `H` = normals at or
//! above the `q`-th difficulty; `n = min(round(r·|A|), |M|)` normals drawn, `min(n, |H|)` of
//! them from `H` and the rest from `M∖H`, uniformly without replacement.

use rand::Rng as _;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::init::Rng;

/// Curriculum settings (spec §7 `[curriculum]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurriculumConfig {
    pub ratio_start: f64,
    pub ratio_end: f64,
    pub pct_start: f64,
    pub pct_end: f64,
    pub ramp_epochs: usize,
}

/// One epoch's training set and what is logged about it.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochSample {
    /// `A ∪ sample`, shuffled (indices into the training set).
    pub indices: Vec<usize>,
    pub ratio: f64,
    pub percentile: f64,
    /// Normals drawn.
    pub n: usize,
    pub attacks: usize,
    pub hard_pool: usize,
    /// Normals drawn from the hard pool.
    pub hard: usize,
}

/// Draws `k` distinct items of `pool` uniformly (partial Fisher–Yates).
fn draw(pool: &mut [usize], k: usize, rng: &mut Rng) -> Vec<usize> {
    let k = k.min(pool.len());
    for i in 0..k {
        let j = rng.random_range(i..pool.len());
        pool.swap(i, j);
    }
    pool[..k].to_vec()
}

impl CurriculumConfig {
    /// Progress `p` at epoch `e`.
    pub fn progress(&self, epoch: usize) -> f64 {
        if self.ramp_epochs == 0 {
            1.0
        } else {
            (epoch as f64 / self.ramp_epochs as f64).min(1.0)
        }
    }

    /// Samples epoch `epoch`'s set. `attacks` and `normals` index the training set;
    /// `difficulty[i]` belongs to `normals[i]`. `attacks` must not be empty.
    pub fn sample(
        &self,
        epoch: usize,
        attacks: &[usize],
        normals: &[usize],
        difficulty: &[f32],
        rng: &mut Rng,
    ) -> EpochSample {
        assert!(!attacks.is_empty(), "the curriculum needs attack windows");
        assert_eq!(normals.len(), difficulty.len());
        let p = self.progress(epoch);
        let (na, nm) = (attacks.len(), normals.len());
        let r1 = self.ratio_end.min(nm as f64 / na as f64);
        let ratio = self.ratio_start + p * (r1 - self.ratio_start);
        let percentile = self.pct_start + p * (self.pct_end - self.pct_start);
        let n = ((ratio * na as f64).round().max(0.0) as usize).min(nm);
        let (mut hard_pool, mut easy_pool): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
        if nm > 0 {
            let mut sorted = difficulty.to_vec();
            sorted.sort_by(|a, b| a.total_cmp(b));
            let k = ((nm as f64 * percentile / 100.0).floor() as usize).min(nm - 1);
            let cut = sorted[k];
            for (i, &d) in difficulty.iter().enumerate() {
                if d >= cut {
                    hard_pool.push(normals[i]);
                } else {
                    easy_pool.push(normals[i]);
                }
            }
        }
        let hard_n = n.min(hard_pool.len());
        let pool_size = hard_pool.len();
        let mut indices = attacks.to_vec();
        indices.extend(draw(&mut hard_pool, hard_n, rng));
        indices.extend(draw(&mut easy_pool, n - hard_n, rng));
        indices.shuffle(rng);
        EpochSample {
            indices,
            ratio,
            percentile,
            n,
            attacks: na,
            hard_pool: pool_size,
            hard: hard_n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cfg() -> CurriculumConfig {
        CurriculumConfig {
            ratio_start: 1.0,
            ratio_end: 10.0,
            pct_start: 75.0,
            pct_end: 95.0,
            ramp_epochs: 4,
        }
    }

    #[test]
    fn logged_n_is_round_r_times_attacks_capped_and_changes() {
        let attacks: Vec<usize> = (0..7).collect();
        let normals: Vec<usize> = (7..57).collect(); // |M|/|A| = 50/7 ≈ 7.14 < 10
        let diff: Vec<f32> = (0..50).map(|i| ((i * 37) % 50) as f32).collect();
        let mut rng = Rng::seed_from_u64(1);
        let mut ns = Vec::new();
        for e in 0..6 {
            let s = cfg().sample(e, &attacks, &normals, &diff, &mut rng);
            let r1 = (50.0f64 / 7.0).min(10.0);
            let p = (e as f64 / 4.0).min(1.0);
            let r = 1.0 + p * (r1 - 1.0);
            assert!((s.ratio - r).abs() < 1e-12);
            assert_eq!(s.n, ((r * 7.0).round() as usize).min(50));
            assert_eq!(s.indices.len(), 7 + s.n);
            let mut u = s.indices.clone();
            u.sort();
            u.dedup();
            assert_eq!(u.len(), s.indices.len(), "no window twice");
            assert!(s.indices.iter().filter(|&&i| i < 7).count() == 7);
            ns.push(s.n);
        }
        assert_eq!(ns[0], 7);
        assert!(ns.windows(2).take(4).all(|w| w[0] < w[1]), "{ns:?}");
        assert_eq!(ns[4], 50);
    }

    #[test]
    fn hard_pool_comes_first() {
        let attacks = [0usize];
        let normals: Vec<usize> = (1..101).collect();
        let diff: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let c = CurriculumConfig {
            ramp_epochs: 0,
            ratio_end: 10.0,
            pct_end: 95.0,
            ..cfg()
        };
        let mut rng = Rng::seed_from_u64(2);
        let s = c.sample(0, &attacks, &normals, &diff, &mut rng);
        // q = 95: cut at sorted[95] = 95 → H = {95..99} (5 windows), all drawn.
        assert_eq!((s.n, s.hard_pool, s.hard), (10, 5, 5));
        for i in 96..=100 {
            assert!(s.indices.contains(&i));
        }
    }
}
