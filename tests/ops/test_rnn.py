"""RNN, GRU and LSTM against a plain float64 oracle written row by row
(sequence_lens, reverse and bidirectional runs, layout 1, peepholes, clip,
activation parameters), plus shape inference and error messages."""

from __future__ import annotations

import numpy as np
import pytest

from heli._errors import ShapeError
from heli.ir._builder import GraphBuilder
from heli.ir._ops import get_op
from heli.ir._types import DType, TensorType

F32 = DType.FLOAT32
rng = np.random.default_rng(7)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def oracle(kind, x, w, r, b, lens, h0, c0=None, p=None, *, direction="forward",
           clip=None, lbr=0, acts=None):
    """Y [seq, dirs, batch, hidden] and the final states, one row at a time."""
    x, w, r, b = (np.asarray(a, np.float64) for a in (x, w, r, b))
    steps, batch, _ = x.shape
    dirs, hidden = w.shape[0], r.shape[-1]
    y = np.zeros((steps, dirs, batch, hidden))
    hs, cs = np.zeros((dirs, batch, hidden)), np.zeros((dirs, batch, hidden))
    cut = (lambda v: np.clip(v, -clip, clip)) if clip is not None else (lambda v: v)
    f, g, hfn = acts or ((np.tanh,) * 3 if kind == "RNN" else (sigmoid, np.tanh, np.tanh))
    for d in range(dirs):
        backwards = direction == "reverse" or d == 1
        for row in range(batch):
            h = np.array(h0[d, row], np.float64)
            c = np.array(c0[d, row], np.float64) if c0 is not None else None
            order = range(lens[row])
            for t in (reversed(order) if backwards else order):
                xt = x[t, row]
                if kind == "RNN":
                    h = f(cut(w[d] @ xt + r[d] @ h + b[d, :hidden] + b[d, hidden:]))
                elif kind == "GRU":
                    wz, wr, wh = np.split(w[d], 3)
                    rz, rr, rh = np.split(r[d], 3)
                    bwz, bwr, bwh, brz, brr, brh = np.split(b[d], 6)
                    z = f(cut(wz @ xt + rz @ h + bwz + brz))
                    rs = f(cut(wr @ xt + rr @ h + bwr + brr))
                    if lbr:
                        cand = g(cut(wh @ xt + bwh + rs * (rh @ h + brh)))
                    else:
                        cand = g(cut(wh @ xt + rh @ (rs * h) + brh + bwh))
                    h = (1 - z) * cand + z * h
                else:
                    gates = w[d] @ xt + r[d] @ h + b[d, :4 * hidden] + b[d, 4 * hidden:]
                    gi, go, gf, gc = np.split(gates, 4)
                    pi, po, pf = np.split(p[d], 3) if p is not None else (0, 0, 0)
                    i = f(cut(gi + pi * c))
                    fg = f(cut(gf + pf * c))
                    c = fg * c + i * g(cut(gc))
                    o = f(cut(go + po * c))
                    h = o * hfn(c)
                y[t, d, row] = h
            hs[d, row] = h if lens[row] else 0
            if c is not None:
                cs[d, row] = c if lens[row] else 0
    return y, hs, cs


def run(kind, *inputs, **attrs):
    opdef = get_op(kind)
    return opdef.reference(*inputs, **opdef.resolve_attrs(attrs))


def data(kind, dirs, steps=5, batch=3, inputs=4, hidden=3):
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[kind]
    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    return (f32(steps, batch, inputs), f32(dirs, gates * hidden, inputs) * 0.6,
            f32(dirs, gates * hidden, hidden) * 0.6, f32(dirs, 2 * gates * hidden),
            f32(dirs, batch, hidden), f32(dirs, batch, hidden), f32(dirs, 3 * hidden))


def close(got, want):
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_against_oracle_with_sequence_lens(kind, direction):
    dirs = 2 if direction == "bidirectional" else 1
    x, w, r, b, h0, c0, p = data(kind, dirs)
    lens = np.array([5, 2, 0], np.int32)
    extra = (h0, c0, p) if kind == "LSTM" else (h0,)
    got = run(kind, x, w, r, b, lens, *extra, direction=direction, hidden_size=3)
    want = oracle(kind, x, w, r, b, lens, h0, c0 if kind == "LSTM" else None,
                  p if kind == "LSTM" else None, direction=direction)
    for g, wnt in zip(got, want, strict=False):
        close(g, wnt)


