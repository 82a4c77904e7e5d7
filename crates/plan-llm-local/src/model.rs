//! A llama-architecture forward pass over candle-core's quantised blocks.
//!
//! candle-core gives the GGUF reader and the SIMD Q8_0 dot-product kernels; the layers,
//! the KV cache and the attention are written here so that:
//! - the number of threads is per model (a rayon pool of our own; candle's global pool is
//!   sized once per process from environment variables and spins while waiting, which
//!   collapses on a shared CPU),
//! - the KV cache is preallocated (no reallocation per token),
//! - the build stays small (no candle-nn / candle-transformers).

use std::io::{Read, Seek};

use candle_core::Device;
use candle_core::quantized::gguf_file::Content;
use rayon::prelude::*;

/// Values per Q8_0 block.
const QK: usize = 32;

/// Shape of the model, from the GGUF metadata.
#[derive(Clone, Debug)]
pub(crate) struct Hyper {
    pub(crate) n_layer: usize,
    pub(crate) dim: usize,
    pub(crate) n_head: usize,
    pub(crate) n_kv_head: usize,
    pub(crate) head_dim: usize,
    pub(crate) ffn: usize,
    pub(crate) vocab: usize,
    pub(crate) eps: f32,
    pub(crate) rope_base: f32,
    pub(crate) train_context: usize,
}

/// Token rows processed together by one weight row in the batched (prompt) matmul: each
/// weight block is loaded once for this many activation rows.
const TILE: usize = 4;

/// Rows quantised to Q8_0, split into values and scales: `qs` holds `rows * cols` signed
/// bytes, `d` one f32 scale per block of [`QK`] values (f32 rather than GGUF's f16 so the
/// inner loop has no half-float conversion).
#[derive(Default)]
struct QRows {
    qs: Vec<i8>,
    d: Vec<f32>,
}

impl QRows {
    /// Quantises `x` (whole blocks of [`QK`] values) into `self`, reusing its buffers.
    fn quantize(&mut self, x: &[f32]) {
        self.qs.resize(x.len(), 0);
        self.d.resize(x.len() / QK, 0.0);
        for ((src, dst), d) in x
            .chunks_exact(QK)
            .zip(self.qs.chunks_exact_mut(QK))
            .zip(self.d.iter_mut())
        {
            let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
            *d = scale;
            for (q, v) in dst.iter_mut().zip(src) {
                // Round half away from zero without a libm call (`f32::round` is not
                // inlined on baseline x86-64); |v * inv| <= 127 so the cast cannot clip.
                let r = v * inv;
                *q = (r + 0.5f32.copysign(r)) as i8;
            }
        }
    }

    #[inline]
    fn row(&self, r: usize, cols: usize) -> (&[i8], &[f32]) {
        (
            &self.qs[r * cols..(r + 1) * cols],
            &self.d[r * cols / QK..(r + 1) * cols / QK],
        )
    }
}

/// A weight matrix `rows x cols` stored as Q8_0, row-major.
struct QMat {
    rows: usize,
    cols: usize,
    q: QRows,
}

impl QMat {
    fn from_f32(rows: usize, cols: usize, data: &[f32]) -> Result<Self, String> {
        if !cols.is_multiple_of(QK) || data.len() != rows * cols {
            return Err(format!(
                "a {rows}x{cols} weight cannot be stored in blocks of {QK}"
            ));
        }
        let mut q = QRows::default();
        q.quantize(data);
        Ok(Self { rows, cols, q })
    }

