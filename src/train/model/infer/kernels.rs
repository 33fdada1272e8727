//! The engine's numeric kernels: instruction-set detection, weights packed in 16-column
//! panels, the matrix-product microkernels (AVX-512, AVX2/FMA, portable), 64-byte-aligned
//! buffers, and branch-free vector math (`exp`, softplus, fixed-order sums).
//!
//! # Results do not depend on the instruction set or the batch
//! Every output element of [`matmul`] is computed the same way on every path: start from the
//! initial value (bias or table row), then one fused multiply-add per `k`, in increasing `k`
//! (`_mm512_fmadd_ps`, `_mm256_fmadd_ps` or `f32::mul_add`: all round once). No path splits
//! `k` across accumulators, so a row's result is the same bits whatever the ISA, the tile it
//! falls in or the other rows of the batch. The reductions below ([`sum16_map`],
//! [`sum16_map_padded`]) use sixteen partial sums combined in a fixed tree, which AVX-512
//! holds in one register and AVX2 in two: same order, same bits. [`aggregate`] multiplies and
//! adds separately in a fixed edge order on every path, and [`fast_exp`]/[`softplus_neg_abs`]
//! fuse explicitly (`mul_add` rounds once everywhere); nothing else contracts `a·b + c` (Rust
//! never does on its own). So the engine's outputs are bit-identical across ISAs and batch
//! sizes.
//!
//! # `unsafe`
//! Only the microkernels (`x86` below) use it: raw pointers into buffers whose sizes
//! [`matmul`] checks before it calls them, and `#[target_feature]` functions that are called
//! only after [`Isa::detect`]/[`Isa::is_available`] confirmed the features at run time.

/// Panel width: packed weights come in panels of 16 output columns (one AVX-512 register,
/// two AVX2 registers).
pub const NR: usize = 16;

/// The instruction set the kernels run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F + FMA: 8 × 48 microkernel.
    Avx512,
    /// AVX2 + FMA: 6 × 16 microkernel.
    Avx2,
    /// Plain Rust (`f32::mul_add`): any CPU; slow, for machines without the above.
    Portable,
}

impl Isa {
    /// The best instruction set this CPU has.
    pub fn detect() -> Isa {
        [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .find(|i| i.is_available())
            .unwrap_or(Isa::Portable)
    }

    /// Whether this CPU can run `self`.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The name used in messages and benchmark output.
    pub fn as_str(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }
}

/// A 64-byte-aligned `f32` buffer that only grows. Safe code: it over-allocates 15 values and
/// starts at the first aligned one. Growing zero-fills the new allocation once; reusing it
/// for the next batch costs nothing (contents are whatever the last batch left).
#[derive(Clone, Debug, Default)]
pub struct ABuf {
    v: Vec<f32>,
    off: usize,
    len: usize,
}

impl ABuf {
    pub fn zeros(len: usize) -> ABuf {
        let mut b = ABuf::default();
        b.grow(len);
        b
    }