def test_gru_linear_before_reset_and_clip():
    x, w, r, b, h0, _, _ = data("GRU", 1)
    lens = np.full(3, 5)
    for lbr in (0, 1):
        y, yh = run("GRU", x, w, r, b, None, h0, linear_before_reset=lbr, clip=0.5)
        want = oracle("GRU", x, w, r, b, lens, h0, lbr=lbr, clip=0.5)
        close(y, want[0])
        close(yh, want[1])


def test_lstm_layout_1_is_batch_first():
    x, w, r, b, h0, c0, p = data("LSTM", 2)
    y, yh, yc = run("LSTM", np.swapaxes(x, 0, 1), w, r, b, None, np.swapaxes(h0, 0, 1),
                    np.swapaxes(c0, 0, 1), p, direction="bidirectional", layout=1)
    want = oracle("LSTM", x, w, r, b, np.full(3, 5), h0, c0, p, direction="bidirectional")
    close(y, np.transpose(want[0], (2, 0, 1, 3)))
    close(yh, np.swapaxes(want[1], 0, 1))
    close(yc, np.swapaxes(want[2], 0, 1))


def test_activation_parameters_are_consumed_in_order():
    x, w, r, b, h0, c0, _ = data("LSTM", 1)
    got = run("LSTM", x, w, r, b, None, h0, c0, activations=["HardSigmoid", "LeakyRelu",
              "ScaledTanh"], activation_alpha=[0.3, 0.1, 2.0], activation_beta=[0.4, 0.5])
    acts = (lambda v: np.clip(0.3 * v + 0.4, 0, 1), lambda v: np.where(v >= 0, v, 0.1 * v),
            lambda v: 2.0 * np.tanh(0.5 * v))
    want = oracle("LSTM", x, w, r, b, np.full(3, 5), h0, c0, acts=acts)
    for g, wnt in zip(got, want, strict=True):
        close(g, wnt)


def test_bad_inputs_raise_clear_errors():
    x, w, r, b, h0, _, _ = data("RNN", 1)
    with pytest.raises(ValueError, match=r"R must have shape \[1, 3, 3\]"):
        run("RNN", x, w, r[:, :, :2], hidden_size=3)
    with pytest.raises(ValueError, match="sequence_lens"):
        run("RNN", x, w, r, b, np.array([6, 1, 1], np.int32))
    with pytest.raises(ValueError, match="activations has 1 entries; 2 are needed"):
        run("GRU", *data("GRU", 1)[:3], activations=["Tanh"])
    with pytest.raises(ValueError, match="'Swish' is not one of"):
        run("RNN", x, w, r, activations=["Swish"])


def infer(kind, types, num_outputs, **attrs):
    builder = GraphBuilder()
    values = [builder.add_input(f"in{i}", t) for i, t in enumerate(types)]
    return [o.type for o in builder.add_node(kind, values, attrs, num_outputs=num_outputs)]


def test_inference_keeps_symbols_and_checks_weights():
    x = TensorType(F32, ("seq", "batch", 4))
    w, r = TensorType(F32, (2, 12, 4)), TensorType(F32, (2, 12, 3))
    y, yh, yc = infer("LSTM", [x, w, r], 3, direction="bidirectional")
    assert y.shape == ("seq", 2, "batch", 3)
    assert yh.shape == yc.shape == (2, "batch", 3)
    (y,) = infer("LSTM", [TensorType(F32, ("batch", "seq", 4)), w, r], 1,
                 direction="bidirectional", layout=1)
    assert y.shape == ("batch", "seq", 2, 3)
    with pytest.raises(ShapeError, match="W has 2 direction"):
        infer("LSTM", [x, w, r], 1)
    with pytest.raises(ShapeError, match="hidden_size is 5"):
        infer("LSTM", [x, w, r], 1, hidden_size=5, direction="bidirectional")
    with pytest.raises(ShapeError, match="direction must be one of"):
        infer("GRU", [x, w, r], 1, direction="sideways")
