"""The cpu target's SGEMM against numpy float64, on every ISA build the host
can run (portable, AVX2, AVX-512), with odd sizes, transposes, strided
views, epilogues and pre-packed B."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from heli._errors import ShapeError
from heli.targets.cpu import _gemm
from heli.targets.cpu import _toolchain as tc

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC") or "cc") is None,
                                reason="no C compiler")

EPS32 = np.finfo(np.float32).eps


def _isas():
    return [pytest.param(isa, marks=pytest.mark.skipif(
        not tc.can_run(isa), reason=f"this host cannot run {isa} code")) for isa in tc.ISAS]


@pytest.fixture(params=_isas())
def isa(request, monkeypatch) -> str:
    monkeypatch.setenv("HELI_CPU_ISA", request.param)  # the default build follows the override
    return request.param


def _rand(rng, shape, trans=False):
    """A float32 matrix of `shape`, stored transposed (column-major) if asked."""
    x = rng.standard_normal(shape[::-1] if trans else shape, dtype=np.float32)
    return x.T if trans else x


def _reference(a, b, c=None, alpha=1.0, beta=0.0, bias=None, bias_axis="col", clip=None):
    """float64 result and a per-element error bound for float32 accumulation."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    want = alpha * (a64 @ b64)
    scale = abs(alpha) * (np.abs(a64) @ np.abs(b64))
    if beta != 0.0:
        want += beta * c.astype(np.float64)
        scale += np.abs(beta * c.astype(np.float64))
    if bias is not None:
        b2 = bias[None, :] if bias_axis == "col" else bias[:, None]
        want += b2
        scale += np.abs(b2)
    if clip is not None:
        want = np.clip(want, clip[0], clip[1])
    # Each element is a float32 sum of K products, accumulated in order; the
    # error grows like sqrt(K) for random data (K for the worst case).
    k = a.shape[1]
    return want, 4 * EPS32 * (np.sqrt(k) + 2) * scale + 1e-30


def _check(got, want, bound, what=""):
    assert got.dtype == np.float32 and got.shape == want.shape, what
    err = np.abs(got.astype(np.float64) - want)
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else ()
    assert np.all(err <= bound), (
        f"{what}: error {err[worst]:.3g} > bound {bound[worst]:.3g} at {worst}")


SIZES = [(1, 1, 1), (7, 33, 257), (257, 7, 33), (33, 257, 7), (1, 65, 300), (300, 1, 65),
         (13, 35, 1000), (200, 97, 400), (3, 2100, 5), (257, 257, 257)]


@pytest.mark.parametrize("m,n,k", SIZES)
def test_sizes_and_transposes(isa, m, n, k):
    rng = np.random.default_rng(m * 10007 + n * 101 + k)
    for ta in (False, True):
        for tb in (False, True):
            a, b = _rand(rng, (m, k), ta), _rand(rng, (k, n), tb)
            want, bound = _reference(a, b)
            # Passing the transposed storage with trans_x=True is the same product.
            got = _gemm.sgemm(a.T if ta else a, b.T if tb else b, trans_a=ta, trans_b=tb)
            _check(got, want, bound, f"{isa} {m}x{n}x{k} ta={ta} tb={tb}")
            # ... and so is a column-major view passed as is.
            _check(_gemm.sgemm(a, b), want, bound, f"{isa} {m}x{n}x{k} views")


