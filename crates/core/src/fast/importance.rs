//! Fast CPU path of the `importance` family: threads (rayon) and loops the
//! compiler can vectorise, in exactly the order the reference specifies, so
//! results are bit-identical to [`crate::reference::importance::Reference`].
//! Work goes in blocks; each block's input pages are given back to the OS
//! once consumed, so resident memory stays bounded on mapped checkpoints.

use rayon::prelude::*;

use crate::reference::importance::{
    abs, add_square, is_nonfinite, square, sum_term, tree_reduce, Importance, TensorStats,
    TilePartial, LANES, TILE,
};
use crate::{Result, TensorView};

/// Elements handled between two page releases.
const BLOCK_ELEMS: usize = 1 << 24;

pub use super::FastCpu;

fn release_elems(w: &TensorView, range: std::ops::Range<usize>, size: usize) {
    w.release(range.start * size..range.end * size);
}

/// Tile reduction laid out lane-major so it vectorises; same order as the
/// reference's `reduce_tile`.
fn reduce_tile(x: &[f32]) -> TilePartial {
    let mut sum = [0.0f32; LANES];
    let mut sq = [0.0f32; LANES];
    let mut lo = [f32::MAX; LANES];
    let mut hi = [f32::MIN; LANES];
    let mut zeros = 0u32;
    let mut nonfinite = 0u32;
    for row in x.chunks(LANES) {
        for (t, &v) in row.iter().enumerate() {
            sum[t] += sum_term(v);
            sq[t] = add_square(sq[t], v);
            let bad = is_nonfinite(v);
            nonfinite += bad as u32;
            zeros += (v.to_bits() & 0x7fff_ffff == 0) as u32;
            let m = if bad { f32::MAX } else { v };
            let n = if bad { f32::MIN } else { v };
            lo[t] = lo[t].min(m);
            hi[t] = hi[t].max(n);
        }
    }
    TilePartial {
        sum: tree_reduce(&mut sum),
        sum_sq: tree_reduce(&mut sq),
        min: lo.iter().copied().fold(f32::MAX, f32::min),
        max: hi.iter().copied().fold(f32::MIN, f32::max),
        zeros,
        nonfinite,
    }
}

impl FastCpu {
    fn elementwise(&self, w: &TensorView, f: impl Fn(f32) -> f32 + Sync) -> Result<Vec<f32>> {
        let size = w.float_size()?;
        let mut out = vec![0.0f32; w.numel()];
        out.par_chunks_mut(1 << 16)
            .enumerate()
            .try_for_each(|(i, chunk)| {
                let start = i << 16;
                w.decode_into(start..start + chunk.len(), chunk)?;
                chunk.iter_mut().for_each(|x| *x = f(*x));
                Ok::<_, crate::Error>(())
            })?;
        release_elems(w, 0..out.len(), size);
        Ok(out)
    }
}

impl Importance for FastCpu {
    fn backend(&self) -> &'static str {
        "cpu"
    }

    fn abs(&self, w: &TensorView) -> Result<Vec<f32>> {
        self.elementwise(w, abs)
    }

    fn square(&self, w: &TensorView) -> Result<Vec<f32>> {
        self.elementwise(w, square)
    }

    fn row_sumsq(&self, w: &TensorView) -> Result<Vec<f32>> {
        let size = w.float_size()?;
        let (rows, cols) = w.matrix_dims();
        let mut out = vec![0.0f32; rows];
        if cols == 0 {
            return Ok(out);
        }
        let rows_per_block = (BLOCK_ELEMS / cols).max(1);
        for (b, block) in out.chunks_mut(rows_per_block).enumerate() {
            let row0 = b * rows_per_block;
            block.par_iter_mut().enumerate().try_for_each_init(
                || vec![0.0f32; cols],
                |buf, (i, o)| {
                    let r = row0 + i;
                    w.decode_into(r * cols..(r + 1) * cols, buf)?;
                    let mut lanes = [0.0f32; LANES];
                    for chunk in buf.chunks(LANES) {
                        for (l, &v) in lanes.iter_mut().zip(chunk) {
                            *l = add_square(*l, v);
                        }
                    }
                    *o = tree_reduce(&mut lanes);
                    Ok::<_, crate::Error>(())
                },
            )?;
            release_elems(w, row0 * cols..(row0 + block.len()) * cols, size);
        }
        Ok(out)
    }

    fn col_sumsq(&self, w: &TensorView) -> Result<Vec<f32>> {
        let size = w.float_size()?;
        let (rows, cols) = w.matrix_dims();
        // acc[p] holds lane p's running sums for every column.
        let mut acc = vec![vec![0.0f32; cols]; LANES.min(rows.max(1))];
        let rows_per_block = ((BLOCK_ELEMS / cols.max(1)) / LANES).max(1) * LANES;
        let mut row0 = 0;
        while row0 < rows {
            let row1 = (row0 + rows_per_block).min(rows);
            acc.par_iter_mut().enumerate().try_for_each_init(
                || vec![0.0f32; cols],
                |buf, (p, lane)| {
                    let mut r = row0 + p;
                    while r < row1 {
                        w.decode_into(r * cols..(r + 1) * cols, buf)?;
                        for (a, &v) in lane.iter_mut().zip(buf.iter()) {
                            *a = add_square(*a, v);
                        }
                        r += LANES;
                    }
                    Ok::<_, crate::Error>(())
                },
            )?;
            release_elems(w, row0 * cols..row1 * cols, size);
            row0 = row1;
        }
        Ok((0..cols)
            .into_par_iter()
            .map(|j| {
                let mut lanes = [0.0f32; LANES];
                for (p, lane) in acc.iter().enumerate() {
                    lanes[p] = lane[j];
                }
                tree_reduce(&mut lanes)
            })
            .collect())
    }

    fn stats(&self, w: &TensorView) -> Result<TensorStats> {
        let size = w.float_size()?;
        let n = w.numel();
        let tiles = n.div_ceil(TILE);
        let tiles_per_block = BLOCK_ELEMS / TILE;
        let mut partials = Vec::with_capacity(tiles);
        let mut t0 = 0;
        while t0 < tiles {
            let t1 = (t0 + tiles_per_block).min(tiles);
            let block: Vec<TilePartial> = (t0..t1)
                .into_par_iter()
                .map_init(
                    || vec![0.0f32; TILE],
                    |buf, t| {
                        let r = t * TILE..((t + 1) * TILE).min(n);
                        let len = r.len();
                        w.decode_into(r, &mut buf[..len])?;
                        Ok(reduce_tile(&buf[..len]))
                    },
                )
                .collect::<Result<_>>()?;
            partials.extend(block);
            release_elems(w, t0 * TILE..(t1 * TILE).min(n), size);
            t0 = t1;
        }
        Ok(TensorStats::from_tiles(n as u64, partials))
    }
}