    /// Makes the buffer `len` long; keeps the allocation when it is large enough.
    pub fn grow(&mut self, len: usize) -> &mut [f32] {
        if self.v.len() < self.off + len {
            self.v = vec![0f32; len + NR - 1];
            let addr = self.v.as_ptr() as usize;
            self.off = (64 - addr % 64) % 64 / 4;
        }
        self.len = len;
        &mut self.v[self.off..self.off + len]
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.v[self.off..self.off + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.v[self.off..self.off + self.len]
    }
}

/// A linear map `x·Wᵀ + b` packed for the microkernels: `W [n, k]` (PyTorch's `Linear.weight`
/// layout) as `npad/16` panels of `k × 16` values, zero beyond column `n`; the bias padded
/// with zeros.
#[derive(Clone, Debug)]
pub struct Packed {
    pub k: usize,
    pub n: usize,
    /// `n` rounded up to a multiple of [`NR`]: the width [`matmul`] writes.
    pub npad: usize,
    panels: ABuf,
    bias: ABuf,
}

impl Packed {
    /// Packs `w [n, k]` (row-major) and an optional bias `[n]`.
    pub fn new(w: &[f32], n: usize, k: usize, bias: Option<&[f32]>) -> Packed {
        assert_eq!(w.len(), n * k, "packed weight shape");
        let npad = n.div_ceil(NR) * NR;
        let mut panels = ABuf::zeros(npad * k);
        let p = panels.as_mut_slice();
        for j in 0..n {
            let (panel, lane) = (j / NR, j % NR);
            for kk in 0..k {
                p[panel * k * NR + kk * NR + lane] = w[j * k + kk];
            }
        }
        let mut b = ABuf::zeros(npad);
        if let Some(bias) = bias {
            assert_eq!(bias.len(), n, "packed bias shape");
            b.as_mut_slice()[..n].copy_from_slice(bias);
        }
        Packed {
            k,
            n,
            npad,
            panels,
            bias: b,
        }
    }
}

/// Where each output row of [`matmul`] starts.
#[derive(Clone, Copy)]
pub enum Init<'a> {
    /// From the packed bias (zeros if it has none).
    Bias,
    /// Row `i` from `table[ids[i]·ld ..][..npad]`: layer 1's per-ID products.
    Table {
        table: &'a [f32],
        ld: usize,
        ids: &'a [u32],
    },
}

/// `c[i, ..npad] = act(init_i + a[i, ..k]·W)` for `i < m`; `act` is ReLU if `relu`.
/// `a` has row stride `lda ≥ k`, `c` row stride `ldc ≥ npad` (the padding columns get
/// `init`'s padding, zeros for a bias).
///
/// Panics if a buffer is too small for the shapes or a table id is out of range.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    isa: Isa,
    m: usize,
    a: &[f32],
    lda: usize,
    w: &Packed,
    init: Init,
    relu: bool,
    c: &mut [f32],
    ldc: usize,
) {
    if m == 0 {
        return;
    }
    let (k, npad) = (w.k, w.npad);
    assert!(
        lda >= k && a.len() >= (m - 1) * lda + k,
        "matmul: `a` too small"
    );
    assert!(
        ldc >= npad && c.len() >= (m - 1) * ldc + npad,
        "matmul: `c` too small"
    );
    let rows = match init {
        Init::Bias => RowInit::Same(w.bias.as_slice().as_ptr()),
        Init::Table { table, ld, ids } => {
            assert!(ld >= npad && ids.len() >= m, "matmul: table shape");
            for &id in &ids[..m] {
                assert!(
                    (id as usize + 1) * ld <= table.len(),
                    "matmul: table id out of range"
                );
            }
            RowInit::Table(table.as_ptr(), ld, ids.as_ptr())
        }
    };
    let b = w.panels.as_slice().as_ptr();
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            assert!(isa.is_available(), "AVX-512 requested on a CPU without it");
            // SAFETY: the features were checked just above; every pointer the kernel forms
            // stays inside `a` (rows < m, cols < k), `c` (rows < m, cols < npad), the panels
            // (npad/16 panels of k×16) and the init rows (checked above), as `matmul_x86`
            // documents.
            unsafe {
                x86::matmul_avx512(
                    m,
                    k,
                    a.as_ptr(),
                    lda,
                    b,
                    npad / NR,
                    rows,
                    relu,
                    c.as_mut_ptr(),
                    ldc,
                )
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            assert!(
                isa.is_available(),
                "AVX2/FMA requested on a CPU without them"
            );
            // SAFETY: as above.
            unsafe {
                x86::matmul_avx2(
                    m,
                    k,
                    a.as_ptr(),
                    lda,
                    b,
                    npad / NR,
                    rows,
                    relu,
                    c.as_mut_ptr(),
                    ldc,
                )
            }
        }
        _ => matmul_portable(m, a, lda, w, init, relu, c, ldc),
    }
}

