"""Attention ops: Attention, RotaryEmbedding, LinearAttention, CausalConvWithState,
FlexAttention (ai.onnx.preview) and SwiGLU.

Low-precision inputs (float16, bfloat16) are computed in float32 and rounded
back where ONNX stores an intermediate in the input type; softmax always
subtracts the row maximum and runs in float32 (or the precision
``softmax_precision`` asks for, float64 for float64 inputs).
"""

from __future__ import annotations

import math

import numpy as np

from heli.ir._ops import Attr, InferContext, op
from heli.ir._types import Dim, DType, TensorType, Type
from heli.ops._infer import input_dtype, input_shape, same_as_input, unknown_dim

# ONNX TensorProto codes accepted by softmax_precision.
_PRECISIONS = {1: np.float32, 10: np.float16, 11: np.float64, 16: DType.BFLOAT16.np}


def _work_dtype(dtype: np.dtype) -> np.dtype:
    """float64 stays float64; every other float type is computed in float32."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def _softmax_dtype(precision: int | None, dtype: np.dtype) -> np.dtype:
    if precision is None:
        return _work_dtype(dtype)
    if precision not in _PRECISIONS:
        raise ValueError(f"softmax_precision {precision!r} is not one of 1 (float), 10 (float16), "
                         "11 (double), 16 (bfloat16).")
    return np.dtype(_PRECISIONS[precision])


def _softmax(x: np.ndarray) -> np.ndarray:
    """Max-subtracted softmax over the last axis; a row that is all -inf gives zeros."""
    peak = np.max(x, axis=-1, keepdims=True)
    peak = np.where(np.isneginf(peak), 0, peak).astype(x.dtype)
    e = np.exp(x - peak)
    total = np.sum(e, axis=-1, keepdims=True)
    return np.where(total > 0, e / np.where(total > 0, total, 1), 0).astype(x.dtype)


def _dim_div(d: Dim, k: int | None) -> Dim:
    if isinstance(d, int) and k:
        return d // k
    return unknown_dim()


def _dim_mul(d: Dim, k: Dim) -> Dim:
    if isinstance(d, int) and isinstance(k, int):
        return d * k
    return unknown_dim()


# --------------------------------------------------------------------------- Attention


def _attention_infer(ctx: InferContext) -> list[Type | None]:
    a = ctx.attrs
    q, k, v = (input_shape(ctx, i) for i in range(3))
    t1, t2 = input_dtype(ctx, 0), input_dtype(ctx, 2)
    if a["qk_matmul_output_mode"] not in (0, 1, 2, 3):
        raise ctx.error(f"qk_matmul_output_mode {a['qk_matmul_output_mode']!r} is not one of "
                        "0, 1, 2, 3.")
    if a["softmax_precision"] is not None and a["softmax_precision"] not in _PRECISIONS:
        raise ctx.error(f"softmax_precision {a['softmax_precision']!r} is not one of 1, 10, 11, "
                        "16.")
    if ctx.has_input(4) != ctx.has_input(5):
        raise ctx.error("past_key and past_value must be given together.")
    if t1 is None or t2 is None or q is None or k is None or v is None:
        unknown = [TensorType(t, None) if t else None for t in (t1, t1, t2, t1)]
        return unknown[: ctx.num_outputs]
    for name, shape in (("Q", q), ("K", k), ("V", v)):
        if len(shape) not in (3, 4):
            raise ctx.error(f"{name} must be 3-D or 4-D, got shape {list(shape)!r}.")
    hq, hkv = a["q_num_heads"], a["kv_num_heads"]
    if len(q) == 3 and not hq:
        raise ctx.error("3-D Q needs the q_num_heads attribute.")
    if (len(k) == 3 or len(v) == 3) and not hkv:
        raise ctx.error("3-D K and V need the kv_num_heads attribute.")
    batch, sq = q[0], (q[1] if len(q) == 3 else q[2])
    heads_q = hq if len(q) == 3 else q[1]
    heads_kv = hkv if len(k) == 3 else k[1]
    skv = k[1] if len(k) == 3 else k[2]
    dk = _dim_div(k[2], hkv) if len(k) == 3 else k[3]
    dv = _dim_div(v[2], hkv) if len(v) == 3 else v[3]
    past = input_shape(ctx, 4) if ctx.has_input(4) else None
    if past is not None and len(past) != 4:
        raise ctx.error(f"past_key must be 4-D, got shape {list(past)!r}.")
    if ctx.has_input(4):
        total = _dim_add(past[2], skv) if past is not None else unknown_dim()
    else:
        total = skv
    y = (batch, sq, _dim_mul(heads_q, dv)) if len(q) == 3 else (batch, heads_q, sq, dv)
    types = [
        TensorType(t1, y),
        TensorType(t1, (batch, heads_kv, total, dk)),
        TensorType(t2, (batch, heads_kv, total, dv)),
        TensorType(t1, (batch, heads_q, sq, total)),
    ]
    return types[: ctx.num_outputs]


def _dim_add(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if a == 0:
        return b
    return unknown_dim()


def _to_4d(x: np.ndarray, heads: int | None, name: str) -> np.ndarray:
    """(B, S, H*D) -> (B, H, S, D); 4-D input is returned unchanged."""
    if x.ndim == 4:
        return x
    if x.ndim != 3:
        raise ValueError(f"Attention input {name} must be 3-D or 4-D, got shape "
                         f"{list(x.shape)!r}.")
    if not heads or x.shape[2] % heads:
        raise ValueError(f"Attention input {name} of shape {list(x.shape)!r} cannot be split "
                         f"into {heads!r} heads.")
    b, s, hidden = x.shape
    return x.reshape(b, s, heads, hidden // heads).transpose(0, 2, 1, 3)


def _allowed_keys(sq: int, total: int, *, is_causal: bool, offset: np.ndarray,
                  nonpad: np.ndarray | None, left: int, right: int) -> np.ndarray | None:
    """Structural mask (batch or 1, 1, sq, total): causal frontier, window and padding."""
    if not is_causal and nonpad is None and left < 0 and right < 0:
        return None
    i = np.arange(sq)[None, :, None]
    j = np.arange(total)[None, None, :]
    pos = i + offset.reshape(-1, 1, 1)  # absolute position of each query
    rows = max(offset.size, 1 if nonpad is None else nonpad.size)
    allowed = np.ones((rows, sq, total), dtype=bool)
    if is_causal:
        allowed &= j <= pos
    if left >= 0:
        allowed &= j >= pos - left
    if right >= 0:
        allowed &= j <= pos + right
    if nonpad is not None:
        allowed &= j < nonpad.reshape(-1, 1, 1)
    return allowed[:, None]


def _mask_bias(mask: np.ndarray, total: int, dtype: np.dtype) -> np.ndarray:
    """An attn_mask as an additive bias; a short last dim is padded as disallowed."""
    if mask.ndim > 4:
        raise ValueError(f"attn_mask of shape {list(mask.shape)!r} has more than 4 dims.")
    if mask.ndim == 0:
        mask = mask.reshape(1)
    if mask.shape[-1] > total:
        raise ValueError(f"attn_mask's last dim {mask.shape[-1]} is longer than the "
                         f"{total} keys.")
    if mask.dtype == np.bool_:
        bias = np.where(mask, 0, -np.inf).astype(dtype)
    else:
        bias = mask.astype(dtype)
    if bias.shape[-1] < total and bias.shape[-1] != 1:
        pad = [(0, 0)] * (bias.ndim - 1) + [(0, total - bias.shape[-1])]
        bias = np.pad(bias, pad, constant_values=-np.inf)
    return bias


_ATTENTION_ATTRS = {
    "is_causal": Attr.INT(0),
    "kv_num_heads": Attr.INT(None),
    "q_num_heads": Attr.INT(None),
    "qk_matmul_output_mode": Attr.INT(0),
    "scale": Attr.FLOAT(None),
    "softcap": Attr.FLOAT(0.0),
    "softmax_precision": Attr.INT(None),
    "left_window_size": Attr.INT(-1),
    "right_window_size": Attr.INT(-1),
}


@op("Attention", infer=_attention_infer, attrs=_ATTENTION_ATTRS, inputs=(3, 7), outputs=(1, 4))
def attention(q, k, v, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None, *,
              is_causal, kv_num_heads, q_num_heads, qk_matmul_output_mode, scale, softcap,
              softmax_precision, left_window_size, right_window_size):
    """Scaled dot-product attention with masks, KV cache, GQA, softcap and windows."""
    if qk_matmul_output_mode not in (0, 1, 2, 3):
        raise ValueError(f"qk_matmul_output_mode {qk_matmul_output_mode!r} is not one of 0, 1, "
                         "2, 3.")
    t1, t2 = q.dtype, v.dtype
    q_was_3d = q.ndim == 3
    q4 = _to_4d(q, q_num_heads, "Q")
    k4, v4 = _to_4d(k, kv_num_heads, "K"), _to_4d(v, kv_num_heads, "V")
    if (past_key is None) != (past_value is None):
        raise ValueError("Attention needs past_key and past_value together.")
    past_len = 0
    if past_key is not None:
        past_len = past_key.shape[2]
        k4 = np.concatenate([past_key.astype(k4.dtype), k4], axis=2)
        v4 = np.concatenate([past_value.astype(v4.dtype), v4], axis=2)
    batch, hq, sq, d = q4.shape
    hkv, total = k4.shape[1], k4.shape[2]
    if hkv == 0 or hq % hkv:
        raise ValueError(f"Attention q_num_heads {hq} is not a multiple of kv_num_heads {hkv}.")
    if k4.shape[3] != d:
        raise ValueError(f"Attention Q head size {d} differs from K head size {k4.shape[3]}.")
    if k4.shape[0] != batch or v4.shape[:3] != k4.shape[:3]:  # numpy would broadcast them
        raise ValueError(f"Attention Q, K and V (as 4-D: {list(q4.shape)!r}, {list(k4.shape)!r}, "
                         f"{list(v4.shape)!r}) disagree on the batch size, the number of KV "
                         "heads or the key length.")
    group = hq // hkv
    work = _work_dtype(t1)
    scale = 1 / math.sqrt(d) if scale is None else scale

    # As ONNX defines it, Q and K are each scaled by sqrt(scale) in T1 (which keeps
    # low-precision products in range); the product is accumulated in float32 and
    # held in T1.  Query heads that share a KV head are grouped instead of repeating K.
    root = np.asarray(math.sqrt(scale)).astype(t1).astype(work)
    qs = (q4.astype(work) * root).astype(t1).astype(work)
    ks = (k4.astype(work) * root).astype(t1).astype(work)
    qg = qs.reshape(batch, hkv, group, sq, d)
    kt = ks[:, :, None].swapaxes(-1, -2)
    scores = np.matmul(qg, kt).reshape(batch, hq, sq, total).astype(t1).astype(work)
    qk_out = scores if qk_matmul_output_mode == 0 else None
    if softcap and softcap > 0:
        cap = work.type(softcap)
        scores = (cap * np.tanh(scores / cap)).astype(t1).astype(work)
    if qk_matmul_output_mode == 1:
        qk_out = scores

    offset = np.zeros(1, dtype=np.int64)
    nonpad = None
    if nonpad_kv_seqlen is not None:
        nonpad = np.asarray(nonpad_kv_seqlen, dtype=np.int64).reshape(-1)
        if nonpad.size not in (1, batch):
            raise ValueError(f"nonpad_kv_seqlen has {nonpad.size} values for a batch of "
                             f"{batch}.")
    # offset: how many valid keys precede the query block (bottom-right alignment)
    if past_key is not None:
        offset = np.array([past_len], dtype=np.int64)
    elif nonpad is not None:
        offset = nonpad - sq
    allowed = _allowed_keys(sq, total, is_causal=bool(is_causal), offset=offset,
                            nonpad=nonpad, left=left_window_size, right=right_window_size)
    if attn_mask is not None:
        bias = _mask_bias(np.asarray(attn_mask), total, work)
        try:
            grows = np.broadcast_shapes(bias.shape, scores.shape) != scores.shape
        except ValueError:
            grows = True
        if grows:
            raise ValueError(f"attn_mask of shape {list(np.shape(attn_mask))!r} does not "
                             f"broadcast to the attention scores {list(scores.shape)!r}.")
        scores = scores + bias
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf).astype(work)
    scores = scores.astype(t1)
    if qk_matmul_output_mode == 2:
        qk_out = scores

    # Without softmax_precision the softmax runs in T1, as the spec defines it.
    precision = t1 if softmax_precision is None else _softmax_dtype(softmax_precision, t1)
    probs = _softmax(scores.astype(precision)).astype(t1)
    if qk_matmul_output_mode == 3:
        qk_out = probs
    pg = probs.astype(work).reshape(batch, hkv, group, sq, total)
    y = np.matmul(pg, v4.astype(work)[:, :, None]).reshape(batch, hq, sq, -1)
    if q_was_3d:
        y = y.transpose(0, 2, 1, 3).reshape(batch, sq, -1)
    return (y.astype(t1), k4.astype(t1), v4.astype(t2), qk_out.astype(t1))


# --------------------------------------------------------------------------- RotaryEmbedding


def _rotary_infer(ctx: InferContext) -> list[Type | None]:
    shape = input_shape(ctx, 0)
    if shape is not None:
        if len(shape) not in (3, 4):
            raise ctx.error(f"the input must be 3-D or 4-D, got shape {list(shape)!r}.")
        if len(shape) == 3 and not ctx.attrs["num_heads"]:
            raise ctx.error("a 3-D input needs the num_heads attribute.")
    return same_as_input(0)(ctx)


@op("RotaryEmbedding", infer=_rotary_infer, inputs=(3, 4),
    attrs={"interleaved": Attr.INT(0), "num_heads": Attr.INT(None),
           "rotary_embedding_dim": Attr.INT(0)})
def rotary_embedding(x, cos_cache, sin_cache, position_ids=None, *, interleaved, num_heads,
                     rotary_embedding_dim):
    """Rotate (a leading part of) each head's features by position-dependent angles."""
    dtype = x.dtype
    if x.ndim == 4:
        xs = x.transpose(0, 2, 1, 3)  # (B, S, H, D)
    elif x.ndim == 3:
        if not num_heads or x.shape[2] % num_heads:
            raise ValueError(f"RotaryEmbedding input of shape {list(x.shape)!r} needs a "
                             f"num_heads that divides {x.shape[2]}, got {num_heads!r}.")
        xs = x.reshape(x.shape[0], x.shape[1], num_heads, -1)
    else:
        raise ValueError(f"RotaryEmbedding input must be 3-D or 4-D, got shape "
                         f"{list(x.shape)!r}.")
    head = xs.shape[3]
    rot = rotary_embedding_dim or head
    if rot > head or rot % 2:
        raise ValueError(f"rotary_embedding_dim {rot} must be even and at most the head size "
                         f"{head}.")
    if position_ids is not None:
        cos, sin = cos_cache[position_ids], sin_cache[position_ids]
    else:
        cos, sin = cos_cache, sin_cache
    half = rot // 2
    if cos.shape[-1] != half or sin.shape[-1] != half:
        raise ValueError(f"RotaryEmbedding caches have last dim {cos.shape[-1]} but the "
                         f"rotary dim {rot} needs {half}.")
    work = _work_dtype(dtype)
    cos = cos.astype(work)[:, :, None, :]
    sin = sin.astype(work)[:, :, None, :]
    part = xs[..., :rot].astype(work)
    if interleaved:
        x1, x2 = part[..., 0::2], part[..., 1::2]
    else:
        x1, x2 = part[..., :half], part[..., half:]
    real = cos * x1 - sin * x2
    imag = sin * x1 + cos * x2
    if interleaved:
        rotated = np.stack([real, imag], axis=-1).reshape(part.shape)
    else:
        rotated = np.concatenate([real, imag], axis=-1)
    out = np.concatenate([rotated.astype(dtype), xs[..., rot:]], axis=-1)
    if x.ndim == 4:
        return np.ascontiguousarray(out.transpose(0, 2, 1, 3))
    return out.reshape(x.shape)