def test_epilogues(isa):
    rng = np.random.default_rng(1)
    m, n, k = 45, 70, 130
    a, b = _rand(rng, (m, k)), _rand(rng, (k, n))
    c0 = rng.standard_normal((m, n), dtype=np.float32)
    cases = [
        dict(alpha=1.5, beta=0.5),
        dict(alpha=-0.25, beta=1.0, bias=rng.standard_normal(n, dtype=np.float32)),
        dict(beta=2.0, bias=rng.standard_normal(m, dtype=np.float32), bias_axis="row",
             activation="relu"),
        dict(bias=rng.standard_normal(n, dtype=np.float32), activation=("clip", -0.5, 6.0)),
        dict(activation=("clip", None, 1.0)),
        dict(activation=("clip", 0.0, None)),
    ]
    for kw in cases:
        clip = None
        act = kw.get("activation")
        if act == "relu":
            clip = (0.0, np.inf)
        elif act is not None:
            clip = (-np.inf if act[1] is None else act[1], np.inf if act[2] is None else act[2])
        want, bound = _reference(a, b, c0, kw.get("alpha", 1.0), kw.get("beta", 0.0),
                                 kw.get("bias"), kw.get("bias_axis", "col"), clip)
        c = c0.copy()
        out = _gemm.sgemm(a, b, c, **kw)
        assert out is c
        _check(c, want, bound, f"{isa} {kw}")


def test_k_blocks_with_beta_and_epilogue(isa):
    # K spans several KC blocks: beta must apply once, bias and ReLU only at the end.
    rng = np.random.default_rng(2)
    cfg = _gemm.library().config
    m, n, k = 2 * cfg.mr + 3, cfg.nr + 5, 2 * cfg.kc + 17
    a, b = _rand(rng, (m, k)), _rand(rng, (k, n))
    c0 = rng.standard_normal((m, n), dtype=np.float32)
    bias = rng.standard_normal(n, dtype=np.float32)
    want, bound = _reference(a, b, c0, 0.5, -1.0, bias, clip=(0.0, np.inf))
    c = c0.copy()
    _gemm.sgemm(a, b, c, alpha=0.5, beta=-1.0, bias=bias, activation="relu")
    _check(c, want, bound, isa)


def test_beta_zero_ignores_nan_in_c(isa):
    a = np.ones((5, 3), np.float32)
    b = np.ones((3, 17), np.float32)
    c = np.full((5, 17), np.nan, np.float32)
    _gemm.sgemm(a, b, c)
    np.testing.assert_array_equal(c, np.full((5, 17), 3.0, np.float32))


def test_strided_inputs_and_output(isa):
    rng = np.random.default_rng(3)
    big_a = rng.standard_normal((40, 90), dtype=np.float32)
    big_b = rng.standard_normal((140, 80), dtype=np.float32)
    a = big_a[3:30, 5:70]          # row stride 90, not 65
    b = big_b[::2, 1:50][:65]      # every other row
    a2 = big_a[:27, ::2][:, :45]   # no unit stride at all: copied first
    out = np.zeros((30, 60), np.float32)
    c = out[2:29, 4:53]            # C with row stride 60
    want, bound = _reference(a, b)
    _gemm.sgemm(a, b, c)
    _check(c, want, bound, "strided")
    assert np.all(out[:2] == 0) and np.all(out[:, :4] == 0) and np.all(out[:, 53:] == 0)
    want2, bound2 = _reference(a2, b[:45])
    _check(_gemm.sgemm(a2, b[:45]), want2, bound2, "copied A")


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (7, 33, 257), (128, 96, 768), (49, 70, 1000)])
def test_prepacked_b(isa, m, n, k):
    rng = np.random.default_rng(4)
    for tb in (False, True):
        b = _rand(rng, (k, n), tb)
        packed = _gemm.pack_b(b.T if tb else b, trans_b=tb)
        assert packed.isa == isa and (packed.k, packed.n) == (k, n)
        assert packed.data.ctypes.data % 64 == 0
        bias = rng.standard_normal(n, dtype=np.float32)
        for rows in (m, 3):  # one packing serves any M
            for ta in (False, True):
                a = _rand(rng, (rows, k), ta)
                want, bound = _reference(a, b, bias=bias, clip=(0.0, np.inf))
                got = _gemm.sgemm_prepacked(a, packed, bias=bias, activation="relu")
                _check(got, want, bound, f"{isa} prepacked {rows}x{n}x{k} ta={ta} tb={tb}")


