"""Control flow (If, Loop, Scan, SequenceMap): output types from bodies,
iteration edge cases, values captured from enclosing graphs through the
passes, and the opset-8 Scan upgrade, against hand-computed values."""

from __future__ import annotations

import numpy as np
import onnx.parser
import pytest

import heli
from heli._errors import ExecutionError, ShapeError
from heli.frontend.onnx import import_onnx
from heli.ir._types import TensorType

HEADER = '<ir_version: 8, opset_import: ["" : 17]>\n'


def model(text: str, header: str = HEADER):
    return onnx.parser.parse_model(header + text)


def run(text: str, **feeds):
    compiled = heli.compile(model(text), debug=True)
    out = compiled.run(feeds)
    return [out[name] for name in compiled.output_names]


def output_types(text: str):
    return [v.type for v in import_onnx(model(text)).outputs]


def is_unknown(dim):
    return isinstance(dim, str) and dim.startswith("?")


COUNTER = '''
g (float[2] x, int64 m) => (float[N] s, float[K,2] sc) {
  s0 = Constant <value = float[1] {0}> ()
  s, sc = Loop (m, "", s0) <body = b (int64 i, bool cin, float[Q] sin)
                                   => (bool cout, float[P] sout, float[2] scan) {
     cout = Identity(cin)
     fi = Cast <to = 1> (i)
     one = Constant <value = int64[1] {1}> ()
     fiv = Reshape(fi, one)
     sout = Concat <axis = 0> (sin, fiv)
     scan = Mul(x, fi)
  }>
}'''


def test_loop_carries_growing_state_and_stacks_scan_outputs():
    x = np.array([1, 2], np.float32)
    s, sc = run(COUNTER, x=x, m=np.array(3, np.int64))
    np.testing.assert_array_equal(s, [0, 0, 1, 2])
    np.testing.assert_array_equal(sc, [[0, 0], [1, 2], [2, 4]])


def test_loop_with_zero_iterations_gives_empty_scan_outputs():
    s, sc = run(COUNTER, x=np.ones(2, np.float32), m=np.array(0, np.int64))
    np.testing.assert_array_equal(s, [0])
    assert sc.shape == (0, 2) and sc.dtype == np.float32


def test_loop_types_symbols_and_trip_count():
    s_type, sc_type = output_types(COUNTER)
    # The body's own symbols (Q, P) do not leak; M is a graph input so the trip
    # count is unknown.
    assert s_type.dtype.np == np.float32 and is_unknown(s_type.shape[0])
    assert is_unknown(sc_type.shape[0]) and sc_type.shape[1] == 2
    fixed = COUNTER.replace("(float[2] x, int64 m)", "(float[2] x)").replace(
        "s0 = Constant", "m = Constant <value = int64 {4}> ()\n  s0 = Constant")
    assert output_types(fixed)[1] == TensorType(sc_type.dtype, (4, 2))


def test_loop_stops_when_the_body_condition_turns_false():
    y, n = run('''
g (float x) => (float y, int64 n) {
  big = Constant <value = int64 {1000}> ()
  t = Constant <value = bool {1}> ()
  zero = Constant <value = int64 {0}> ()
  y, n = Loop (big, t, x, zero) <body = b (int64 i, bool cin, float xin, int64 nin)
                                        => (bool cout, float xout, int64 nout) {
     two = Constant <value = float {2}> ()
     xout = Mul(xin, two)
     lim = Constant <value = float {100}> ()
     cout = Less(xout, lim)
     one = Constant <value = int64 {1}> ()
     nout = Add(nin, one)
  }>
}''', x=np.array(3, np.float32))
    assert y == 192 and n == 6


def test_loop_body_arity_is_checked():
    with pytest.raises(ShapeError, match="the body takes 3 inputs"):
        import_onnx(model('''
g (float x, int64 m) => (float y) {
  y = Loop (m, "") <body = b (int64 i, bool c, float v) => (bool co, float vo) {
     co = Identity(c)
     vo = Identity(v)
  }>
}'''))


IF_SHAPES = '''
g (bool c, float[3] x) => (float[?] y) {
  y = If (c) <then_branch = t () => (float[3] a) { a = Identity(x) },
              else_branch = e () => (float[6] b) { b = Concat <axis = 0> (x, x) }>
}'''


def test_if_runs_one_branch_and_merges_branch_types():
    x = np.array([1, 2, 3], np.float32)
    (y,) = run(IF_SHAPES, c=np.array(True), x=x)
    np.testing.assert_array_equal(y, x)
    (y,) = run(IF_SHAPES, c=np.array(False), x=x)
    np.testing.assert_array_equal(y, np.concatenate([x, x]))
    (t,) = output_types(IF_SHAPES)
    assert len(t.shape) == 1 and is_unknown(t.shape[0])
    constant = IF_SHAPES.replace("(bool c, float[3] x)", "(float[3] x)").replace(
        "y = If", "c = Constant <value = bool {0}> ()\n  y = If")
    assert output_types(constant)[0].shape == (6,)