# --------------------------------------------------------------------------- LinearAttention


def _linear_attention_infer(ctx: InferContext) -> list[Type | None]:
    rule = ctx.attrs["update_rule"]
    if rule not in ("linear", "gated", "delta", "gated_delta"):
        raise ctx.error(f"update_rule {rule!r} is not one of 'linear', 'gated', 'delta', "
                        "'gated_delta'.")
    hq, hkv = ctx.attrs["q_num_heads"], ctx.attrs["kv_num_heads"]
    if hq <= 0 or hkv <= 0 or hq % hkv:
        raise ctx.error(f"q_num_heads {hq} must be a positive multiple of kv_num_heads {hkv}.")
    t = input_dtype(ctx, 0)
    s_dtype = input_dtype(ctx, 3) if ctx.has_input(3) else t
    q, k, v = (input_shape(ctx, i) for i in range(3))
    if t is None:
        return [None, None]
    if q is None or k is None or v is None:
        return [TensorType(t, None), TensorType(s_dtype, None)]
    if any(len(shape) != 3 for shape in (q, k, v)):
        raise ctx.error(f"query, key and value must be 3-D (batch, sequence, hidden), got "
                        f"{list(q)!r}, {list(k)!r} and {list(v)!r}.")
    dk = _dim_div(k[2], hkv)
    dv = _dim_div(v[2], hkv)
    return [TensorType(t, (q[0], q[1], _dim_mul(hq, dv))),
            TensorType(s_dtype, (q[0], hkv, dk, dv))]