    /// `out[t][r] = sum_c w[r][c] * x[t][c]` for `n` input rows already quantised.
    ///
    /// Every (row, token) dot product runs the same arithmetic in the same order whatever
    /// `n` is, so a prompt run in one batch gives the same numbers as token by token.
    fn matmul(&self, x: &QRows, n: usize, out: &mut [f32]) {
        let cols = self.cols;
        let rows = self.rows;
        let kernel = Kernel::detect();
        let serial = rayon::current_num_threads() <= 1;
        // Each task owns a run of weight rows.
        const CHUNK: usize = 64;
        let bpr = cols / QK;
        // The weight rows `start..start + len`.
        let w = |start: usize, len: usize| {
            (
                &self.q.qs[start * cols..(start + len) * cols],
                &self.q.d[start * bpr..(start + len) * bpr],
            )
        };
        if n == 1 {
            let (xq, xd) = x.row(0, cols);
            let run = |(ci, o): (usize, &mut [f32])| {
                let (wq, wd) = w(ci * CHUNK, o.len());
                kernel.dot_rows::<1>(wq, wd, [xq], [xd], o, 1);
            };
            let out = &mut out[..rows];
            if serial {
                out.chunks_mut(CHUNK).enumerate().for_each(run);
            } else {
                out.par_chunks_mut(CHUNK).enumerate().for_each(run);
            }
            return;
        }
        // Batched: a task computes its rows for every token (tiles of TILE tokens share
        // each weight block load) into a local [row][token] buffer, then scatters.
        let task = |ci: usize| -> (usize, Vec<f32>) {
            let start = ci * CHUNK;
            let nrows = CHUNK.min(rows - start);
            let (wq, wd) = w(start, nrows);
            let mut local = vec![0f32; nrows * n];
            let mut t = 0;
            while t + TILE <= n {
                let xs: [(&[i8], &[f32]); TILE] = std::array::from_fn(|j| x.row(t + j, cols));
                let (xq, xd) = (xs.map(|p| p.0), xs.map(|p| p.1));
                kernel.dot_rows::<TILE>(wq, wd, xq, xd, &mut local[t..], n);
                t += TILE;
            }
            for tt in t..n {
                let (xq, xd) = x.row(tt, cols);
                kernel.dot_rows::<1>(wq, wd, [xq], [xd], &mut local[tt..], n);
            }
            (start, local)
        };
        let chunks = rows.div_ceil(CHUNK);
        let parts: Vec<(usize, Vec<f32>)> = if serial {
            (0..chunks).map(task).collect()
        } else {
            (0..chunks).into_par_iter().map(task).collect()
        };
        for (start, local) in parts {
            for (r, vals) in local.chunks_exact(n).enumerate() {
                for (t, v) in vals.iter().enumerate() {
                    out[t * rows + start + r] = *v;
                }
            }
        }
    }
}

/// The dot-product kernel for this CPU: AVX2+FMA when present, portable otherwise.
#[derive(Clone, Copy)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Kernel {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Self::Avx2;
        }
        Self::Portable
    }

    /// Dot products of the weight rows in `wq`/`wd` (whole rows of `xd[0].len()` blocks)
    /// with `T` activation rows: row `r`, token `t` goes to `out[r * stride + t]`.
    #[inline]
    fn dot_rows<const T: usize>(
        self,
        wq: &[i8],
        wd: &[f32],
        xq: [&[i8]; T],
        xd: [&[f32]; T],
        out: &mut [f32],
        stride: usize,
    ) {
        let bpr = xd.first().map_or(0, |x| x.len());
        assert!(
            bpr > 0
                && wd.len().is_multiple_of(bpr)
                && wq.len() == wd.len() * QK
                && xq.iter().all(|x| x.len() == bpr * QK)
                && xd.iter().all(|x| x.len() == bpr),
            "mismatched row lengths"
        );
        match self {
            // SAFETY: `detect` saw AVX2 and FMA on this CPU; the lengths are checked above.
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            Self::Avx2 => unsafe { avx2::dot_rows::<T>(wq, wd, xq, xd, out, stride) },
            Self::Portable => {
                for (r, rd) in wd.chunks_exact(bpr).enumerate() {
                    let got = portable_dot::<T>(&wq[r * bpr * QK..(r + 1) * bpr * QK], rd, xq, xd);
                    out[r * stride..r * stride + T].copy_from_slice(&got);
                }
            }
        }
    }
}

