//! The block operations of shears-core's `BlockOps` on the GPU
//! (`shaders/block.wgsl`, on the training family's bind layout).

use shears_core::reference::forward::AttnShape;
use shears_core::train::block_device::{triangle_len, BlockOps};

use super::{check_len, GpuBuf, GpuTrain, TrainParams};
use crate::source;

/// The attention shape as the shader reads it (m sequences of n tokens,
/// k = head_dim, u4 heads, u5 KV heads, f0 = 1/√d).
fn attn_params(s: &AttnShape) -> TrainParams {
    TrainParams {
        m: s.seqs as u32,
        k: s.head_dim as u32,
        n: s.seq_len as u32,
        u4: s.heads as u32,
        u5: s.kv_heads as u32,
        f: [1.0 / (s.head_dim as f32).sqrt(), 0.0, 0.0, 0.0, 0.0, 0.0],
        ..Default::default()
    }
}

impl GpuTrain<'_> {
    /// One dispatch of a `block.wgsl` entry point over `n` invocations.
    fn block_op(
        &self,
        entry_point: &'static str,
        ins: [Option<&GpuBuf>; 3],
        outs: [Option<&GpuBuf>; 3],
        params: TrainParams,
        n: usize,
    ) -> shears_core::Result<()> {
        self.run_module(
            "block",
            source::BLOCK,
            entry_point,
            ins,
            outs,
            params,
            self.grid(n),
        )
    }
}

