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
use candle_core::quantized::k_quants::{BlockQ8_0, GgmlType};
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

/// A weight matrix `rows x cols` stored as Q8_0 blocks, row-major.
struct QMat {
    rows: usize,
    cols: usize,
    blocks: Vec<BlockQ8_0>,
}

impl QMat {
    fn from_f32(rows: usize, cols: usize, data: &[f32]) -> Result<Self, String> {
        if !cols.is_multiple_of(QK) || data.len() != rows * cols {
            return Err(format!(
                "a {rows}x{cols} weight cannot be stored in blocks of {QK}"
            ));
        }
        let per_row = cols / QK;
        let mut blocks = vec![BlockQ8_0::zeros(); rows * per_row];
        blocks
            .par_chunks_mut(per_row)
            .zip(data.par_chunks(cols))
            .for_each(|(dst, src)| BlockQ8_0::from_float(src, dst));
        Ok(Self { rows, cols, blocks })
    }

    /// `out[t][r] = sum_c w[r][c] * x[t][c]` for `n` input rows already quantised to Q8_0.
    fn matmul(&self, xq: &[BlockQ8_0], n: usize, out: &mut [f32]) {
        let per_row = self.cols / QK;
        let rows = self.rows;
        // Each task owns a run of weight rows and writes its column of every output row:
        // gather per task, then scatter (outputs are small next to the weights).
        const CHUNK: usize = 64;
        let parts: Vec<(usize, Vec<f32>)> = self
            .blocks
            .par_chunks(per_row * CHUNK)
            .enumerate()
            .map(|(ci, wchunk)| {
                let nrows = wchunk.len() / per_row;
                let mut local = vec![0f32; nrows * n];
                for r in 0..nrows {
                    let w = &wchunk[r * per_row..(r + 1) * per_row];
                    for t in 0..n {
                        let x = &xq[t * per_row..(t + 1) * per_row];
                        local[t * nrows + r] = BlockQ8_0::vec_dot(self.cols, w, x);
                    }
                }
                (ci * CHUNK, local)
            })
            .collect();
        for (start, local) in parts {
            let nrows = local.len() / n.max(1);
            for t in 0..n {
                out[t * rows + start..t * rows + start + nrows]
                    .copy_from_slice(&local[t * nrows..(t + 1) * nrows]);
            }
        }
    }
}

fn quantize_rows(x: &[f32], cols: usize) -> Vec<BlockQ8_0> {
    let per_row = cols / QK;
    let n = x.len() / cols;
    let mut blocks = vec![BlockQ8_0::zeros(); n * per_row];
    for (dst, src) in blocks.chunks_mut(per_row).zip(x.chunks(cols)) {
        BlockQ8_0::from_float(src, dst);
    }
    blocks
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
        })
    }

    /// The context size the cache was allocated for.
    pub(crate) fn context(&self) -> usize {
        self.context
    }

    /// Runs `tokens` at positions `pos..pos + tokens.len()` (earlier positions must be in
    /// the cache) and returns the logits after the last one.
    pub(crate) fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, String> {
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
        for layer in &mut self.layers {
            rms_norm(&x, &layer.attn_norm, h.eps, dim, &mut buf);
            let xq = quantize_rows(&buf, dim);
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
            let aq = quantize_rows(&att, dim);
            layer.wo.matmul(&aq, n, &mut buf);
            for (xi, bi) in x.iter_mut().zip(&buf) {
                *xi += bi;
            }
            rms_norm(&x, &layer.ffn_norm, h.eps, dim, &mut buf);
            let xq = quantize_rows(&buf, dim);
            layer.w_gate.matmul(&xq, n, &mut gate);
            layer.w_up.matmul(&xq, n, &mut up);
            for (g, u) in gate.iter_mut().zip(&up) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
            let gq = quantize_rows(&gate, h.ffn);
            layer.w_down.matmul(&gq, n, &mut buf);
            for (xi, bi) in x.iter_mut().zip(&buf) {
                *xi += bi;
            }
        }
        let last = &x[(n - 1) * dim..];
        let mut normed = vec![0f32; dim];
        rms_norm(last, &self.norm, h.eps, dim, &mut normed);
        let lq = quantize_rows(&normed, dim);
        let mut logits = vec![0f32; h.vocab];
        self.output.matmul(&lq, 1, &mut logits);
        Ok(logits)
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
        m.matmul(&quantize_rows(&x, cols), n, &mut out);
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
    fn rope_at_position_zero_is_identity() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        let (cos, sin) = (vec![1.0, 1.0], vec![0.0, 0.0]);
        rope(&mut x, &cos, &sin, 0, 4);
        assert_eq!(x, vec![1.0, 2.0, 3.0, 4.0]);
    }
}