fn portable_dot<const T: usize>(
    wq: &[i8],
    wd: &[f32],
    xq: [&[i8]; T],
    xd: [&[f32]; T],
) -> [f32; T] {
    let mut acc = [0f32; T];
    for (b, (w, dw)) in wq.chunks_exact(QK).zip(wd).enumerate() {
        for t in 0..T {
            let x = &xq[t][b * QK..(b + 1) * QK];
            let s: i32 = w.iter().zip(x).map(|(a, c)| *a as i32 * *c as i32).sum();
            acc[t] += dw * xd[t][b] * s as f32;
        }
    }
    acc
}

// The one place this crate uses `unsafe`: SIMD loads in the hot loop, behind a runtime
// CPU feature check and a length check.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::*;

    use super::QK;

    /// Every weight row against the `T` activation rows (see `Kernel::dot_rows`).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `xd` non-empty, `wd.len()` a multiple of
    /// `xd[0].len()`, `wq.len() == wd.len() * QK`, every `xq[t]` `xd[0].len() * QK` long
    /// and every `xd[t]` `xd[0].len()` long.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_rows<const T: usize>(
        wq: &[i8],
        wd: &[f32],
        xq: [&[i8]; T],
        xd: [&[f32]; T],
        out: &mut [f32],
        stride: usize,
    ) {
        let bpr = xd[0].len();
        for (r, rd) in wd.chunks_exact(bpr).enumerate() {
            // SAFETY: the row holds bpr blocks, as many as every xq[t] (the contract).
            let got = unsafe { dot::<T>(&wq[r * bpr * QK..(r + 1) * bpr * QK], rd, xq, xd) };
            out[r * stride..r * stride + T].copy_from_slice(&got);
        }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; `wq.len() == wd.len() * QK`, every `xq[t]` as
    /// long as `wq` and every `xd[t]` as long as `wd`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot<const T: usize>(
        wq: &[i8],
        wd: &[f32],
        xq: [&[i8]; T],
        xd: [&[f32]; T],
    ) -> [f32; T] {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); T];
        for (b, dw) in wd.iter().enumerate() {
            // SAFETY: (b + 1) * QK <= wq.len() == xq[t].len() (the caller's contract).
            let w = unsafe { _mm256_loadu_si256(wq.as_ptr().add(b * QK).cast::<__m256i>()) };
            // |w| and sign(w) * x: maddubs wants one unsigned operand.
            let aw = _mm256_sign_epi8(w, w);
            for t in 0..T {
                let y = unsafe { _mm256_loadu_si256(xq[t].as_ptr().add(b * QK).cast::<__m256i>()) };
                let sy = _mm256_sign_epi8(y, w);
                let pairs = _mm256_maddubs_epi16(aw, sy);
                let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xd[t][b]), sums, acc[t]);
            }
        }
        let mut out = [0f32; T];
        for (o, a) in out.iter_mut().zip(acc) {
            let hi = _mm256_extractf128_ps(a, 1);
            let s = _mm_add_ps(hi, _mm256_castps256_ps128(a));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            *o = _mm_cvtss_f32(s);
        }
        out
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: QMat,
    wk: QMat,
    wv: QMat,
    wo: QMat,
    ffn_norm: Vec<f32>,
    w_gate: QMat,
    w_up: QMat,
    w_down: QMat,
    /// `[context][n_kv_head * head_dim]`.
    k_cache: Vec<f32>,
    v_cache: Vec<f32>,
}

/// The model's weights and KV cache.
pub(crate) struct Llama {
    pub(crate) hyper: Hyper,
    embed: Vec<f32>,
    output: QMat,
    norm: Vec<f32>,
    layers: Vec<Layer>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    context: usize,
    /// The final hidden state of the last token run, normalised and quantised: the input
    /// of the output projection.
    last: QRows,
}

fn md_u32(ct: &Content, key: &str) -> Result<usize, String> {
    ct.metadata
        .get(key)
        .ok_or_else(|| format!("missing {key}"))?
        .to_u32()
        .map(|v| v as usize)
        .map_err(|e| format!("{key}: {e}"))
}

fn md_f32(ct: &Content, key: &str) -> Option<f32> {
    ct.metadata.get(key).and_then(|v| v.to_f32().ok())
}

