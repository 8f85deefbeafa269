"""Convolutions for the thin ends of a coupling network, written so oneDNN spends its time in GEMMs.

A coupling network maps a few channels to many (hidden, e.g. 256) and back to a few. To or from
1-4 channels, oneDNN's direct conv2d kernels run at 20-50 GFLOP/s on a 2-core AVX-512 CPU, where a
GEMM of the same work reaches 80-140 (the ceiling is about 200; ``benchmarks/bench_train.py``
prints it). ``model.CouplingNetwork`` uses these functions for such thin couplings:

- ``conv_from_few``: k x k conv from few input channels. Forward and filter gradient stay conv2d
  (fast for this shape); the input gradient, which oneDNN computes slowly, is one GEMM onto
  ``taps * C_in`` channels followed by a shifted sum of the taps.
- ``conv_to_few``: k x k conv to few output channels. Forward is one GEMM onto ``taps * C_out``
  channels and a shifted sum; both gradients are GEMMs against the shifted stack of the incoming
  gradient.

Both compute the 'SAME' (zero-padded, stride 1) cross-correlation of ``tf.nn.conv2d`` with odd
kernel sizes in float32: the same products, summed in another order, so they agree with it to
float32 rounding and can replace it in a flow without changing its maths. (Non-finite inputs
give non-finite outputs in both, though not always the same ones: the one-hot shift turns an
infinity's neighbours into NaN.) Layouts are NHWC and kernels HWIO, as ``tf.nn.conv2d``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _check_kernel(kernel) -> tuple:
    kh, kw = int(kernel.shape[0]), int(kernel.shape[1])
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"'SAME' tap shifting needs odd kernel sizes, got {kh}x{kw}")
    return kh, kw


def _shifted_sum(taps, kh: int, kw: int, gather: bool):
    """Sum of per-tap maps, each shifted to where its tap lands.

    taps: (B, H, W, kh*kw, C), tap-major in (row, column) order.
    gather=True:  out[p] = sum_t taps[p + d_t, t]   (a conv's forward: each output reads its taps)
    gather=False: out[q] = sum_t taps[q - d_t, t]   (a conv's input gradient: each input scatters)
    where d_t = (i - kh//2, j - kw//2) is tap t's offset. Returns (B, H, W, C).

    The shifts are one depthwise conv with a one-hot kernel (channel (t, c) reads only tap t's
    offset), about twice as fast as kh*kw strided slices of the 5-D tensor on this CPU.
    """
    channels = taps.shape[-1]
    shape = tf.shape(taps)
    one_hot = np.zeros((kh, kw, kh * kw * channels, 1), np.float32)
    for i in range(kh):
        for j in range(kw):
            t = i * kw + j
            row, col = (i, j) if gather else (kh - 1 - i, kw - 1 - j)
            one_hot[row, col, t * channels:(t + 1) * channels, 0] = 1.0
    flat = tf.reshape(taps, [shape[0], shape[1], shape[2], kh * kw * channels])
    shifted = tf.nn.depthwise_conv2d(flat, tf.constant(one_hot, taps.dtype), [1, 1, 1, 1], "SAME")
    return tf.reduce_sum(tf.reshape(shifted, shape), axis=3)


def _shifted_stack(g, kh: int, kw: int):
    """(B, H, W, C) -> (B*H*W, kh*kw*C): for each tap t, g[p - d_t] (zero outside), tap-major.

    Row p of the result is what tap t's weights must be correlated with to get a conv's gradients.
    """
    height, width = tf.shape(g)[1], tf.shape(g)[2]
    padded = tf.pad(g, [[0, 0], [kh // 2, kh // 2], [kw // 2, kw // 2], [0, 0]])
    parts = [padded[:, kh - 1 - i:kh - 1 - i + height, kw - 1 - j:kw - 1 - j + width, :]
             for i in range(kh) for j in range(kw)]
    stacked = tf.concat(parts, axis=-1)
    return tf.reshape(stacked, [-1, kh * kw * g.shape[-1]])


@tf.custom_gradient
def conv_from_few(x, kernel):
    """'SAME' stride-1 conv2d of x (B, H, W, C_in) with kernel (kh, kw, C_in, C_out), C_in small.

    Returns (B, H, W, C_out), the same values as ``tf.nn.conv2d(x, kernel, 1, 'SAME')``.
    """
    kh, kw = _check_kernel(kernel)
    out = tf.nn.conv2d(x, kernel, strides=1, padding="SAME")

    def grad(g):
        c_in, c_out = kernel.shape[2], kernel.shape[3]
        flat_g = tf.reshape(g, [-1, c_out])
        per_tap = tf.matmul(flat_g, tf.reshape(kernel, [kh * kw * c_in, c_out]), transpose_b=True)
        shape = tf.shape(x)
        per_tap = tf.reshape(per_tap, [shape[0], shape[1], shape[2], kh * kw, c_in])
        dx = _shifted_sum(per_tap, kh, kw, gather=False)
        dkernel = tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=tf.shape(kernel), out_backprop=g, strides=[1, 1, 1, 1],
            padding="SAME")
        return dx, dkernel

    return out, grad


@tf.custom_gradient
def conv_to_few(h, kernel):
    """'SAME' stride-1 conv2d of h (B, H, W, C_in) with kernel (kh, kw, C_in, C_out), C_out small.

    Returns (B, H, W, C_out), the same values as ``tf.nn.conv2d(h, kernel, 1, 'SAME')``.
    """
    kh, kw = _check_kernel(kernel)
    c_in, c_out = kernel.shape[2], kernel.shape[3]
    # (C_in, kh*kw*C_out), tap-major columns: one GEMM gives every tap's contribution at once.
    weights = tf.reshape(tf.transpose(kernel, [2, 0, 1, 3]), [c_in, kh * kw * c_out])
    shape = tf.shape(h)
    flat_h = tf.reshape(h, [-1, c_in])
    per_tap = tf.reshape(tf.matmul(flat_h, weights),
                         [shape[0], shape[1], shape[2], kh * kw, c_out])
    out = _shifted_sum(per_tap, kh, kw, gather=True)

    def grad(g):
        stacked = _shifted_stack(g, kh, kw)
        dh = tf.reshape(tf.matmul(stacked, weights, transpose_b=True), shape)
        dweights = tf.matmul(flat_h, stacked, transpose_a=True)
        dkernel = tf.transpose(tf.reshape(dweights, [c_in, kh, kw, c_out]), [1, 2, 0, 3])
        return dh, dkernel

    return out, grad