def _per_head(x: np.ndarray, b: int, t: int, heads: int, dk: int) -> np.ndarray:
    """Decay/beta as (B, T, H, n) with n in {1, dk}; a single value is shared by all heads."""
    if x.shape[2] == heads * dk:
        return x.reshape(b, t, heads, dk)
    if x.shape[2] == heads:
        return x.reshape(b, t, heads, 1)
    if x.shape[2] == 1:
        return np.broadcast_to(x.reshape(b, t, 1, 1), (b, t, heads, 1))
    raise ValueError(f"LinearAttention gate of shape {list(x.shape)!r} does not fit {heads} "
                     f"heads of size {dk}.")


@op("LinearAttention", infer=_linear_attention_infer, inputs=(3, 6), outputs=2,
    attrs={"chunk_size": Attr.INT(64), "kv_num_heads": Attr.INT(), "q_num_heads": Attr.INT(),
           "scale": Attr.FLOAT(0.0), "update_rule": Attr.STRING("gated_delta")})
def linear_attention(query, key, value, past_state=None, decay=None, beta=None, *, chunk_size,
                     kv_num_heads, q_num_heads, scale, update_rule):
    """Recurrent linear attention (linear, gated, delta and gated-delta rules), token by token."""
    b, t, _ = query.shape
    hq, hkv = q_num_heads, kv_num_heads
    if hkv <= 0 or hq % hkv or query.shape[2] % hq or key.shape[2] % hkv or value.shape[2] % hkv:
        raise ValueError(f"LinearAttention shapes {list(query.shape)!r}, {list(key.shape)!r}, "
                         f"{list(value.shape)!r} do not split into {hq} query and {hkv} key/value "
                         "heads.")
    dk, dv = key.shape[2] // hkv, value.shape[2] // hkv
    if query.shape[2] // hq != dk:
        raise ValueError(f"LinearAttention query head size {query.shape[2] // hq} differs from "
                         f"the key head size {dk}.")
    gated = update_rule in ("gated", "gated_delta")
    delta = update_rule in ("delta", "gated_delta")
    if gated and decay is None:
        raise ValueError(f"LinearAttention update_rule {update_rule!r} needs the decay input.")
    if delta and beta is None:
        raise ValueError(f"LinearAttention update_rule {update_rule!r} needs the beta input.")
    work = _work_dtype(query.dtype)
    scale = scale or 1 / math.sqrt(dk)
    group = hq // hkv
    q = query.astype(work).reshape(b, t, hkv, group, dk)
    k = key.astype(work).reshape(b, t, hkv, dk)
    v = value.astype(work).reshape(b, t, hkv, dv)
    g = np.exp(_per_head(decay.astype(work), b, t, hkv, dk)) if gated else None
    bt = _per_head(beta.astype(work), b, t, hkv, 1)[..., 0] if delta else None
    if past_state is not None:
        state = past_state.astype(work).copy()
    else:
        state = np.zeros((b, hkv, dk, dv), dtype=work)
    out = np.empty((b, t, hkv, group, dv), dtype=work)
    for step in range(t):  # the recurrence is sequential in time
        if gated:
            state = state * g[:, step, :, :, None]
        kt, vt = k[:, step], v[:, step]  # (B, H, dk), (B, H, dv)
        if delta:
            recalled = np.einsum("bhkv,bhk->bhv", state, kt)
            vt = bt[:, step, :, None] * (vt - recalled)
        state = state + kt[..., :, None] * vt[..., None, :]
        out[:, step] = np.einsum("bhgk,bhkv->bhgv", q[:, step], state) * work.type(scale)
    s_dtype = past_state.dtype if past_state is not None else query.dtype
    return out.reshape(b, t, hq * dv).astype(query.dtype), state.astype(s_dtype)