/// The init row pointer of each output row.
#[derive(Clone, Copy)]
enum RowInit {
    Same(*const f32),
    Table(*const f32, usize, *const u32),
}

impl RowInit {
    /// # Safety
    /// `i` must be a row [`matmul`] validated (`i < m`).
    #[inline(always)]
    unsafe fn row(self, i: usize) -> *const f32 {
        match self {
            RowInit::Same(p) => p,
            // SAFETY: `ids[i]` exists (i < m ≤ ids.len()) and its row lies in the table
            // (checked in `matmul`).
            RowInit::Table(t, ld, ids) => unsafe { t.add(*ids.add(i) as usize * ld) },
        }
    }
}

/// The reference path: one fused multiply-add per `k`, in order, per output element.
#[allow(clippy::too_many_arguments)]
fn matmul_portable(
    m: usize,
    a: &[f32],
    lda: usize,
    w: &Packed,
    init: Init,
    relu: bool,
    c: &mut [f32],
    ldc: usize,
) {
    let (k, npad) = (w.k, w.npad);
    let panels = w.panels.as_slice();
    for i in 0..m {
        let start = match init {
            Init::Bias => w.bias.as_slice(),
            Init::Table { table, ld, ids } => &table[ids[i] as usize * ld..][..npad],
        };
        for col in 0..npad {
            let (p, lane) = (col / NR, col % NR);
            let mut acc = start[col];
            let bp = &panels[p * k * NR + lane..];
            for kk in 0..k {
                acc = a[i * lda + kk].mul_add(bp[kk * NR], acc);
            }
            c[i * ldc + col] = if relu { acc.max(0.0) } else { acc };
        }
    }
}

/// The head of each of `heads·channels` channels, padded to a multiple of 16 with the last
/// head: the lane map [`aggregate`] takes.
pub fn heads_of(heads: usize, channels: usize) -> Vec<i32> {
    let hc = heads * channels;
    (0..hc.div_ceil(NR) * NR)
        .map(|c| (c.min(hc - 1) / channels) as i32)
        .collect()
}