def test_threads_agree_bitwise(isa):
    rng = np.random.default_rng(5)
    a, b = _rand(rng, (150, 300)), _rand(rng, (300, 170))
    one = _gemm.sgemm(a, b, num_threads=1)
    np.testing.assert_array_equal(_gemm.sgemm(a, b, num_threads=2), one)
    np.testing.assert_array_equal(_gemm.sgemm(a, b, num_threads=3), one)
    packed = _gemm.pack_b(b)
    np.testing.assert_array_equal(_gemm.sgemm_prepacked(a, packed, num_threads=2), one)


def test_empty_dimensions(isa):
    c = np.full((4, 5), 2.0, np.float32)
    bias = np.arange(5, dtype=np.float32)
    # K == 0: the product is zero; beta, bias and the clamp still apply.
    _gemm.sgemm(np.zeros((4, 0), np.float32), np.zeros((0, 5), np.float32), c, beta=0.5,
                bias=bias, activation=("clip", None, 3.0))
    np.testing.assert_array_equal(c, np.minimum(1.0 + bias[None, :], 3.0).repeat(4, 0))
    assert _gemm.sgemm(np.zeros((0, 3), np.float32), np.zeros((3, 5), np.float32)).shape == (0, 5)
    assert _gemm.sgemm(np.zeros((2, 3), np.float32), np.zeros((3, 0), np.float32)).shape == (2, 0)


def test_config_matches_isa(isa):
    cfg = _gemm.library().config
    assert cfg.isa == isa and cfg.threaded
    assert cfg.nr % cfg.vector_width == 0
    assert cfg.vector_width == {"portable": 4, "avx2": 8, "avx512": 16}[isa]


def test_bad_arguments_are_clear_errors():
    a = np.zeros((3, 4), np.float32)
    with pytest.raises(ShapeError, match="inner dimensions differ"):
        _gemm.sgemm(a, np.zeros((5, 2), np.float32))
    with pytest.raises(ShapeError, match="float32 numpy arrays, but A is float64"):
        _gemm.sgemm(a.astype(np.float64), np.zeros((4, 2), np.float32))
    with pytest.raises(ShapeError, match="2-D matrices"):
        _gemm.sgemm(np.zeros(4, np.float32), np.zeros((4, 2), np.float32))
    with pytest.raises(ShapeError, match=r"per-col bias must have shape \(2,\)"):
        _gemm.sgemm(a, np.zeros((4, 2), np.float32), bias=np.zeros(3, np.float32))
    with pytest.raises(ShapeError, match="activation must be"):
        _gemm.sgemm(a, np.zeros((4, 2), np.float32), activation="gelu")
    with pytest.raises(ShapeError, match="beta is nonzero but no C"):
        _gemm.sgemm(a, np.zeros((4, 2), np.float32), beta=1.0)
    with pytest.raises(ShapeError, match="C must be a float32 array of shape"):
        _gemm.sgemm(a, np.zeros((4, 2), np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(ShapeError, match="C must have contiguous rows"):
        _gemm.sgemm(a, np.zeros((4, 2), np.float32), np.zeros((2, 3), np.float32).T)
    packed = _gemm.pack_b(np.zeros((4, 2), np.float32))
    with pytest.raises(ShapeError, match="packed B is 4x2"):
        _gemm.sgemm_prepacked(np.zeros((3, 5), np.float32), packed)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_runs_threads():
    # A child forked after threaded kernels ran has none of the parent's
    # pool threads: its pool starts afresh (it must neither hang nor lose
    # tasks), and it may use threads again.
    import signal

    a = np.ones((300, 300), np.float32)
    _gemm.sgemm(a, a, num_threads=2)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        signal.alarm(30)
        ok = all((_gemm.sgemm(a, a, num_threads=t) == 300.0).all() for t in (2, 3, 2))
        os._exit(0 if ok and tc.num_threads(4) == 4 and tc.pool_stats()["workers"] == 2 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert tc.num_threads(4) == 4