# --------------------------------------------------------------------------- CausalConvWithState


def _causal_conv_infer(ctx: InferContext) -> list[Type | None]:
    activation = ctx.attrs["activation"]
    if activation not in ("none", "silu", "swish"):
        raise ctx.error(f"activation {activation!r} is not one of 'silu', 'swish', 'none'.")
    t = input_dtype(ctx, 0)
    x, w = input_shape(ctx, 0), input_shape(ctx, 1)
    if t is None:
        return [None, None]
    if x is None:
        return [TensorType(t, None), TensorType(t, None)]
    if len(x) != 3:
        raise ctx.error(f"input must be 3-D (batch, channels, length), got {list(x)!r}.")
    if w is not None and len(w) != 3:
        raise ctx.error(f"weight must be 3-D (channels, 1, k), got {list(w)!r}.")
    state = (w[2] - 1) if w is not None and isinstance(w[2], int) else unknown_dim()
    return [TensorType(t, x), TensorType(t, (x[0], x[1], state))]


@op("CausalConvWithState", infer=_causal_conv_infer, inputs=(2, 4), outputs=2,
    attrs={"activation": Attr.STRING("none")})
def causal_conv_with_state(x, weight, bias=None, past_state=None, *, activation):
    """Depthwise causal 1-D convolution that carries its last k-1 inputs as state."""
    batch, channels, length = x.shape
    if weight.ndim != 3 or weight.shape[0] != channels or weight.shape[1] != 1:
        raise ValueError(f"CausalConvWithState weight of shape {list(weight.shape)!r} does not "
                         f"fit {channels} channels; it must be ({channels}, 1, k).")
    taps = weight.shape[2]
    if taps < 1:
        raise ValueError("CausalConvWithState weight has an empty kernel.")
    work = _work_dtype(x.dtype)
    if past_state is None:
        past = np.zeros((batch, channels, taps - 1), dtype=work)
    else:
        if past_state.shape != (batch, channels, taps - 1):
            raise ValueError(f"CausalConvWithState past_state of shape "
                             f"{list(past_state.shape)!r} must be "
                             f"{[batch, channels, taps - 1]!r}.")
        past = past_state.astype(work)
    padded = np.concatenate([past, x.astype(work)], axis=2)
    w = weight[:, 0, :].astype(work)
    y = np.zeros((batch, channels, length), dtype=work)
    for j in range(taps):  # a loop over kernel taps
        y += padded[:, :, j:j + length] * w[None, :, j, None]
    if bias is not None:
        y += bias.astype(work)[None, :, None]
    if activation in ("silu", "swish"):
        y = y / (1 + np.exp(-y))
    present = padded[:, :, padded.shape[2] - (taps - 1):]
    return y.astype(x.dtype), np.ascontiguousarray(present).astype(x.dtype)