/// One node's attention aggregation and epilogue:
/// `out[c] = act((Σ_e w[e, head(c)]·h[src_e, c])·inv[head(c)]·scale[c] + shift[c])` for
/// `c < hc = heads·channels`, where `w` holds one row of 16 lanes (the first `heads` used)
/// per edge in `src` order — the softmax numerators — and `inv` the reciprocal of their sums;
/// `head(c)` comes from `heads_of` ([`heads_of`]); `h` rows have stride `ld`. `act` is ReLU
/// (`x > 0 ? x : 0`) if `relu`, else the identity. Every path multiplies and adds
/// separately in the same order, the first edge's product starting the sum, so all give
/// the same bits.
///
/// Panics if a buffer is too small or `heads > 16`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn aggregate(
    isa: Isa,
    heads: usize,
    channels: usize,
    heads_of: &[i32],
    h: &[f32],
    ld: usize,
    src: &[u32],
    w: &[f32],
    inv: &[f32; NR],
    scale: &[f32],
    shift: &[f32],
    relu: bool,
    out: &mut [f32],
) {
    let hc = heads * channels;
    assert!(heads <= NR, "aggregate: at most {NR} heads");
    assert!(
        heads_of.len() >= hc.div_ceil(NR) * NR,
        "aggregate: head map"
    );
    assert!(
        !src.is_empty() && w.len() >= src.len() * NR,
        "aggregate: edges"
    );
    assert!(
        scale.len() >= hc && shift.len() >= hc && out.len() >= hc,
        "aggregate: widths"
    );
    for &j in src {
        assert!(
            (j as usize) * ld + hc <= h.len(),
            "aggregate: source row out of range"
        );
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        assert!(isa.is_available(), "AVX-512 requested on a CPU without it");
        // SAFETY: the features were checked; every row read lies in `h` (checked above), `w`
        // holds 16 values per edge, `heads_of` a whole number of 16-lane blocks covering
        // `hc`, `scale`, `shift` and `out` `hc` values (lanes beyond are masked).
        unsafe {
            x86::aggregate_avx512(
                hc,
                heads_of.as_ptr(),
                h.as_ptr(),
                ld,
                src,
                w.as_ptr(),
                inv,
                scale.as_ptr(),
                shift.as_ptr(),
                relu,
                out.as_mut_ptr(),
            )
        };
        return;
    }
    let _ = isa;
    for k in 0..heads {
        let r = k * channels..(k + 1) * channels;
        let o = &mut out[r.clone()];
        let j0 = src[0] as usize * ld;
        let w0 = w[k];
        for (v, &u) in o.iter_mut().zip(&h[j0 + r.start..j0 + r.end]) {
            *v = w0 * u;
        }
        for (e, &j) in src.iter().enumerate().skip(1) {
            let (a, j) = (w[e * NR + k], j as usize * ld);
            for (v, &u) in o.iter_mut().zip(&h[j + r.start..j + r.end]) {
                *v += a * u;
            }
        }
        let (sc, sh) = (&scale[r.clone()], &shift[r]);
        for ((v, &s), &t) in o.iter_mut().zip(sc).zip(sh) {
            let y = *v * inv[k] * s + t;
            *v = if relu {
                if y > 0.0 { y } else { 0.0 }
            } else {
                y
            };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The microkernels. A tile of `MR` rows × `NV` panels keeps its `MR·NV` accumulators in
    //! registers for the whole `k` loop; each step loads `NV` panel vectors and broadcasts
    //! `MR` values of `a`.
    use super::{NR, RowInit};
    use std::arch::x86_64::*;

    /// AVX-512 tile: 8 rows × 3 panels = 24 of the 32 zmm registers.
    const MR512: usize = 8;
    const NV512: usize = 3;
    /// AVX2 tile: 6 rows × 1 panel (2 ymm) = 12 of the 16 ymm registers.
    const MR256: usize = 6;

    /// # Safety
    /// AVX-512F and FMA must be available. `a` must hold `m` rows of stride `lda` with `k`
    /// readable values each; `b` `panels` panels of `k × 16`; `c` `m` rows of stride `ldc`
    /// with `16·panels` writable values; every init row `16·panels` readable values.
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn matmul_avx512(
        m: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        panels: usize,
        rows: RowInit,
        relu: bool,
        c: *mut f32,
        ldc: usize,
    ) {
        let mut i = 0;
        // SAFETY (all calls below): rows i..i+MR < m, panels as given; the contract above.
        unsafe {
            while i + MR512 <= m {
                block512::<MR512>(i, k, a, lda, b, panels, rows, relu, c, ldc);
                i += MR512;
            }
            match m - i {
                0 => {}
                1 => block512::<1>(i, k, a, lda, b, panels, rows, relu, c, ldc),
                2 => block512::<2>(i, k, a, lda, b, panels, rows, relu, c, ldc),
                3 => block512::<3>(i, k, a, lda, b, panels, rows, relu, c, ldc),
                4 => block512::<4>(i, k, a, lda, b, panels, rows, relu, c, ldc),
                5 => block512::<5>(i, k, a, lda, b, panels, rows, relu, c, ldc),
                6 => block512::<6>(i, k, a, lda, b, panels, rows, relu, c, ldc),
                _ => block512::<7>(i, k, a, lda, b, panels, rows, relu, c, ldc),
            }
        }
    }

    /// Rows `i..i+MR` across all panels.
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block512<const MR: usize>(
        i: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        panels: usize,
        rows: RowInit,
        relu: bool,
        c: *mut f32,
        ldc: usize,
    ) {
        // SAFETY: rows i..i+MR are < m (caller), so the init rows and a/c rows exist.
        unsafe {
            let init: [*const f32; MR] = std::array::from_fn(|r| rows.row(i + r));
            let a = a.add(i * lda);
            let c = c.add(i * ldc);
            let mut p = 0;
            while p + NV512 <= panels {
                tile512::<MR, NV512>(
                    k,
                    a,
                    lda,
                    b.add(p * k * NR),
                    k * NR,
                    &init,
                    p * NR,
                    relu,
                    c,
                    ldc,
                );
                p += NV512;
            }
            match panels - p {
                0 => {}
                1 => tile512::<MR, 1>(
                    k,
                    a,
                    lda,
                    b.add(p * k * NR),
                    k * NR,
                    &init,
                    p * NR,
                    relu,
                    c,
                    ldc,
                ),
                _ => tile512::<MR, 2>(
                    k,
                    a,
                    lda,
                    b.add(p * k * NR),
                    k * NR,
                    &init,
                    p * NR,
                    relu,
                    c,
                    ldc,
                ),
            }
        }
    }

    /// One `MR × 16·NV` tile at column `col`.
    #[target_feature(enable = "avx512f,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile512<const MR: usize, const NV: usize>(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        bstride: usize,
        init: &[*const f32; MR],
        col: usize,
        relu: bool,
        c: *mut f32,
        ldc: usize,
    ) {
        // SAFETY: the block's contract: rows < MR exist in a/c/init, columns col..col+16·NV
        // exist in c and the init rows, panels hold k×16 values each.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); NV]; MR];
            for r in 0..MR {
                for v in 0..NV {
                    acc[r][v] = _mm512_loadu_ps(init[r].add(col + v * NR));
                }
            }
            for kk in 0..k {
                let mut bv = [_mm512_setzero_ps(); NV];
                for v in 0..NV {
                    bv[v] = _mm512_loadu_ps(b.add(v * bstride + kk * NR));
                }
                for r in 0..MR {
                    let av = _mm512_set1_ps(*a.add(r * lda + kk));
                    for v in 0..NV {
                        acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
                    }
                }
            }
            let zero = _mm512_setzero_ps();
            for r in 0..MR {
                for v in 0..NV {
                    let x = if relu {
                        _mm512_max_ps(acc[r][v], zero)
                    } else {
                        acc[r][v]
                    };
                    _mm512_storeu_ps(c.add(r * ldc + col + v * NR), x);
                }
            }
        }
    }

    /// [`super::aggregate`] on 16-channel blocks: each block's sum stays in a register across
    /// the edges; a block may span two heads, so each edge's weights are spread over the
    /// block's lanes by a permutation.
    ///
    /// # Safety
    /// AVX-512F must be available; the buffer contract of [`super::aggregate`].
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn aggregate_avx512(
        hc: usize,
        heads_of: *const i32,
        h: *const f32,
        ld: usize,
        src: &[u32],
        w: *const f32,
        inv: &[f32; NR],
        scale: *const f32,
        shift: *const f32,
        relu: bool,
        out: *mut f32,
    ) {
        let zero = _mm512_setzero_ps();
        let mut c0 = 0;
        // SAFETY: lanes beyond `hc` are masked off; rows and weights per the contract.
        unsafe {
            let inv = _mm512_loadu_ps(inv.as_ptr());
            while c0 < hc {
                let lanes = (hc - c0).min(NR);
                let m: __mmask16 = ((1u32 << lanes) - 1) as __mmask16;
                let idx = _mm512_loadu_si512(heads_of.add(c0) as *const _);
                let wt = |e: usize| _mm512_permutexvar_ps(idx, _mm512_loadu_ps(w.add(e * NR)));
                let row = |j: u32| _mm512_maskz_loadu_ps(m, h.add(j as usize * ld + c0));
                let mut acc = _mm512_mul_ps(wt(0), row(src[0]));
                for (e, &j) in src.iter().enumerate().skip(1) {
                    acc = _mm512_add_ps(acc, _mm512_mul_ps(wt(e), row(j)));
                }
                let s = _mm512_maskz_loadu_ps(m, scale.add(c0));
                let t = _mm512_maskz_loadu_ps(m, shift.add(c0));
                let scaled = _mm512_mul_ps(_mm512_mul_ps(acc, _mm512_permutexvar_ps(idx, inv)), s);
                let mut y = _mm512_add_ps(scaled, t);
                if relu {
                    // `max(y, 0)` returns its second operand for ±0 and NaN: `y > 0 ? y : 0`.
                    y = _mm512_max_ps(y, zero);
                }
                _mm512_mask_storeu_ps(out.add(c0), m, y);
                c0 += NR;
            }
        }
    }

    /// # Safety
    /// AVX2 and FMA must be available; the buffer contract of [`matmul_avx512`].
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn matmul_avx2(
        m: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        panels: usize,
        rows: RowInit,
        relu: bool,
        c: *mut f32,
        ldc: usize,
    ) {
        let mut i = 0;
        // SAFETY (all calls below): rows i..i+MR < m; the contract above.
        unsafe {
            while i + MR256 <= m {
                block256::<MR256>(i, k, a, lda, b, panels, rows, relu, c, ldc);
                i += MR256;
            }
            match m - i {
                0 => {}
                1 => block256::<1>(i, k, a, lda, b, panels, rows, relu, c, ldc),
                2 => block256::<2>(i, k, a, lda, b, panels, rows, relu, c, ldc),
                3 => block256::<3>(i, k, a, lda, b, panels, rows, relu, c, ldc),
                4 => block256::<4>(i, k, a, lda, b, panels, rows, relu, c, ldc),
                _ => block256::<5>(i, k, a, lda, b, panels, rows, relu, c, ldc),
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block256<const MR: usize>(
        i: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        panels: usize,
        rows: RowInit,
        relu: bool,
        c: *mut f32,
        ldc: usize,
    ) {
        // SAFETY: rows i..i+MR are < m (caller).
        unsafe {
            let init: [*const f32; MR] = std::array::from_fn(|r| rows.row(i + r));
            let a = a.add(i * lda);
            let c = c.add(i * ldc);
            for p in 0..panels {
                tile256::<MR>(k, a, lda, b.add(p * k * NR), &init, p * NR, relu, c, ldc);
            }
        }
    }

    /// One `MR × 16` tile at column `col` (two ymm accumulators per row).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile256<const MR: usize>(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        init: &[*const f32; MR],
        col: usize,
        relu: bool,
        c: *mut f32,
        ldc: usize,
    ) {
        // SAFETY: as `tile512`.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; MR];
            for r in 0..MR {
                for v in 0..2 {
                    acc[r][v] = _mm256_loadu_ps(init[r].add(col + v * 8));
                }
            }
            for kk in 0..k {
                let b0 = _mm256_loadu_ps(b.add(kk * NR));
                let b1 = _mm256_loadu_ps(b.add(kk * NR + 8));
                for r in 0..MR {
                    let av = _mm256_set1_ps(*a.add(r * lda + kk));
                    acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
                }
            }
            let zero = _mm256_setzero_ps();
            for r in 0..MR {
                for v in 0..2 {
                    let x = if relu {
                        _mm256_max_ps(acc[r][v], zero)
                    } else {
                        acc[r][v]
                    };
                    _mm256_storeu_ps(c.add(r * ldc + col + v * 8), x);
                }
            }
        }
    }
}

/// `e^x` in f32, branch-free so that loops over it vectorise: Cody–Waite range reduction
/// and a degree-6 polynomial, within 2 ulp of `expf`; saturates below −87 and above 88.
/// (The same function as the candle path's `vgae::fast_exp`.)
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MAGIC: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
    // `max`/`min` rather than `clamp`, and the exponent taken from the bits of `t` rather
    // than by a (saturating) float-to-int cast: both vectorise.
    #[allow(clippy::manual_clamp)] // `clamp` does not vectorise (it asserts min ≤ max)
    let x = x.max(-87.0).min(88.0);
    // Fused multiply-adds (`mul_add` rounds once on every path, in hardware where the engine
    // runs, so the bits do not depend on the instruction set).
    let t = x.mul_add(LOG2E, MAGIC);
    let n = t - MAGIC;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p = 0.001_388_89f32;
    for c in [0.008_333_452, 0.041_666_6, 0.166_666_67, 0.5, 1.0, 1.0] {
        p = p.mul_add(r, c);
    }
    // bits(t) = bits(MAGIC) + n for the integer n = round(x·log2 e), |n| ≤ 127.
    let e = t.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127) << 23;
    p * f32::from_bits(e)
}