impl BlockOps for GpuTrain<'_> {
    fn rms_norm(
        &self,
        x: &GpuBuf,
        w: &GpuBuf,
        y: &mut GpuBuf,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> shears_core::Result<()> {
        check_len("rms_norm x", x, rows * cols)?;
        check_len("rms_norm w", w, cols)?;
        check_len("rms_norm y", y, rows * cols)?;
        let p = TrainParams {
            m: rows as u32,
            n: cols as u32,
            f: [eps, 0.0, 0.0, 0.0, 0.0, 0.0],
            ..Default::default()
        };
        self.block_op(
            "rms_norm",
            [Some(x), Some(w), None],
            [Some(y), None, None],
            p,
            rows,
        )
    }

    fn rms_norm_backward(
        &self,
        x: &GpuBuf,
        w: &GpuBuf,
        dy: &GpuBuf,
        dx: &mut GpuBuf,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> shears_core::Result<()> {
        check_len("rms_norm_backward x", x, rows * cols)?;
        check_len("rms_norm_backward dy", dy, rows * cols)?;
        check_len("rms_norm_backward dx", dx, rows * cols)?;
        let p = TrainParams {
            m: rows as u32,
            n: cols as u32,
            f: [eps, 0.0, 0.0, 0.0, 0.0, 0.0],
            ..Default::default()
        };
        self.block_op(
            "rms_norm_backward",
            [Some(x), Some(w), Some(dy)],
            [Some(dx), None, None],
            p,
            rows,
        )
    }

    fn rope(
        &self,
        x: &GpuBuf,
        cos: &GpuBuf,
        sin: &GpuBuf,
        y: &mut GpuBuf,
        rows: usize,
        width: usize,
        half: usize,
        seq_len: usize,
        inverse: bool,
    ) -> shears_core::Result<()> {
        check_len("rope x", x, rows * width)?;
        check_len("rope y", y, rows * width)?;
        check_len("rope table", cos, seq_len * half)?;
        let p = TrainParams {
            m: rows as u32,
            k: half as u32,
            n: width as u32,
            flags: u32::from(inverse),
            u4: seq_len as u32,
            ..Default::default()
        };
        self.block_op(
            "rope",
            [Some(x), Some(cos), Some(sin)],
            [Some(y), None, None],
            p,
            rows * width / 2,
        )
    }

    fn attention(
        &self,
        q: &GpuBuf,
        k: &GpuBuf,
        v: &GpuBuf,
        p: &mut GpuBuf,
        a: &mut GpuBuf,
        s: AttnShape,
    ) -> shears_core::Result<()> {
        let tokens = s.seqs * s.seq_len;
        check_len("attention q", q, tokens * s.heads * s.head_dim)?;
        check_len("attention k", k, tokens * s.kv_heads * s.head_dim)?;
        check_len("attention v", v, tokens * s.kv_heads * s.head_dim)?;
        check_len("attention p", p, triangle_len(&s))?;
        check_len("attention a", a, tokens * s.heads * s.head_dim)?;
        self.block_op(
            "attention",
            [Some(q), Some(k), Some(v)],
            [Some(p), Some(a), None],
            attn_params(&s),
            tokens * s.heads,
        )
    }

    fn attention_backward(
        &self,
        q: &GpuBuf,
        k: &GpuBuf,
        v: &GpuBuf,
        p: &GpuBuf,
        da: &GpuBuf,
        dq: &mut GpuBuf,
        dk: &mut GpuBuf,
        dv: &mut GpuBuf,
        s: AttnShape,
    ) -> shears_core::Result<()> {
        let tokens = s.seqs * s.seq_len;
        let (qw, kw) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
        for (what, b, n) in [
            ("q", q, tokens * qw),
            ("k", k, tokens * kw),
            ("v", v, tokens * kw),
            ("p", p, triangle_len(&s)),
            ("da", da, tokens * qw),
        ] {
            check_len(&format!("attention_backward {what}"), b, n)?;
        }
        for (what, b, n) in [
            ("dq", &*dq, tokens * qw),
            ("dk", &*dk, tokens * kw),
            ("dv", &*dv, tokens * kw),
        ] {
            check_len(&format!("attention_backward {what}"), b, n)?;
        }
        let params = attn_params(&s);
        let ds = self.storage(triangle_len(&s));
        let queries = tokens * s.heads;
        let keys = tokens * s.kv_heads;
        self.block_op(
            "attention_ds",
            [Some(p), Some(da), Some(v)],
            [Some(&ds), None, None],
            params,
            queries,
        )?;
        self.block_op(
            "attention_dq",
            [Some(&ds), Some(k), None],
            [Some(dq), None, None],
            params,
            queries,
        )?;
        self.block_op(
            "attention_dkv",
            [Some(&ds), Some(q), None],
            [Some(dk), None, None],
            params,
            keys,
        )?;
        self.block_op(
            "attention_dkv",
            [Some(p), Some(da), None],
            [Some(dv), None, None],
            params,
            keys,
        )
    }

    fn silu_mul(
        &self,
        gate: &GpuBuf,
        up: &GpuBuf,
        m: &mut GpuBuf,
        n: usize,
    ) -> shears_core::Result<()> {
        check_len("silu_mul gate", gate, n)?;
        check_len("silu_mul up", up, n)?;
        check_len("silu_mul m", m, n)?;
        let p = TrainParams {
            m: n as u32,
            ..Default::default()
        };
        self.block_op(
            "silu_mul",
            [Some(gate), Some(up), None],
            [Some(m), None, None],
            p,
            n,
        )
    }

    fn silu_mul_backward(
        &self,
        gate: &GpuBuf,
        up: &GpuBuf,
        dm: &GpuBuf,
        dgate: &mut GpuBuf,
        dup: &mut GpuBuf,
        n: usize,
    ) -> shears_core::Result<()> {
        for (what, b) in [
            ("gate", gate),
            ("up", up),
            ("dm", dm),
            ("dgate", &*dgate),
            ("dup", &*dup),
        ] {
            check_len(&format!("silu_mul_backward {what}"), b, n)?;
        }
        let p = TrainParams {
            m: n as u32,
            ..Default::default()
        };
        self.block_op(
            "silu_mul_backward",
            [Some(gate), Some(up), Some(dm)],
            [Some(dgate), Some(dup), None],
            p,
            n,
        )
    }

    fn add(&self, a: &GpuBuf, b: &GpuBuf, c: &mut GpuBuf, n: usize) -> shears_core::Result<()> {
        check_len("add a", a, n)?;
        check_len("add b", b, n)?;
        check_len("add c", c, n)?;
        let p = TrainParams {
            m: n as u32,
            ..Default::default()
        };
        self.block_op("add", [Some(a), Some(b), None], [Some(c), None, None], p, n)
    }
}
