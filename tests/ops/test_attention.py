"""Attention family: type inference, error messages and numbers against float64
oracles written independently of the implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import heli
from heli._errors import ExecutionError, ShapeError
from heli.ir._types import DType, TensorType
from heli.ops._attention import (
    attention,
    causal_conv_with_state,
    linear_attention,
    rotary_embedding,
    swiglu,
)
from tests.ops.helpers import infer_types as infer

F32, F16 = DType.FLOAT32, DType.FLOAT16
RNG = np.random.default_rng(0)


ATTN = dict(is_causal=0, kv_num_heads=None, q_num_heads=None, qk_matmul_output_mode=0,
            scale=None, softcap=0.0, softmax_precision=None, left_window_size=-1,
            right_window_size=-1)


def attn(q, k, v, mask=None, past_k=None, past_v=None, nonpad=None, **attrs):
    return attention(q, k, v, mask, past_k, past_v, nonpad, **{**ATTN, **attrs})


def oracle(q, k, v, allowed=None, bias=None, scale=None):
    """float64 attention with explicit loops over batch and query heads."""
    b, hq, sq, d = q.shape
    hkv = k.shape[1]
    scale = 1 / math.sqrt(d) if scale is None else scale
    y = np.zeros((b, hq, sq, v.shape[3]))
    for n in range(b):
        for h in range(hq):
            kh, vh = k[n, h // (hq // hkv)].astype(np.float64), v[n, h // (hq // hkv)]
            s = q[n, h].astype(np.float64) @ kh.T * scale
            if bias is not None:
                s = s + np.broadcast_to(bias, (b, hq, sq, s.shape[-1]))[n, h]
            if allowed is not None:
                s = np.where(np.broadcast_to(allowed, (b, hq, sq, s.shape[-1]))[n, h], s, -np.inf)
            for i in range(sq):
                if np.isneginf(s[i]).all():
                    continue  # a fully masked row is zero
                p = np.exp(s[i] - s[i].max())
                y[n, h, i] = p / p.sum() @ vh
    return y


# --------------------------------------------------------------------------- Attention: types


def test_attention_infer_3d_symbolic():
    q = TensorType(F32, ("batch", "seq", 768))
    kv = TensorType(F32, ("batch", "kv", 256))
    past = TensorType(F32, ("batch", 4, "past", 64))
    y, pk, pv, qk = infer("Attention", [q, kv, kv, None, past, past],
                          {"q_num_heads": 12, "kv_num_heads": 4}, num_outputs=4)
    assert y == TensorType(F32, ("batch", "seq", 768))
    assert pk.shape[:2] == ("batch", 4) and pk.shape[3] == 64
    assert isinstance(pk.shape[2], str)  # past + kv: a fresh symbol
    assert pv.shape[3] == 64
    assert qk.shape[:3] == ("batch", 12, "seq") and qk.shape[3] == pk.shape[2]


def test_attention_infer_4d_static_total():
    q = TensorType(F16, (2, 8, 1, 64))
    kv = TensorType(F16, (2, 2, 1, 64))
    past = TensorType(F16, (2, 2, 9, 64))
    y, pk, _ = infer("Attention", [q, kv, kv, None, past, past], {}, num_outputs=3)
    assert y == TensorType(F16, (2, 8, 1, 64))
    assert pk == TensorType(F16, (2, 2, 10, 64))


def test_attention_infer_errors():
    q = TensorType(F32, (1, 4, 64))
    with pytest.raises(ShapeError, match="3-D Q needs the q_num_heads attribute"):
        infer("Attention", [q, q, q])
    with pytest.raises(ShapeError, match="past_key and past_value must be given together"):
        x = TensorType(F32, (1, 2, 4, 8))
        infer("Attention", [x, x, x, None, TensorType(F32, (1, 2, 3, 8))])
    with pytest.raises(ShapeError, match="qk_matmul_output_mode 7"):
        infer("Attention", [TensorType(F32, (1, 2, 4, 8))] * 3, {"qk_matmul_output_mode": 7})


# --------------------------------------------------------------------------- Attention: values


def test_attention_gqa_causal_with_past_matches_float64():
    b, hq, hkv, sq, skv, past, d = 2, 6, 2, 3, 3, 4, 8
    q = RNG.standard_normal((b, hq, sq, d)).astype(np.float32)
    k = RNG.standard_normal((b, hkv, skv, d)).astype(np.float32)
    v = RNG.standard_normal((b, hkv, skv, d)).astype(np.float32)
    pk = RNG.standard_normal((b, hkv, past, d)).astype(np.float32)
    pv = RNG.standard_normal((b, hkv, past, d)).astype(np.float32)
    y, present_k, present_v, _ = attn(q, k, v, None, pk, pv, is_causal=1)
    kk, vv = np.concatenate([pk, k], 2), np.concatenate([pv, v], 2)
    # bottom-right causal: query i sees keys j <= i + past
    allowed = np.arange(past + skv)[None, :] <= np.arange(sq)[:, None] + past
    np.testing.assert_allclose(y, oracle(q, kk, vv, allowed), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(present_k, kk)
    np.testing.assert_array_equal(present_v, vv)
    assert y.dtype == np.float32


def test_attention_3d_layout_and_scale():
    b, s, h, d = 1, 4, 3, 4
    q4 = RNG.standard_normal((b, h, s, d)).astype(np.float32)
    k4 = RNG.standard_normal((b, h, s, d)).astype(np.float32)
    v4 = RNG.standard_normal((b, h, s, d)).astype(np.float32)

    def pack(x):
        return x.transpose(0, 2, 1, 3).reshape(b, s, h * d)

    y = attn(pack(q4), pack(k4), pack(v4), q_num_heads=h, kv_num_heads=h, scale=0.3)[0]
    np.testing.assert_allclose(y, pack(oracle(q4, k4, v4, scale=0.3)), rtol=1e-5, atol=1e-6)


def test_attention_fully_masked_row_is_zero_not_nan():
    q = RNG.standard_normal((1, 1, 2, 4)).astype(np.float32)
    mask = np.array([[False, False, False], [True, False, True]])
    k = RNG.standard_normal((1, 1, 3, 4)).astype(np.float32)
    y, _, _, probs = attn(q, k, k, mask, qk_matmul_output_mode=3)
    assert np.all(y[0, 0, 0] == 0) and np.all(probs[0, 0, 0] == 0)
    np.testing.assert_allclose(probs[0, 0, 1].sum(), 1.0, rtol=1e-6)
    assert probs[0, 0, 1, 1] == 0


def test_attention_bidirectional_window_hand_values():
    # Q = K = 0 gives uniform weights over the window; V = 0..4.
    q = np.zeros((1, 1, 5, 1), np.float32)
    v = np.arange(5, dtype=np.float32).reshape(1, 1, 5, 1)
    y = attn(q, q, v, left_window_size=1, right_window_size=2)[0]
    np.testing.assert_allclose(y.reshape(-1), [1.0, 1.5, 2.5, 3.0, 3.5])


def test_attention_nonpad_decode_attends_valid_prefix():
    q = RNG.standard_normal((2, 1, 1, 4)).astype(np.float32)
    k = RNG.standard_normal((2, 1, 6, 4)).astype(np.float32)
    v = RNG.standard_normal((2, 1, 6, 4)).astype(np.float32)
    nonpad = np.array([6, 3])
    y = attn(q, k, v, nonpad=nonpad, is_causal=1)[0]
    allowed = np.arange(6)[None, None, None, :] < nonpad[:, None, None, None]
    np.testing.assert_allclose(y, oracle(q, k, v, allowed), rtol=1e-5, atol=1e-6)


def test_attention_short_float_mask_is_padded_with_neg_inf():
    q = RNG.standard_normal((1, 2, 3, 4)).astype(np.float32)
    k = RNG.standard_normal((1, 2, 5, 4)).astype(np.float32)
    mask = RNG.standard_normal((3, 3)).astype(np.float32)
    y = attn(q, k, k, mask)[0]
    bias = np.concatenate([mask, np.full((3, 2), -np.inf)], axis=1)
    np.testing.assert_allclose(y, oracle(q, k, k, bias=bias), rtol=1e-5, atol=1e-6)


def test_attention_softcap_applies_before_mask_and_qk_modes():
    q = RNG.standard_normal((1, 1, 2, 4)).astype(np.float32)
    k = RNG.standard_normal((1, 1, 3, 4)).astype(np.float32)
    mask = np.array([0.0, 0.5, -np.inf], np.float32)
    raw = (q[0, 0].astype(np.float64) @ k[0, 0].T.astype(np.float64)) / 2
    capped = 0.5 * np.tanh(raw / 0.5)
    outs = [attn(q, k, k, mask, softcap=0.5, qk_matmul_output_mode=m)[3][0, 0] for m in range(3)]
    np.testing.assert_allclose(outs[0], raw, rtol=1e-5)
    np.testing.assert_allclose(outs[1], capped, rtol=1e-5)
    np.testing.assert_allclose(outs[2], capped + mask, rtol=1e-5)


def test_attention_softmax_precision_double_on_float16():
    q = RNG.standard_normal((1, 2, 3, 8)).astype(np.float16)
    y = attn(q, q, q, softmax_precision=11)[0]
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float64), oracle(q, q, q), rtol=5e-3, atol=5e-3)


def test_attention_bad_heads_is_execution_error():
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Attention", ["q", "k", "v"], ["y"], q_num_heads=5, kv_num_heads=2)],
        "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "qkv"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]),
        opset_imports=[helper.make_opsetid("", 23)])
    x = np.zeros((1, 2, 10), np.float32)
    with pytest.raises((ExecutionError, ShapeError), match="multiple of kv_num_heads"):
        heli.compile(m, debug=True).run({"q": x, "k": x, "v": x})


# --------------------------------------------------------------------------- RotaryEmbedding


def test_rotary_embedding_is_complex_rotation():
    b, h, s, d = 1, 2, 3, 6
    x = RNG.standard_normal((b, h, s, d)).astype(np.float32)
    theta = RNG.uniform(0, 6, (10, 2))
    pos = np.array([[7, 0, 3]])
    y = rotary_embedding(x, np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32),
                         pos, interleaved=1, num_heads=None, rotary_embedding_dim=4)
    pairs = x[..., :4:2] + 1j * x[..., 1:4:2]
    rotated = pairs * np.exp(1j * theta[pos])[:, None]
    np.testing.assert_allclose(y[..., :4:2], rotated.real, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y[..., 1:4:2], rotated.imag, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y[..., 4:], x[..., 4:])  # beyond rotary_embedding_dim


def test_rotary_embedding_3d_needs_num_heads():
    x = TensorType(F32, ("b", "s", 64))
    with pytest.raises(ShapeError, match="num_heads"):
        infer("RotaryEmbedding", [x, TensorType(F32, (8, 32)), TensorType(F32, (8, 32))])
    assert infer("RotaryEmbedding", [x, TensorType(F32, (8, 16)), TensorType(F32, (8, 16))],
                 {"num_heads": 2}) == [x]


# --------------------------------------------------------------------------- LinearAttention


def _split(x, heads):
    b, t, hd = x.shape
    return x.reshape(b, t, heads, hd // heads).astype(np.float64)


def test_linear_attention_linear_rule_is_causal_unnormalized_attention():
    b, t, hq, hkv, d = 1, 5, 4, 2, 3
    q = RNG.standard_normal((b, t, hq * d)).astype(np.float32)
    k = RNG.standard_normal((b, t, hkv * d)).astype(np.float32)
    v = RNG.standard_normal((b, t, hkv * d)).astype(np.float32)
    out, state = linear_attention(q, k, v, chunk_size=64, kv_num_heads=hkv, q_num_heads=hq,
                                  scale=0.0, update_rule="linear")
    qh, kh, vh = _split(q, hq), _split(k, hkv), _split(v, hkv)
    want = np.zeros((b, t, hq, d))
    for h in range(hq):
        g = h // (hq // hkv)
        scores = np.tril(qh[0, :, h] @ kh[0, :, g].T) / math.sqrt(d)
        want[0, :, h] = scores @ vh[0, :, g]
    np.testing.assert_allclose(out, want.reshape(b, t, -1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state[0, 1], kh[0, :, 1].T @ vh[0, :, 1], rtol=1e-5, atol=1e-5)


def test_linear_attention_gated_per_head_decay_closed_form():
    b, t, h, d = 1, 4, 1, 2
    q = RNG.standard_normal((b, t, h * d)).astype(np.float32)
    k = RNG.standard_normal((b, t, h * d)).astype(np.float32)
    v = RNG.standard_normal((b, t, h * d)).astype(np.float32)
    g = -RNG.uniform(0, 1, (b, t, h)).astype(np.float32)
    out, _ = linear_attention(q, k, v, None, g, chunk_size=64, kv_num_heads=1, q_num_heads=1,
                              scale=1.0, update_rule="gated")
    cum = np.cumsum(g[0, :, 0].astype(np.float64))
    qq, kk, vv = _split(q, 1)[0, :, 0], _split(k, 1)[0, :, 0], _split(v, 1)[0, :, 0]
    want = [sum(np.exp(cum[i] - cum[j]) * (qq[i] @ kk[j]) * vv[j] for j in range(i + 1))
            for i in range(t)]
    np.testing.assert_allclose(out[0], np.array(want), rtol=1e-5, atol=1e-5)


def test_linear_attention_delta_rule_memorizes_last_value():
    # With a unit key and beta = 1, the delta rule stores v exactly: S^T k = v.
    b, t, d = 1, 3, 4
    k = RNG.standard_normal((b, t, d))
    k = (k / np.linalg.norm(k, axis=-1, keepdims=True)).astype(np.float32)
    v = RNG.standard_normal((b, t, d)).astype(np.float32)
    q = RNG.standard_normal((b, t, d)).astype(np.float32)
    beta = np.ones((b, t, 1), np.float32)
    _, state = linear_attention(q, k, v, None, None, beta, chunk_size=64, kv_num_heads=1,
                                q_num_heads=1, scale=0.0, update_rule="delta")
    np.testing.assert_allclose(state[0, 0].T @ k[0, -1], v[0, -1], rtol=1e-5, atol=1e-5)


def test_linear_attention_errors():
    x = TensorType(F32, (1, 2, 8))
    with pytest.raises(ShapeError, match="update_rule 'fast'"):
        infer("LinearAttention", [x, x, x], {"q_num_heads": 2, "kv_num_heads": 2,
                                             "update_rule": "fast"}, num_outputs=2)
    out, state = infer("LinearAttention", [x, x, x], {"q_num_heads": 2, "kv_num_heads": 1},
                       num_outputs=2)
    assert out == TensorType(F32, (1, 2, 16)) and state == TensorType(F32, (1, 1, 8, 8))
    a = np.zeros((1, 2, 8), np.float32)
    with pytest.raises(ValueError, match="needs the decay input"):
        linear_attention(a, a, a, chunk_size=64, kv_num_heads=2, q_num_heads=2, scale=0.0,
                         update_rule="gated")


# --------------------------------------------------------------------------- CausalConvWithState


def test_causal_conv_matches_convolution_and_streams():
    b, c, length, taps = 2, 3, 7, 4
    x = RNG.standard_normal((b, c, length)).astype(np.float32)
    w = RNG.standard_normal((c, 1, taps)).astype(np.float32)
    bias = RNG.standard_normal(c).astype(np.float32)
    y, state = causal_conv_with_state(x, w, bias, activation="none")
    want = np.stack([[np.convolve(x[n, ch].astype(np.float64), w[ch, 0, ::-1])[:length]
                      + bias[ch] for ch in range(c)] for n in range(b)])
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(state, x[:, :, -(taps - 1):])
    # Two chunks with the state carried give the same result as one call.
    y1, s1 = causal_conv_with_state(x[:, :, :2], w, bias, activation="silu")
    y2, s2 = causal_conv_with_state(x[:, :, 2:], w, bias, s1, activation="silu")
    full, _ = causal_conv_with_state(x, w, bias, activation="silu")
    np.testing.assert_allclose(np.concatenate([y1, y2], axis=2), full, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(s2, state)


def test_causal_conv_infer_state_shape():
    y, state = infer("CausalConvWithState", [TensorType(F32, ("b", 16, "t")),
                                             TensorType(F32, (16, 1, 4))], num_outputs=2)
    assert y.shape == ("b", 16, "t") and state.shape == ("b", 16, 3)


# --------------------------------------------------------------------------- SwiGLU, FlexAttention


def test_swiglu_values_and_shape_check():
    a = np.array([1.0, -2.0, 0.0], np.float32)
    b = np.array([2.0, 1.0, 5.0], np.float32)
    want = a.astype(np.float64) / (1 + np.exp(-0.5 * a.astype(np.float64))) * b
    np.testing.assert_allclose(swiglu(a, b, alpha=0.5), want, rtol=1e-6)
    with pytest.raises(ShapeError, match="same shape"):
        infer("SwiGLU", [TensorType(F32, (2, 3)), TensorType(F32, (2, 4))])


def _flex_model(score_mod=None):
    attrs = {"score_mod": score_mod} if score_mod is not None else {}
    node = helper.make_node("FlexAttention", ["q", "k", "v"], ["y"], domain="ai.onnx.preview",
                            **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "qkv"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23),
                                                   helper.make_opsetid("ai.onnx.preview", 1)])


def test_flex_attention_score_mod_bias_matches_oracle():
    q = RNG.standard_normal((1, 4, 3, 8)).astype(np.float32)
    k = RNG.standard_normal((1, 2, 5, 8)).astype(np.float32)
    v = RNG.standard_normal((1, 2, 5, 6)).astype(np.float32)
    bias = RNG.standard_normal((3, 5)).astype(np.float32)
    mod = helper.make_graph(
        [helper.make_node("Add", ["s", "bias"], ["t"])], "mod",
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["B", "H", "L", "S"])],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["B", "H", "L", "S"])],
        [numpy_helper.from_array(bias, "bias")])
    feeds = {"q": q, "k": k, "v": v}
    y = heli.compile(_flex_model(mod), debug=True).run(feeds)["y"]
    np.testing.assert_allclose(y, oracle(q, k, v, bias=bias), rtol=1e-5, atol=1e-6)
    plain = heli.compile(_flex_model(), debug=True).run(feeds)["y"]
    np.testing.assert_allclose(plain, oracle(q, k, v), rtol=1e-5, atol=1e-6)


def test_flex_attention_infer_rank():
    with pytest.raises(ShapeError, match="must be 4-D"):
        infer("FlexAttention", [TensorType(F32, (2, 3, 4))] * 3, domain="ai.onnx.preview")