/// `ln(1 + e^{−|x|})` as `2·atanh(y/(2+y))`, `y = e^{−|x|}` (the candle path's formula).
#[inline(always)]
pub fn softplus_neg_abs(x: f32) -> f32 {
    let y = fast_exp(-x.abs());
    let s = y / (2.0 + y);
    let s2 = s * s;
    let mut p = 1.0f32 / 13.0;
    for c in [1.0 / 11.0, 1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0] {
        p = p.mul_add(s2, c);
    }
    2.0 * s * p
}

/// `1 / (1 + e^{−x})`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-x))
}

/// The sixteen partial sums combined in a fixed tree.
#[inline(always)]
fn reduce16(a: [f32; 16]) -> f32 {
    let mut s8 = [0f32; 8];
    for l in 0..8 {
        s8[l] = a[l] + a[l + 8];
    }
    let s4 = [s8[0] + s8[4], s8[1] + s8[5], s8[2] + s8[6], s8[3] + s8[7]];
    (s4[0] + s4[2]) + (s4[1] + s4[3])
}

/// `Σ f(v[i])` with sixteen partial sums (vectorises; a fixed order on every ISA).
#[inline(always)]
pub fn sum16_map(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = v.chunks_exact(16);
    let rem = chunks.remainder();
    for ch in chunks {
        for l in 0..16 {
            acc[l] += f(ch[l]);
        }
    }
    // The tail as one more (masked) chunk, so that `f` runs vectorised there too.
    let mut tail = [0f32; 16];
    tail[..rem.len()].copy_from_slice(rem);
    for l in 0..16 {
        let y = f(tail[l]);
        acc[l] += if l < rem.len() { y } else { 0.0 };
    }
    reduce16(acc)
}

