"""Conv and ConvTranspose round each float32 output once (bias included).

A flat image (the white page of an OCR input) under weights whose taps nearly
cancel is where float32 accumulation loses tens of ulps, identically on every
pixel; deep networks then add those errors up coherently.  The oracle is the
exact sum in float64 (products of float32 values are exact there), rounded
once to float32.
"""

from __future__ import annotations

import numpy as np
import pytest

from heli.ir._ops import get_op


def _run(name, *inputs, **attrs):
    opdef = get_op(name)
    return opdef.reference(*inputs, **opdef.resolve_attrs(attrs))


def _cancelling_case(rng, shape_w, taps_axes):
    """A nearly flat float32 image and weights whose taps almost sum to zero."""
    x = (7.0 + 1e-3 * rng.standard_normal((1, 16, 12, 12))).astype(np.float32)
    w = rng.standard_normal(shape_w)
    w -= w.mean(axis=taps_axes, keepdims=True)  # taps cancel on a flat image
    return x, w.astype(np.float32), rng.standard_normal(shape_w[0]).astype(np.float32)


def _exact_conv(x, w, b, group, pad):
    """Float64 convolution (stride 1) by einsum over sliding windows."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))
    n, c, oh, ow = win.shape[:4]
    win = win.reshape(n, group, c // group, oh, ow, k, k)
    wg = w.astype(np.float64).reshape(group, -1, c // group, k, k)
    y = np.einsum("ngchwij,gmcij->ngmhw", win, wg).reshape(n, -1, oh, ow)
    return y + b.astype(np.float64).reshape(-1, 1, 1)


def _ulps(got, exact):
    exact32 = exact.astype(np.float32)
    return np.abs(got.astype(np.float64) - exact) / np.spacing(np.abs(exact32)).astype(np.float64)


@pytest.mark.parametrize("group, shape_w, taps", [
    (1, (8, 16, 3, 3), (1, 2, 3)),    # dense (im2col + matmul)
    (1, (8, 16, 1, 1), (1, 2, 3)),    # 1x1 (plain matmul)
    (16, (16, 1, 3, 3), (1, 2, 3)),   # depthwise (tap by tap)
], ids=["dense", "pointwise", "depthwise"])
def test_conv_is_correctly_rounded_under_cancellation(group, shape_w, taps):
    rng = np.random.default_rng(7)
    x, w, b = _cancelling_case(rng, shape_w, taps)
    pad = shape_w[-1] // 2
    got = _run("Conv", x, w, b, group=group, pads=[pad] * 4)
    exact = _exact_conv(x, w, b, group, pad)
    assert got.dtype == np.float32
    assert _ulps(got, exact).max() <= 0.5 + 1e-6


def test_conv_transpose_is_correctly_rounded():
    rng = np.random.default_rng(8)
    x = (3.0 + 1e-3 * rng.standard_normal((1, 16, 6, 6))).astype(np.float32)
    w = rng.standard_normal((16, 4, 3, 3))
    w -= w.mean(axis=0, keepdims=True)
    w = w.astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    got = _run("ConvTranspose", x, w, b, strides=[2, 2], pads=[1, 1, 1, 1])
    # Scatter each input pixel's contribution, in float64, then crop the pads.
    full = np.zeros((1, 4, 13, 13))
    for i, j in np.ndindex(6, 6):
        full[0, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3] += np.einsum(
            "c,cmij->mij", x[0, :, i, j].astype(np.float64), w.astype(np.float64))
    exact = full[:, :, 1:-1, 1:-1] + b.astype(np.float64).reshape(-1, 1, 1)
    assert got.dtype == np.float32
    assert _ulps(got, exact).max() <= 0.5 + 1e-6