impl Llama {
    /// Loads the weights (re-encoding every matrix to Q8_0) with room for `context` tokens.
    pub(crate) fn load<R: Read + Seek>(
        ct: &Content,
        reader: &mut R,
        context: usize,
    ) -> Result<Self, String> {
        let arch = ct
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "llama" {
            return Err(format!(
                "architecture {arch:?} is not supported (only \"llama\")"
            ));
        }
        let n_head = md_u32(ct, "llama.attention.head_count")?;
        let dim = md_u32(ct, "llama.embedding_length")?;
        let hyper = Hyper {
            n_layer: md_u32(ct, "llama.block_count")?,
            dim,
            n_head,
            n_kv_head: md_u32(ct, "llama.attention.head_count_kv")?,
            head_dim: dim / n_head.max(1),
            ffn: md_u32(ct, "llama.feed_forward_length")?,
            vocab: 0,
            eps: md_f32(ct, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_base: md_f32(ct, "llama.rope.freq_base").unwrap_or(10_000.0),
            train_context: md_u32(ct, "llama.context_length").unwrap_or(2048),
        };
        if context > hyper.train_context {
            return Err(format!(
                "a context of {context} tokens is more than the model was trained for ({})",
                hyper.train_context
            ));
        }
        if hyper.n_kv_head == 0
            || !n_head.is_multiple_of(hyper.n_kv_head)
            || !hyper.head_dim.is_multiple_of(2)
        {
            return Err("inconsistent attention shape".to_owned());
        }
        let device = Device::Cpu;
        let mut tensor = |name: &str| -> Result<(Vec<usize>, Vec<f32>), String> {
            let qt = ct
                .tensor(&mut *reader, name, &device)
                .map_err(|e| format!("{name}: {e}"))?;
            let dims = qt.shape().dims().to_vec();
            let data = qt
                .dequantize(&device)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| format!("{name}: {e}"))?;
            Ok((dims, data))
        };
        let mut mat = |name: &str, rows: usize, cols: usize| -> Result<QMat, String> {
            let (dims, data) = tensor(name)?;
            if dims != [rows, cols] {
                return Err(format!("{name}: shape {dims:?}, expected [{rows}, {cols}]"));
            }
            QMat::from_f32(rows, cols, &data)
        };
        let kv_dim = hyper.n_kv_head * hyper.head_dim;
        let mut layers = Vec::with_capacity(hyper.n_layer);
        for i in 0..hyper.n_layer {
            let p = format!("blk.{i}");
            layers.push(Layer {
                attn_norm: Vec::new(),
                wq: mat(&format!("{p}.attn_q.weight"), dim, dim)?,
                wk: mat(&format!("{p}.attn_k.weight"), kv_dim, dim)?,
                wv: mat(&format!("{p}.attn_v.weight"), kv_dim, dim)?,
                wo: mat(&format!("{p}.attn_output.weight"), dim, dim)?,
                ffn_norm: Vec::new(),
                w_gate: mat(&format!("{p}.ffn_gate.weight"), hyper.ffn, dim)?,
                w_up: mat(&format!("{p}.ffn_up.weight"), hyper.ffn, dim)?,
                w_down: mat(&format!("{p}.ffn_down.weight"), dim, hyper.ffn)?,
                k_cache: vec![0.0; context * kv_dim],
                v_cache: vec![0.0; context * kv_dim],
            });
        }
        for (i, layer) in layers.iter_mut().enumerate() {
            layer.attn_norm = tensor(&format!("blk.{i}.attn_norm.weight"))?.1;
            layer.ffn_norm = tensor(&format!("blk.{i}.ffn_norm.weight"))?.1;
        }
        let norm = tensor("output_norm.weight")?.1;
        let (edims, embed) = tensor("token_embd.weight")?;
        if edims.len() != 2 || edims[1] != dim {
            return Err(format!("token_embd.weight: shape {edims:?}"));
        }
        let vocab = edims[0];
        let output = match tensor("output.weight") {
            Ok((dims, data)) if dims == [vocab, dim] => QMat::from_f32(vocab, dim, &data)?,
            // Tied embeddings: the output projection is the embedding table.
            _ => QMat::from_f32(vocab, dim, &embed)?,
        };
        let hyper = Hyper { vocab, ..hyper };
        let half = hyper.head_dim / 2;
        let mut cos = Vec::with_capacity(context * half);
        let mut sin = Vec::with_capacity(context * half);
        for pos in 0..context {
            for i in 0..half {
                let freq = hyper
                    .rope_base
                    .powf(-(2.0 * i as f32) / hyper.head_dim as f32);
                let angle = pos as f32 * freq;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok(Self {
            hyper,
            embed,
            output,
            norm,
            layers,
            cos,
            sin,
            context,
            last: QRows::default(),
        })
    }

    /// The context size the cache was allocated for.
    pub(crate) fn context(&self) -> usize {
        self.context
    }

    /// Runs `tokens` at positions `pos..pos + tokens.len()` (earlier positions must be in
    /// the cache) and returns the logits after the last one.
    #[cfg(test)]
    pub(crate) fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, String> {
        self.run(tokens, pos)?;
        Ok(self.logits(None))
    }

    /// The logits after the last token run by [`Llama::run`]: all of them, or with `only`
    /// just those tokens (the rest are −∞), which skips most of the output projection when
    /// a grammar allows few tokens. A token's logit is the same either way.
    pub(crate) fn logits(&self, only: Option<&[u32]>) -> Vec<f32> {
        let vocab = self.hyper.vocab;
        let Some(only) = only else {
            let mut logits = vec![0f32; vocab];
            self.output.matmul(&self.last, 1, &mut logits);
            return logits;
        };
        let mut logits = vec![f32::NEG_INFINITY; vocab];
        let kernel = Kernel::detect();
        let cols = self.output.cols;
        let (xq, xd) = self.last.row(0, cols);
        for &tok in only {
            let tok = tok as usize;
            if tok < vocab {
                let (wq, wd) = self.output.q.row(tok, cols);
                kernel.dot_rows::<1>(wq, wd, [xq], [xd], &mut logits[tok..], 1);
            }
        }
        logits
    }

    /// Runs `tokens` at positions `pos..pos + tokens.len()` (earlier positions must be in
    /// the cache); [`Llama::logits`] then gives the logits after the last one.
    pub(crate) fn run(&mut self, tokens: &[u32], pos: usize) -> Result<(), String> {
        let h = self.hyper.clone();
        let n = tokens.len();
        if n == 0 {
            return Err("no tokens to run".to_owned());
        }
        if pos + n > self.context {
            return Err(format!(
                "position {} is past the context of {}",
                pos + n,
                self.context
            ));
        }
        let dim = h.dim;
        let kv_dim = h.n_kv_head * h.head_dim;
        let mut x = vec![0f32; n * dim];
        for (t, &tok) in tokens.iter().enumerate() {
            let tok = tok as usize;
            if tok >= h.vocab {
                return Err(format!("token {tok} is outside the vocabulary"));
            }
            x[t * dim..(t + 1) * dim].copy_from_slice(&self.embed[tok * dim..(tok + 1) * dim]);
        }
        let mut buf = vec![0f32; n * dim];
        let mut q = vec![0f32; n * dim];
        let mut k = vec![0f32; n * kv_dim];
        let mut v = vec![0f32; n * kv_dim];
        let mut att = vec![0f32; n * dim];
        let mut gate = vec![0f32; n * h.ffn];
        let mut up = vec![0f32; n * h.ffn];
        let mut xq = QRows::default();
        for layer in &mut self.layers {
            rms_norm(&x, &layer.attn_norm, h.eps, dim, &mut buf);
            xq.quantize(&buf);
            layer.wq.matmul(&xq, n, &mut q);
            layer.wk.matmul(&xq, n, &mut k);
            layer.wv.matmul(&xq, n, &mut v);
            for t in 0..n {
                let p = pos + t;
                rope(
                    &mut q[t * dim..(t + 1) * dim],
                    &self.cos,
                    &self.sin,
                    p,
                    h.head_dim,
                );
                rope(
                    &mut k[t * kv_dim..(t + 1) * kv_dim],
                    &self.cos,
                    &self.sin,
                    p,
                    h.head_dim,
                );
            }
            layer.k_cache[pos * kv_dim..(pos + n) * kv_dim].copy_from_slice(&k);
            layer.v_cache[pos * kv_dim..(pos + n) * kv_dim].copy_from_slice(&v);
            attention(&h, &q, &layer.k_cache, &layer.v_cache, pos, &mut att);
            xq.quantize(&att);
            layer.wo.matmul(&xq, n, &mut buf);
            for (xi, bi) in x.iter_mut().zip(&buf) {
                *xi += bi;
            }
            rms_norm(&x, &layer.ffn_norm, h.eps, dim, &mut buf);
            xq.quantize(&buf);
            layer.w_gate.matmul(&xq, n, &mut gate);
            layer.w_up.matmul(&xq, n, &mut up);
            for (g, u) in gate.iter_mut().zip(&up) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
            xq.quantize(&gate);
            layer.w_down.matmul(&xq, n, &mut buf);
            for (xi, bi) in x.iter_mut().zip(&buf) {
                *xi += bi;
            }
        }
        let last = &x[(n - 1) * dim..];
        let mut normed = vec![0f32; dim];
        rms_norm(last, &self.norm, h.eps, dim, &mut normed);
        self.last.quantize(&normed);
        Ok(())
    }
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, dim: usize, out: &mut [f32]) {
    for (xr, or) in x.chunks(dim).zip(out.chunks_mut(dim)) {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / dim as f32;
        let scale = 1.0 / (ms + eps).sqrt();
        for ((o, xv), wv) in or.iter_mut().zip(xr).zip(w) {
            *o = xv * scale * wv;
        }
    }
}

/// Rotary embedding, GGML "normal" layout (adjacent pairs), for every head in `x`.
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32], pos: usize, head_dim: usize) {
    let half = head_dim / 2;
    let c = &cos[pos * half..(pos + 1) * half];
    let s = &sin[pos * half..(pos + 1) * half];
    for head in x.chunks_mut(head_dim) {
        for ((pair, ci), si) in head.chunks_exact_mut(2).zip(c).zip(s) {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * ci - b * si;
            pair[1] = a * si + b * ci;
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight accumulators so the compiler vectorises the reduction.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((s, xv), yv) in acc.iter_mut().zip(x).zip(y) {
            *s += xv * yv;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Causal grouped-query attention for the new positions in `q`, starting at `pos`.
fn attention(h: &Hyper, q: &[f32], k_cache: &[f32], v_cache: &[f32], pos: usize, out: &mut [f32]) {
    let hd = h.head_dim;
    let kv_dim = h.n_kv_head * hd;
    let group = h.n_head / h.n_kv_head;
    let scale = 1.0 / (hd as f32).sqrt();
    // One task per (position, head); each writes its own head_dim slice of `out`.
    out.par_chunks_mut(hd).enumerate().for_each(|(idx, o)| {
        let t = idx / h.n_head;
        let head = idx % h.n_head;
        let kvh = head / group;
        let qv = &q[t * h.n_head * hd + head * hd..][..hd];
        let upto = pos + t + 1;
        let mut scores = Vec::with_capacity(upto);
        let mut max = f32::NEG_INFINITY;
        for j in 0..upto {
            let kv = &k_cache[j * kv_dim + kvh * hd..][..hd];
            let s = dot(qv, kv) * scale;
            max = max.max(s);
            scores.push(s);
        }
        let mut sum = 0f32;
        for s in &mut scores {
            *s = (*s - max).exp();
            sum += *s;
        }
        o.fill(0.0);
        for (j, s) in scores.iter().enumerate() {
            let w = s / sum;
            let vv = &v_cache[j * kv_dim + kvh * hd..][..hd];
            for (oi, vi) in o.iter_mut().zip(vv) {
                *oi += w * vi;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmat_matmul_matches_f32_within_quantisation_error() {
        let (rows, cols, n) = (70, 64, 3);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let x: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 14.0)
            .collect();
        let m = QMat::from_f32(rows, cols, &w).unwrap();
        let mut out = vec![0f32; n * rows];
        let mut xq = QRows::default();
        xq.quantize(&x);
        m.matmul(&xq, n, &mut out);
        for t in 0..n {
            for r in 0..rows {
                let exact = dot(&w[r * cols..(r + 1) * cols], &x[t * cols..(t + 1) * cols]);
                let got = out[t * rows + r];
                assert!(
                    (exact - got).abs() < 0.05 * (1.0 + exact.abs()),
                    "{exact} vs {got}"
                );
            }
        }
    }

    #[test]
    fn batched_and_tiled_matmul_equal_row_by_row_exactly() {
        let (rows, cols, n) = (130, 96, 7);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let x: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 14.0)
            .collect();
        let m = QMat::from_f32(rows, cols, &w).unwrap();
        let mut all = QRows::default();
        all.quantize(&x);
        let mut batched = vec![0f32; n * rows];
        m.matmul(&all, n, &mut batched);
        for t in 0..n {
            let mut one = QRows::default();
            one.quantize(&x[t * cols..(t + 1) * cols]);
            let mut single = vec![0f32; rows];
            m.matmul(&one, 1, &mut single);
            assert_eq!(&batched[t * rows..(t + 1) * rows], &single[..], "token {t}");
        }
    }

    /// The real model: a prompt run in one batch gives the logits of running it token by
    /// token, and greedy decoding from either continues with the same tokens.
    #[test]
    fn prefill_matches_token_by_token_decoding() {
        let path = crate::fetch::ModelStore::default()
            .ensure(&crate::fetch::FetchOptions::default(), &mut |_| {})
            .unwrap();
        let mut reader = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
        let content = Content::read(&mut reader).unwrap();
        let tokenizer = crate::tokenizer::Tokenizer::from_gguf(&content).unwrap();
        let prompt = tokenizer
            .encode("<|im_start|>user\nName three colours of the rainbow.<|im_end|>\n<|im_start|>assistant\n")
            .unwrap();
        assert!(prompt.len() > 2 * TILE + 1, "{prompt:?}");
        let mut model = Llama::load(&content, &mut reader, 256).unwrap();
        let argmax = |l: &[f32]| {
            l.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i as u32)
                .unwrap()
        };
        let greedy = |model: &mut Llama, mut logits: Vec<f32>, mut pos: usize| {
            let mut out = Vec::new();
            for _ in 0..12 {
                let t = argmax(&logits);
                out.push(t);
                logits = model.forward(&[t], pos).unwrap();
                pos += 1;
            }
            out
        };
        let batched = model.forward(&prompt, 0).unwrap();
        let some: Vec<u32> = (0..batched.len() as u32).step_by(97).collect();
        let subset = model.logits(Some(&some));
        for (i, l) in subset.iter().enumerate() {
            if i % 97 == 0 {
                assert_eq!(*l, batched[i], "token {i}");
            } else {
                assert_eq!(*l, f32::NEG_INFINITY, "token {i}");
            }
        }
        let from_batched = greedy(&mut model, batched.clone(), prompt.len());
        let mut stepped = Vec::new();
        for (pos, &t) in prompt.iter().enumerate() {
            stepped = model.forward(&[t], pos).unwrap();
        }
        let max_diff = batched
            .iter()
            .zip(&stepped)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max_diff < 1e-3, "logits differ by up to {max_diff}");
        let from_stepped = greedy(&mut model, stepped, prompt.len());
        assert_eq!(from_batched, from_stepped);
        assert_eq!(
            tokenizer.decode(&from_batched).unwrap(),
            tokenizer.decode(&from_stepped).unwrap()
        );
    }

    #[test]
    fn rope_at_position_zero_is_identity() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        let (cos, sin) = (vec![1.0, 1.0], vec![0.0, 0.0]);
        rope(&mut x, &cos, &sin, 0, 4);
        assert_eq!(x, vec![1.0, 2.0, 3.0, 4.0]);
    }
}