# --------------------------------------------------------------------------- FlexAttention


def _flex_infer(ctx: InferContext) -> list[Type | None]:
    t = input_dtype(ctx, 0)
    q, v = input_shape(ctx, 0), input_shape(ctx, 2)
    precision = ctx.attrs["softmax_precision"]
    if precision is not None and precision not in _PRECISIONS:
        raise ctx.error(f"softmax_precision {precision!r} is not one of 1, 10, 11, 16.")
    if t is None:
        return [None]
    if q is None or v is None:
        return [TensorType(t, None)]
    for name, shape in (("Q", q), ("K", input_shape(ctx, 1)), ("V", v)):
        if shape is not None and len(shape) != 4:
            raise ctx.error(f"{name} must be 4-D, got shape {list(shape)!r}.")
    return [TensorType(t, (q[0], q[1], q[2], v[3]))]


def _run_mod(ctx, graph, x: np.ndarray, name: str) -> np.ndarray:
    (out,) = ctx.run_graph(graph, [x])
    out = np.asarray(out)
    if out.shape != x.shape:
        raise ValueError(f"FlexAttention {name} changed the shape {list(x.shape)!r} to "
                         f"{list(out.shape)!r}.")
    return out.astype(x.dtype)


@op("FlexAttention", domain="ai.onnx.preview", infer=_flex_infer, inputs=3,
    attrs={"prob_mod": Attr.GRAPH(None), "score_mod": Attr.GRAPH(None),
           "scale": Attr.FLOAT(None), "softmax_precision": Attr.INT(None)})
