"""rnn ops: RNN, GRU and LSTM (one layer, forward/reverse/bidirectional).

Shared layout (``layout=0``): X is [seq, batch, input], W is
[directions, gates*hidden, input], R is [directions, gates*hidden, hidden],
B is [directions, 2*gates*hidden] (the W biases, then the R biases), and the
states are [directions, batch, hidden]; Y is [seq, directions, batch, hidden].
``layout=1`` puts batch first in X, Y and the states.

The input projection of every time step is one matrix product up front; the
recurrence loops over time steps with the batch and all gates vectorized.
Rows past their ``sequence_lens`` keep their state and give zeros in Y; a
reverse direction runs each row backwards from its own last step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from heli.ir._ops import Attr, InferContext, op
from heli.ir._types import TensorType, Type
from heli.ops._infer import tensor_input, unknown_dim

Activation = Callable[[np.ndarray], np.ndarray]

_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}


# -- activations --------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp of a non-positive number never overflows.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


# name -> (function of (x, alpha, beta), takes alpha, takes beta, default alpha, default beta).
# Alphas and betas are consumed in order by the activations that take them;
# the defaults are ONNX Runtime's.
_ACTIVATIONS: dict[str, tuple[Callable[..., np.ndarray], bool, bool, float, float]] = {
    "relu": (lambda x, a, b: np.maximum(x, 0), False, False, 0.0, 0.0),
    "tanh": (lambda x, a, b: np.tanh(x), False, False, 0.0, 0.0),
    "sigmoid": (lambda x, a, b: _sigmoid(x), False, False, 0.0, 0.0),
    "affine": (lambda x, a, b: a * x + b, True, True, 0.0, 0.0),
    "leakyrelu": (lambda x, a, b: np.where(x >= 0, x, a * x), True, False, 0.01, 0.0),
    "thresholdedrelu": (lambda x, a, b: np.where(x > a, x, 0), True, False, 0.0, 0.0),
    "scaledtanh": (lambda x, a, b: a * np.tanh(b * x), True, True, 0.0, 0.0),
    "hardsigmoid": (lambda x, a, b: np.clip(a * x + b, 0, 1), True, True, 0.2, 0.5),
    "elu": (lambda x, a, b: np.where(x >= 0, x, a * np.expm1(np.minimum(x, 0))), True, False,
            1.0, 0.0),
    "softsign": (lambda x, a, b: x / (1 + np.abs(x)), False, False, 0.0, 0.0),
    "softplus": (lambda x, a, b: np.logaddexp(x.dtype.type(0), x), False, False, 0.0, 0.0),
}


def _activations(names: Sequence[str] | None, alphas: Sequence[float] | None,
                 betas: Sequence[float] | None, defaults: Sequence[str], directions: int,
                 dtype: np.dtype) -> list[list[Activation]]:
    """The activation functions of each direction."""
    names = list(names) if names else list(defaults)
    per_direction = len(defaults)
    if directions == 2 and len(names) == per_direction:
        names = names * 2  # one list given for both directions
    if len(names) != per_direction * directions:
        raise ValueError(
            f"activations has {len(names)} entries; {per_direction * directions} are needed "
            f"({per_direction} per direction, {directions} direction(s))."
        )
    alpha_iter, beta_iter = iter(alphas or ()), iter(betas or ())
    functions: list[Activation] = []
    for name in names:
        entry = _ACTIVATIONS.get(name.lower())
        if entry is None:
            raise ValueError(f"The activation {name!r} is not one of {sorted(_ACTIVATIONS)!r}.")
        fn, takes_alpha, takes_beta, alpha, beta = entry
        alpha = next(alpha_iter, alpha) if takes_alpha else alpha
        beta = next(beta_iter, beta) if takes_beta else beta
        a, b = dtype.type(alpha), dtype.type(beta)
        functions.append(lambda x, fn=fn, a=a, b=b: fn(x, a, b).astype(x.dtype, copy=False))
    return [functions[d * per_direction:(d + 1) * per_direction] for d in range(directions)]


# -- type inference -----------------------------------------------------------


def _rnn_infer(gates: int) -> Callable[[InferContext], list[Type | None]]:
    def infer(ctx: InferContext) -> list[Type | None]:
        direction, layout = ctx.attrs["direction"], ctx.attrs["layout"]
        if direction not in _DIRECTIONS:
            raise ctx.error(f"direction must be one of {sorted(_DIRECTIONS)!r}, "
                            f"not {direction!r}.")
        if layout not in (0, 1):
            raise ctx.error(f"layout must be 0 or 1, not {layout!r}.")
        dirs = _DIRECTIONS[direction]
        x, w, r = (tensor_input(ctx, i) for i in range(3))
        if x is None:
            return [None] * ctx.num_outputs
        if x.shape is None:
            return [TensorType(x.dtype, None)] * ctx.num_outputs
        if len(x.shape) != 3:
            raise ctx.error(f"X must have rank 3, but it has shape {list(x.shape)!r}.")
        hidden = _hidden_size(ctx, gates, w, r)
        for name, t in (("W", w), ("R", r)):
            if t is not None and t.shape is not None:
                if len(t.shape) != 3:
                    raise ctx.error(f"{name} must have rank 3, but it has shape {list(t.shape)!r}.")
                if isinstance(t.shape[0], int) and t.shape[0] != dirs:
                    raise ctx.error(f"{name} has {t.shape[0]} direction(s) but direction is "
                                    f"{direction!r}.")
        steps, batch = (x.shape[0], x.shape[1]) if layout == 0 else (x.shape[1], x.shape[0])
        if layout == 0:
            y, state = (steps, dirs, batch, hidden), (dirs, batch, hidden)
        else:
            y, state = (batch, steps, dirs, hidden), (batch, dirs, hidden)
        types = [TensorType(x.dtype, y)] + [TensorType(x.dtype, state)] * 2
        return types[:ctx.num_outputs]

    return infer


def _hidden_size(ctx: InferContext, gates: int, w: TensorType | None,
                 r: TensorType | None) -> int | str:
    hidden = ctx.attrs["hidden_size"]
    if r is not None and r.shape is not None and len(r.shape) == 3 and isinstance(r.shape[2],
                                                                                    int):
        if hidden is not None and hidden != r.shape[2]:
            raise ctx.error(f"hidden_size is {hidden} but R has shape {list(r.shape)!r}.")
        hidden = r.shape[2]
    if hidden is None and w is not None and w.shape is not None and len(w.shape) == 3:
        rows = w.shape[1]
        hidden = rows // gates if isinstance(rows, int) else None
    if hidden is None:
        return unknown_dim()
    if w is not None and w.shape is not None and len(w.shape) == 3 and isinstance(
            w.shape[1], int) and w.shape[1] != gates * hidden:
        raise ctx.error(f"W has shape {list(w.shape)!r}, but {gates} gates of hidden size "
                        f"{hidden} need {gates * hidden} rows.")
    return hidden


# -- the shared driver ----------------------------------------------------------

Step = Callable[[np.ndarray, tuple[np.ndarray, ...]], tuple[np.ndarray, ...]]


class _Rnn:
    """Inputs of one RNN/GRU/LSTM node, checked and in the seq-first layout."""

    def __init__(self, x, w, r, b, sequence_lens, states, *, gates: int, hidden_size,
                 direction: str, layout: int) -> None:
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be one of {sorted(_DIRECTIONS)!r}, "
                             f"not {direction!r}.")
        if x.ndim != 3:
            raise ValueError(f"X must have rank 3, but it has shape {list(x.shape)!r}.")
        self.out_dtype = x.dtype
        # Half-precision inputs compute in float32.
        self.dtype = np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)
        self.layout = layout
        self.x = (x if layout == 0 else np.swapaxes(x, 0, 1)).astype(self.dtype, copy=False)
        self.steps, self.batch, inputs = self.x.shape
        self.directions = _DIRECTIONS[direction]
        self.reverse = [direction == "reverse", True][:self.directions]
        hidden = int(hidden_size) if hidden_size is not None else r.shape[-1]
        self.hidden = hidden
        dirs, rows = self.directions, gates * hidden
        self.w = self._checked(w, "W", (dirs, rows, inputs))
        self.r = self._checked(r, "R", (dirs, rows, hidden))
        self.b = (self._checked(b, "B", (dirs, 2 * rows)) if b is not None
                  else np.zeros((dirs, 2 * rows), self.dtype))
        self.states = [self._state(s, name) for s, name in states]
        self.lens = self._lens(sequence_lens)

    def _checked(self, array: np.ndarray, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if array.shape != shape:
            raise ValueError(f"{name} must have shape {list(shape)!r}, but it has shape "
                             f"{list(array.shape)!r}.")
        return array.astype(self.dtype, copy=False)

    def _state(self, state: np.ndarray | None, name: str) -> np.ndarray:
        if state is None:
            return np.zeros((self.directions, self.batch, self.hidden), self.dtype)
        if self.layout == 1:
            state = np.swapaxes(state, 0, 1)
        return self._checked(state, name, (self.directions, self.batch, self.hidden))

    def _lens(self, sequence_lens: np.ndarray | None) -> np.ndarray | None:
        if sequence_lens is None:
            return None
        lens = np.asarray(sequence_lens).astype(np.int64).reshape(-1)
        if lens.shape != (self.batch,):
            raise ValueError(f"sequence_lens must have shape [{self.batch}], but it has shape "
                             f"{list(np.shape(sequence_lens))!r}.")
        if ((lens < 0) | (lens > self.steps)).any():
            raise ValueError(f"sequence_lens {lens.tolist()!r} must lie in [0, {self.steps}].")
        return None if (lens == self.steps).all() else lens

    def projected(self, d: int, bias: np.ndarray) -> np.ndarray:
        """X times W[d] transposed, plus ``bias``, for every step: [seq, batch, rows]."""
        return np.matmul(self.x, self.w[d].T) + bias

    def run(self, d: int, xw: np.ndarray, step: Step, state: tuple[np.ndarray, ...]
            ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """Run direction ``d``: Y [seq, batch, hidden] and the final states."""
        y = np.zeros((self.steps, self.batch, self.hidden), self.dtype)
        reverse, lens = self.reverse[d], self.lens
        if lens is None:
            for s in range(self.steps):
                t = self.steps - 1 - s if reverse else s
                state = step(xw[t], state)
                y[t] = state[0]
            return y, state
        rows = np.arange(self.batch)
        for s in range(int(lens.max(initial=0))):
            valid = s < lens
            t = np.clip(lens - 1 - s, 0, None) if reverse else np.full(self.batch, s)
            new = step(xw[t, rows], state)
            state = tuple(np.where(valid[:, None], n, o) for n, o in zip(new, state, strict=True))
            y[t[valid], rows[valid]] = state[0][valid]
        # As ONNX Runtime does, a row with no steps ends with zero states.
        empty = (lens == 0)[:, None]
        return y, tuple(np.where(empty, 0, v).astype(self.dtype, copy=False) for v in state)

    def outputs(self, ys: list[np.ndarray], finals: list[tuple[np.ndarray, ...]]
                ) -> tuple[np.ndarray, ...]:
        y = np.stack(ys, axis=1)  # [seq, directions, batch, hidden]
        states = [np.stack([f[i] for f in finals]) for i in range(len(finals[0]))]
        if self.layout == 1:
            y = np.transpose(y, (2, 0, 1, 3))
            states = [np.swapaxes(s, 0, 1) for s in states]
        return tuple(np.ascontiguousarray(a).astype(self.out_dtype, copy=False)
                     for a in (y, *states))


def _clipper(clip: float | None, dtype: np.dtype) -> Callable[[np.ndarray], np.ndarray]:
    """Clipping of gate pre-activations to [-clip, clip] (none without ``clip``)."""
    if clip is None:
        return lambda v: v
    bound = dtype.type(clip)
    return lambda v: np.clip(v, -bound, bound)


_COMMON_ATTRS = {
    "activation_alpha": Attr.FLOATS(None),
    "activation_beta": Attr.FLOATS(None),
    "activations": Attr.STRINGS(None),
    "clip": Attr.FLOAT(None),
    "direction": Attr.STRING("forward"),
    "hidden_size": Attr.INT(None),
    "layout": Attr.INT(0),
}


# -- RNN ----------------------------------------------------------------------


@op("RNN", infer=_rnn_infer(1), inputs=(3, 6), outputs=(0, 2), attrs=_COMMON_ATTRS)
def rnn(x, w, r, b=None, sequence_lens=None, initial_h=None, *, activation_alpha,
        activation_beta, activations, clip, direction, hidden_size, layout):
    """Simple RNN: H = f(X W^T + H R^T + Wb + Rb), f = Tanh by default."""
    net = _Rnn(x, w, r, b, sequence_lens, [(initial_h, "initial_h")], gates=1,
               hidden_size=hidden_size, direction=direction, layout=layout)
    acts = _activations(activations, activation_alpha, activation_beta, ["Tanh"],
                        net.directions, net.dtype)
    clipped = _clipper(clip, net.dtype)
    ys, finals = [], []
    for d in range(net.directions):
        bias = net.b[d, :net.hidden] + net.b[d, net.hidden:]
        r_t, (f,) = net.r[d].T, acts[d]

        def step(x_t, state, r_t=r_t, f=f):
            return (f(clipped(x_t + state[0] @ r_t)),)

        y, final = net.run(d, net.projected(d, bias), step, (net.states[0][d],))
        ys.append(y)
        finals.append(final)
    return net.outputs(ys, finals)


# -- GRU ----------------------------------------------------------------------


@op("GRU", infer=_rnn_infer(3), inputs=(3, 6), outputs=(0, 2),
    attrs={**_COMMON_ATTRS, "linear_before_reset": Attr.INT(0)})
def gru(x, w, r, b=None, sequence_lens=None, initial_h=None, *, activation_alpha,
        activation_beta, activations, clip, direction, hidden_size, layout,
        linear_before_reset):
    """GRU with gates z (update), r (reset), h (candidate), in that order in W/R/B:
    z = f(..), r = f(..), h~ = g(X Wh + (r * H) Rh + Rbh + Wbh) (or, with
    linear_before_reset, g(X Wh + Wbh + r * (H Rh + Rbh))), H = (1 - z) h~ + z H.
    f = Sigmoid and g = Tanh by default."""
    net = _Rnn(x, w, r, b, sequence_lens, [(initial_h, "initial_h")], gates=3,
               hidden_size=hidden_size, direction=direction, layout=layout)
    acts = _activations(activations, activation_alpha, activation_beta, ["Sigmoid", "Tanh"],
                        net.directions, net.dtype)
    clipped = _clipper(clip, net.dtype)
    h = net.hidden
    one = net.dtype.type(1)
    ys, finals = [], []
    for d in range(net.directions):
        wb, rb = net.b[d, :3 * h], net.b[d, 3 * h:]
        # z and r add both biases up front; the candidate's R bias depends on the mode.
        bias = wb + np.concatenate([rb[:2 * h], np.zeros(h, net.dtype)])
        r_zr, r_h, rb_h = net.r[d, :2 * h].T, net.r[d, 2 * h:].T, rb[2 * h:]
        f, g = acts[d]

        def step(x_t, state, r_zr=r_zr, r_h=r_h, rb_h=rb_h, f=f, g=g):
            prev = state[0]
            zr = f(clipped(x_t[:, :2 * h] + prev @ r_zr))
            z, reset = zr[:, :h], zr[:, h:]
            if linear_before_reset:
                cand = g(clipped(x_t[:, 2 * h:] + reset * (prev @ r_h + rb_h)))
            else:
                cand = g(clipped(x_t[:, 2 * h:] + (reset * prev) @ r_h + rb_h))
            return ((one - z) * cand + z * prev,)

        y, final = net.run(d, net.projected(d, bias), step, (net.states[0][d],))
        ys.append(y)
        finals.append(final)
    return net.outputs(ys, finals)


# -- LSTM ---------------------------------------------------------------------


@op("LSTM", infer=_rnn_infer(4), inputs=(3, 8), outputs=(0, 3),
    attrs={**_COMMON_ATTRS, "input_forget": Attr.INT(0)})
def lstm(x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None, *,
         activation_alpha, activation_beta, activations, clip, direction, hidden_size, layout,
         input_forget):
    """LSTM with gates i, o, f, c (in that order in W/R/B) and peepholes P = [Pi, Po, Pf]:
    i = f(.. + Pi C), f = f(.. + Pf C) (or 1 - i with input_forget), c~ = g(..),
    C' = f C + i c~, o = f(.. + Po C'), H = o h(C').  f = Sigmoid, g = h = Tanh by default."""
    net = _Rnn(x, w, r, b, sequence_lens, [(initial_h, "initial_h"), (initial_c, "initial_c")],
               gates=4, hidden_size=hidden_size, direction=direction, layout=layout)
    acts = _activations(activations, activation_alpha, activation_beta,
                        ["Sigmoid", "Tanh", "Tanh"], net.directions, net.dtype)
    clipped = _clipper(clip, net.dtype)
    h = net.hidden
    peep = (net._checked(p, "P", (net.directions, 3 * h)) if p is not None
            else np.zeros((net.directions, 3 * h), net.dtype))
    one = net.dtype.type(1)
    ys, finals = [], []
    for d in range(net.directions):
        bias = net.b[d, :4 * h] + net.b[d, 4 * h:]
        r_t, (p_i, p_o, p_f) = net.r[d].T, np.split(peep[d], 3)
        f, g, hf = acts[d]

        def step(x_t, state, r_t=r_t, p_i=p_i, p_o=p_o, p_f=p_f, f=f, g=g, hf=hf):
            prev_h, prev_c = state
            gates = x_t + prev_h @ r_t
            i = f(clipped(gates[:, :h] + p_i * prev_c))
            if input_forget:
                forget = one - i
            else:
                forget = f(clipped(gates[:, 2 * h:3 * h] + p_f * prev_c))
            cell = forget * prev_c + i * g(clipped(gates[:, 3 * h:]))
            o = f(clipped(gates[:, h:2 * h] + p_o * cell))
            return o * hf(cell), cell

        y, final = net.run(d, net.projected(d, bias), step,
                           (net.states[0][d], net.states[1][d]))
        ys.append(y)
        finals.append(final)
    return net.outputs(ys, finals)
