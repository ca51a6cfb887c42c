//! An MLP's buffers on a training device and its forward, backward and
//! Adam steps there (the loop in `train` drives them).

use super::Mlp;
use crate::train::device::{AdamStep, Device};
use crate::Result;

/// One layer's buffers on a device: parameters, Adam moments, gradients
/// and the activations of a batch of up to `batch` rows.
pub(super) struct DeviceLayer<B> {
    pub(super) inputs: usize,
    pub(super) outputs: usize,
    pub(super) w: B,
    pub(super) b: B,
    pub(super) dw: B,
    pub(super) db: B,
    pub(super) mw: B,
    pub(super) vw: B,
    pub(super) mb: B,
    pub(super) vb: B,
    /// Pre-activation [batch, outputs] (the logits for the last layer).
    pub(super) z: B,
    /// ReLU(z) (hidden layers).
    pub(super) h: B,
    /// Gradient of the loss in z.
    pub(super) dz: B,
    /// Gradient of the loss in h (hidden layers).
    pub(super) dh: B,
}

/// An MLP resident on a device.
pub(super) struct DeviceMlp<B> {
    pub(super) x: B,
    pub(super) layers: Vec<DeviceLayer<B>>,
}

impl<B> DeviceMlp<B> {
    pub(super) fn new<D: Device<Buf = B>>(dev: &D, mlp: &Mlp, batch: usize) -> Result<Self> {
        let mut layers = Vec::with_capacity(mlp.layers.len());
        for l in &mlp.layers {
            let (nw, no) = (l.weight.len(), l.outputs);
            layers.push(DeviceLayer {
                inputs: l.inputs,
                outputs: no,
                w: dev.upload(&l.weight)?,
                b: dev.upload(&l.bias)?,
                dw: dev.zeros(nw)?,
                db: dev.zeros(no)?,
                mw: dev.zeros(nw)?,
                vw: dev.zeros(nw)?,
                mb: dev.zeros(no)?,
                vb: dev.zeros(no)?,
                z: dev.zeros(batch * no)?,
                h: dev.zeros(batch * no)?,
                dz: dev.zeros(batch * no)?,
                dh: dev.zeros(batch * no)?,
            });
        }
        Ok(DeviceMlp {
            x: dev.zeros(batch * mlp.inputs())?,
            layers,
        })
    }

    /// z_l = h_{l−1}·W_lᵀ + b_l, h_l = ReLU(z_l) for `n` rows.
    pub(super) fn forward<D: Device<Buf = B>>(&mut self, dev: &D, n: usize) -> Result<()> {
        let last = self.layers.len() - 1;
        for l in 0..=last {
            let (before, rest) = self.layers.split_at_mut(l);
            let cur = &mut rest[0];
            let input = before.last().map_or(&self.x, |p| &p.h);
            dev.matmul(
                input,
                &cur.w,
                &mut cur.z,
                n,
                cur.inputs,
                cur.outputs,
                false,
                true,
            )?;
            dev.add_bias(&mut cur.z, &cur.b, n, cur.outputs)?;
            if l < last {
                dev.relu(&cur.z, &mut cur.h, n * cur.outputs)?;
            }
        }
        Ok(())
    }

    /// From the last layer's dz: every dW, db, and the dz of the layers
    /// below.
    pub(super) fn backward<D: Device<Buf = B>>(&mut self, dev: &D, n: usize) -> Result<()> {
        for l in (0..self.layers.len()).rev() {
            let (before, rest) = self.layers.split_at_mut(l);
            let cur = &mut rest[0];
            let input = before.last().map_or(&self.x, |p| &p.h);
            dev.matmul(
                &cur.dz,
                input,
                &mut cur.dw,
                cur.outputs,
                n,
                cur.inputs,
                true,
                false,
            )?;
            dev.bias_grad(&cur.dz, &mut cur.db, n, cur.outputs)?;
            if let Some(prev) = before.last_mut() {
                dev.matmul(
                    &cur.dz,
                    &cur.w,
                    &mut prev.dh,
                    n,
                    cur.outputs,
                    cur.inputs,
                    false,
                    false,
                )?;
                dev.relu_backward(&prev.z, &prev.dh, &mut prev.dz, n * prev.outputs)?;
            }
        }
        Ok(())
    }

    pub(super) fn adam<D: Device<Buf = B>>(&mut self, dev: &D, s: AdamStep) -> Result<()> {
        for l in &mut self.layers {
            let nw = l.inputs * l.outputs;
            dev.adam(&mut l.w, &l.dw, &mut l.mw, &mut l.vw, None, nw, s)?;
            dev.adam(&mut l.b, &l.db, &mut l.mb, &mut l.vb, None, l.outputs, s)?;
        }
        Ok(())
    }

    pub(super) fn download_into<D: Device<Buf = B>>(&self, dev: &D, mlp: &mut Mlp) -> Result<()> {
        for (d, l) in self.layers.iter().zip(&mut mlp.layers) {
            let w = dev.download(&d.w)?;
            let b = dev.download(&d.b)?;
            let (nw, nb) = (l.weight.len(), l.bias.len());
            l.weight.copy_from_slice(&w[..nw]);
            l.bias.copy_from_slice(&b[..nb]);
        }
        Ok(())
    }
}