def flex_attention(q, k, v, *, prob_mod, score_mod, scale, softmax_precision, ctx):
    """Attention with optional score and probability modifier subgraphs."""
    for name, x in (("Q", q), ("K", k), ("V", v)):
        if x.ndim != 4:
            raise ValueError(f"FlexAttention {name} must be 4-D, got shape {list(x.shape)!r}.")
    batch, hq, sq, d = q.shape
    hkv, skv = k.shape[1], k.shape[2]
    if hkv == 0 or hq % hkv:
        raise ValueError(f"FlexAttention q_num_heads {hq} is not a multiple of kv_num_heads "
                         f"{hkv}.")
    if k.shape[0] != batch or k.shape[3] != d or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"FlexAttention Q, K and V of shapes {list(q.shape)!r}, "
                         f"{list(k.shape)!r}, {list(v.shape)!r} disagree on the batch size, the "
                         "KV heads, the key length or the head size.")
    group = hq // hkv
    work = _softmax_dtype(softmax_precision, q.dtype)
    scale = 1 / math.sqrt(d) if scale is None else scale
    acc = np.float64 if work == np.float64 else np.float32
    qg = q.astype(acc).reshape(batch, hkv, group, sq, d)
    kt = k.astype(acc)[:, :, None].swapaxes(-1, -2)
    scores = (np.matmul(qg, kt) * acc(scale)).reshape(batch, hq, sq, skv).astype(work)
    if score_mod is not None:
        scores = _run_mod(ctx, score_mod, scores, "score_mod")
    probs = _softmax(scores.astype(acc)).astype(work)
    if prob_mod is not None:
        probs = _run_mod(ctx, prob_mod, probs, "prob_mod")
    pg = probs.astype(acc).reshape(batch, hkv, group, sq, skv)
    y = np.matmul(pg, v.astype(acc)[:, :, None]).reshape(batch, hq, sq, -1)
    return y.astype(q.dtype)