def test_if_rejects_branches_of_different_dtypes():
    with pytest.raises(ShapeError, match="output 0 has type"):
        import_onnx(model('''
g (bool c, float[3] x) => (float[3] y) {
  y = If (c) <then_branch = t () => (float[3] a) { a = Identity(x) },
              else_branch = e () => (int64[3] b) { b = Cast <to = 7> (x) }>
}'''))


def test_if_condition_must_be_one_value():
    with pytest.raises(ExecutionError, match="must hold one value"):
        run(IF_SHAPES.replace("bool c", "bool[2] c"), c=np.array([True, False]),
            x=np.ones(3, np.float32))


SCAN = '''
g (float[2] init, float[3,4,2] a, float[4,2] bb) => (float[2] st, float[4,3,2] o1, float[2,4] o2) {
  st, o1, o2 = Scan (init, a, bb) <num_scan_inputs = 2, scan_input_axes = [1, 0],
     scan_input_directions = [0, 1], scan_output_axes = [0, -1], scan_output_directions = [1, 0],
     body = b (float[2] s, float[3,2] ai, float[2] bi)
              => (float[2] so, float[3,2] x1, float[2] x2) {
       zero = Constant <value = int64[1] {0}> ()
       r = ReduceSum <keepdims = 0> (ai, zero)
       so = Add(s, r)
       x1 = Mul(ai, bi)
       x2 = Sub(so, bi)
     }>
}'''


def test_scan_axes_and_directions():
    init = np.zeros(2, np.float32)
    a = np.arange(24, dtype=np.float32).reshape(3, 4, 2)
    b = np.arange(8, dtype=np.float32).reshape(4, 2)
    st, o1, o2 = run(SCAN, init=init, a=a, bb=b)
    # Oracle: step t reads a[:, t] forwards and b[3 - t] backwards.
    state, x1, x2 = init.astype(np.float64), [], []
    for t in range(4):
        ai, bi = a[:, t], b[3 - t]
        state = state + ai.sum(0)
        x1.append(ai * bi)
        x2.append(state - bi)
    np.testing.assert_allclose(st, state)
    np.testing.assert_allclose(o1, np.stack(x1[::-1]))  # output direction 1: reversed
    np.testing.assert_allclose(o2, np.stack(x2, axis=-1))
    assert [t.shape for t in output_types(SCAN)] == [(2,), (4, 3, 2), (2, 4)]


def test_scan_opset_8_runs_per_batch_entry():
    text = '''
g (float[2,2] init, float[2,3,2] x) => (float[2,2] y, float[2,3,2] z) {
  y, z = Scan ("", init, x) <num_scan_inputs = 1, directions = [1],
     body = b (float[2] s, float[2] v) => (float[2] so, float[2] out) {
       so = Add(s, v)
       out = Identity(so)
     }>
}'''
    init = np.array([[0, 0], [10, 10]], np.float32)
    x = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    compiled = heli.compile(model(text, '<ir_version: 4, opset_import: ["" : 8]>\n'), debug=True)
    out = compiled.run({"init": init, "x": x})
    np.testing.assert_array_equal(out["y"], init + x.sum(1))
    # Reverse direction: the running sums start from the last step, output in step order.
    expected = init[:, None] + np.cumsum(x[:, ::-1], axis=1)
    np.testing.assert_array_equal(out["z"], expected)


def test_sequence_map_with_a_tensor_input():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    (y,) = run('''
g (float[4,3] x, float[3] t) => (float[?,3] y) {
  s = SplitToSequence <axis = 0> (x)
  r = SequenceMap (s, t) <body = b (float[1,3] a, float[3] bb) => (float[1,3] o) { o = Add(a, bb) }>
  y = ConcatFromSequence <axis = 0> (r)
}''', x=x, t=np.ones(3, np.float32))
    np.testing.assert_array_equal(y, x + 1)


@pytest.mark.parametrize("producer", ["Identity(x)", "Add(x, x)"])
def test_values_captured_by_a_body_survive_the_passes(producer):
    # Canonicalize drops Identity and CSE merges the twin Add; the body still
    # reads "b" by name.
    (y,) = run(f'''
g (float[2] x, int64 m) => (float[2] y) {{
  a = {producer}
  b = {producer}
  c = Add(a, x)
  y = Loop (m, "", c) <body = bd (int64 i, bool cin, float[2] xin) => (bool cout, float[2] xout) {{
     cout = Identity(cin)
     xout = Add(xin, b)
  }}>
}}''', x=np.array([1, 2], np.float32), m=np.array(2, np.int64))
    factor = 1 if producer.startswith("Identity") else 2
    np.testing.assert_array_equal(y, np.array([1, 2]) * (1 + 3 * factor))


def test_a_branch_that_cannot_run_on_these_shapes_only_fails_if_taken():
    text = '''
g (bool c, float[3] x, float[4] z) => (float[?] y) {
  y = If (c) <then_branch = t () => (float[3] a) { a = Add(x, z) },
              else_branch = e () => (float[4] b) { b = Identity(z) }>
}'''
    z = np.arange(4, dtype=np.float32)
    (y,) = run(text, c=np.array(False), x=np.ones(3, np.float32), z=z)
    np.testing.assert_array_equal(y, z)
    with pytest.raises(ExecutionError, match="Add node"):
        run(text, c=np.array(True), x=np.ones(3, np.float32), z=z)