/// `Σ f(v[i])` over the first `len` values of `v`, whose length is a whole number of
/// 16-lane chunks (a padded row): every chunk runs whole, the lanes past `len` masked, so
/// there is no scalar tail. The same sums, in the same order, as [`sum16_map`].
///
/// Panics if `v` is not a whole number of chunks or shorter than `len`.
#[inline(always)]
pub fn sum16_map_padded(v: &[f32], len: usize, f: impl Fn(f32) -> f32) -> f32 {
    assert!(v.len().is_multiple_of(16) && len <= v.len(), "a padded row");
    let mut acc = [0f32; 16];
    for (c, ch) in v.chunks_exact(16).enumerate() {
        for l in 0..16 {
            let y = f(ch[l]);
            acc[l] += if c * 16 + l < len { y } else { 0.0 };
        }
    }
    reduce16(acc)
}

/// The maximum of the first `len` values of a padded row (see [`sum16_map_padded`]).
#[inline(always)]
pub fn max16_padded(v: &[f32], len: usize) -> f32 {
    assert!(v.len().is_multiple_of(16) && len <= v.len(), "a padded row");
    let mut acc = [f32::NEG_INFINITY; 16];
    for (c, ch) in v.chunks_exact(16).enumerate() {
        for l in 0..16 {
            let x = if c * 16 + l < len {
                ch[l]
            } else {
                f32::NEG_INFINITY
            };
            acc[l] = if x > acc[l] { x } else { acc[l] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for x in acc {
        m = if x > m { x } else { m };
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(m: usize, k: usize, n: usize, a: &[f32], w: &[f32], init: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = init[i * n + j];
                for kk in 0..k {
                    acc = a[i * k + kk].mul_add(w[j * k + kk], acc);
                }
                out[i * n + j] = acc;
            }
        }
        out
    }

    /// Every ISA gives the bits of the sequential fused-multiply-add reference, for shapes
    /// that exercise every tile tail, with bias and with table rows.
    #[test]
    fn matmul_is_bit_identical_on_every_isa() {
        let mut seed = 1u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 10, 40),
            (17, 33, 100),
            (8, 48, 48),
            (13, 5, 16),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rnd()).collect();
            let bias: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let packed = Packed::new(&w, n, k, Some(&bias));
            let npad = packed.npad;
            let ids: Vec<u32> = (0..m as u32).map(|i| (i * 7) % 5).collect();
            let mut table = vec![0f32; 5 * npad];
            for v in table.iter_mut() {
                *v = rnd();
            }
            for relu in [false, true] {
                for use_table in [false, true] {
                    let init: Vec<f32> = (0..m * n)
                        .map(|x| {
                            let (i, j) = (x / n, x % n);
                            if use_table {
                                table[ids[i] as usize * npad + j]
                            } else {
                                bias[j]
                            }
                        })
                        .collect();
                    let mut want = reference(m, k, n, &a, &w, &init);
                    if relu {
                        want.iter_mut().for_each(|v| *v = v.max(0.0));
                    }
                    for isa in [Isa::Avx512, Isa::Avx2, Isa::Portable] {
                        if !isa.is_available() {
                            continue;
                        }
                        let ldc = npad + 16;
                        let mut c = vec![f32::NAN; m * ldc];
                        let init = if use_table {
                            Init::Table {
                                table: &table,
                                ld: npad,
                                ids: &ids,
                            }
                        } else {
                            Init::Bias
                        };
                        matmul(isa, m, &a, k, &packed, init, relu, &mut c, ldc);
                        for i in 0..m {
                            for j in 0..n {
                                assert_eq!(
                                    c[i * ldc + j].to_bits(),
                                    want[i * n + j].to_bits(),
                                    "{isa:?} m{m} k{k} n{n} relu {relu} table {use_table} at ({i},{j})"
                                );
                            }
                            for j in n..npad {
                                assert!(c[i * ldc + j].is_finite(), "padding is written");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn aligned_buffers() {
        for len in [1, 15, 16, 1000] {
            let mut b = ABuf::zeros(len);
            assert_eq!(b.as_slice().as_ptr() as usize % 64, 0);
            assert_eq!(b.grow(len * 3).len(), len * 3);
            assert_eq!(b.as_slice().as_ptr() as usize % 64, 0);
        }
    }

    #[test]
    fn reductions_and_math() {
        let v: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 3.0).collect();
        let s: f32 = v.iter().sum();
        assert!((sum16_map(&v, |x| x) - s).abs() < 1e-4);
        let mut padded = v.clone();
        padded.resize(48, 1e30);
        assert_eq!(
            sum16_map_padded(&padded, v.len(), |x| x),
            sum16_map(&v, |x| x)
        );
        assert_eq!(max16_padded(&padded, v.len()), 15.0);
        for x in [-100f32, -3.0, 0.0, 2.5, 90.0] {
            let e = x.clamp(-87.0, 88.0).exp();
            assert!((fast_exp(x) - e).abs() <= 1e-6 * e);
            assert!((sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs() < 1e-6);
        }
    }
}