# --------------------------------------------------------------------------- SwiGLU


def _swiglu_infer(ctx: InferContext) -> list[Type | None]:
    a, b = input_shape(ctx, 0), input_shape(ctx, 1)
    if a is not None and b is not None:
        clash = len(a) != len(b) or any(isinstance(x, int) and isinstance(y, int) and x != y
                                        for x, y in zip(a, b, strict=False))
        if clash:
            raise ctx.error(f"SwiGLU inputs must have the same shape, got {list(a)!r} and "
                            f"{list(b)!r}.")
        if a is not None and any(not isinstance(x, int) for x in a):
            # prefer the concrete dims of either side
            a = tuple(x if isinstance(x, int) else y for x, y in zip(a, b, strict=True))
    t = input_dtype(ctx, 0)
    return [TensorType(t, a) if t is not None else None]


@op("SwiGLU", infer=_swiglu_infer, inputs=2, attrs={"alpha": Attr.FLOAT(1.0)})
def swiglu(a, b, *, alpha):
    """Swish-gated linear unit: a * sigmoid(alpha * a) * b."""
    if a.shape != b.shape:
        raise ValueError(f"SwiGLU inputs must have the same shape, got {list(a.shape)!r} and "
                         f"{list(b.shape)!r}.")
    work = _work_dtype(a.dtype)
    x = a.astype(work)
    gate = x / (1 + np.exp(-work.type(alpha) * x))
    return (gate * b.astype(work)).astype(a.dtype)
