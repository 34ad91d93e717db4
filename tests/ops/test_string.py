"""String ops and TfIdfVectorizer: type inference (symbolic shapes), error
messages, and values against hand-computed results."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import heli
from heli._errors import ShapeError
from heli.ir._types import DType, TensorType
from tests.ops.helpers import infer_types as infer

S = DType.STRING


def strings(*values, shape=None) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out.reshape(shape if shape is not None else (len(values),))


def run(op_name, feeds, attrs=None, outputs=("y",), opset=20):
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype)
                                            if a.dtype != object else TensorProto.STRING,
                                            a.shape) for name, a in feeds.items()]
    node = helper.make_node(op_name, list(feeds), list(outputs), **(attrs or {}))
    graph = helper.make_graph([node], "g", inputs,
                              [helper.make_empty_tensor_value_info(o) for o in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    result = heli.compile(model, debug=True).run(feeds)
    return [result[o] for o in outputs]


# -- StringNormalizer ------------------------------------------------------------------


def test_string_normalizer_case_insensitive_stopwords_and_eszett():
    x = strings("Monday", "STRASSE", "straße", "monday")
    (y,) = run("StringNormalizer", {"x": x}, {"stopwords": ["MONDAY"],
                                              "case_change_action": "UPPER"})
    # The eszett has no one-character upper case: it stays, as in ONNX Runtime.
    assert y.tolist() == ["STRASSE", "STRAßE"]


def test_string_normalizer_all_dropped_keeps_rank():
    (y,) = run("StringNormalizer", {"x": strings("a", "A", shape=(1, 2))}, {"stopwords": ["a"]})
    assert y.shape == (1, 1) and y[0, 0] == ""


def test_string_normalizer_infer():
    t = TensorType(S, (1, "c"))
    (out,) = infer("StringNormalizer", [t])
    assert out == t  # no stop words: nothing can change the shape
    (out,) = infer("StringNormalizer", [t], {"stopwords": ("x",)})
    assert out.shape[0] == 1 and isinstance(out.shape[1], str) and out.shape[1] != "c"
    with pytest.raises(ShapeError, match=r"shape \[C\] or \[1, C\]"):
        infer("StringNormalizer", [TensorType(S, (2, 3))])
    with pytest.raises(ShapeError, match="case_change_action 'TITLE'"):
        infer("StringNormalizer", [t], {"case_change_action": "TITLE"})


# -- StringSplit ------------------------------------------------------------------------


def test_string_split_whitespace_and_empty():
    x = strings("  a  b c ", "", "x,,y")
    y, n = run("StringSplit", {"x": x}, {"maxsplit": 1}, outputs=("y", "n"))
    # The unsplit remainder loses its trailing whitespace too.
    assert y.tolist() == [["a", "b c"], ["", ""], ["x,,y", ""]]
    assert n.tolist() == [2, 0, 1]
    y, n = run("StringSplit", {"x": x}, {"delimiter": ","}, outputs=("y", "n"))
    assert y.tolist() == [["  a  b c ", "", ""], ["", "", ""], ["x", "", "y"]]
    assert n.tolist() == [1, 0, 3]


def test_string_split_infer():
    y, n = infer("StringSplit", [TensorType(S, ("b", 2))], num_outputs=2)
    assert y.shape[:2] == ("b", 2) and isinstance(y.shape[2], str)
    assert n == TensorType(DType.INT64, ("b", 2))
    with pytest.raises(ShapeError, match="string tensor"):
        infer("StringSplit", [TensorType(DType.INT64, (3,))], num_outputs=2)


# -- StringConcat / RegexFullMatch --------------------------------------------------------


def test_string_concat_broadcasts():
    (y,) = run("StringConcat", {"a": strings("x", "y", shape=(2, 1)), "b": strings("1", "2")})
    assert y.tolist() == [["x1", "x2"], ["y1", "y2"]]
    (t,) = infer("StringConcat", [TensorType(S, ("n", 1)), TensorType(S, (4,))])
    assert t == TensorType(S, ("n", 4))
    with pytest.raises(ShapeError, match="string tensor"):
        infer("StringConcat", [TensorType(DType.FLOAT32, (1,)), TensorType(S, (1,))])


def test_regex_full_match_anchors_whole_string():
    (y,) = run("RegexFullMatch", {"x": strings("ab12", "ab12x", "")}, {"pattern": r"[a-z]+\d*"})
    assert y.dtype == bool and y.tolist() == [True, False, False]
    with pytest.raises(ShapeError, match=r"pattern '\(' is not a valid regular expression"):
        infer("RegexFullMatch", [TensorType(S, (2,))], {"pattern": "("})


# -- TfIdfVectorizer -------------------------------------------------------------------------


POOL = dict(ngram_counts=[0, 2], ngram_indexes=[0, 1, 2, 3], pool_strings=["a", "b", "a", "b",
                                                                            "b", "a"])


def test_tfidf_strings_with_skips():
    x = strings("a", "c", "b", "a", "b")
    attrs = dict(mode="TF", min_gram_length=1, max_gram_length=2, max_skip_count=1, **POOL)
    (y,) = run("TfIdfVectorizer", {"x": x}, attrs, opset=9)
    # unigrams a:2, b:2; bigrams (a,b): skip0 at 3-4, skip1 at 0-2 -> 2; (b,a): 2-3 -> 1.
    assert y.dtype == np.float32 and y.tolist() == [2, 2, 2, 1]


def test_tfidf_weighting_modes():
    x = strings("a", "a", "b", shape=(1, 3))
    base = dict(min_gram_length=1, max_gram_length=1, max_skip_count=0,
                weights=[0.5, 2.0, 3.0, 4.0], **POOL)
    (tf,) = run("TfIdfVectorizer", {"x": x}, dict(base, mode="TFIDF"), opset=9)
    (idf,) = run("TfIdfVectorizer", {"x": x}, dict(base, mode="IDF"), opset=9)
    assert tf.tolist() == [[1.0, 2.0, 0.0, 0.0]]
    assert idf.tolist() == [[0.5, 2.0, 0.0, 0.0]]


def test_tfidf_infer_and_errors():
    attrs = dict(mode="TF", min_gram_length=1, max_gram_length=2, max_skip_count=0, **POOL)
    (t,) = infer("TfIdfVectorizer", [TensorType(S, ("n", "len"))], attrs)
    assert t == TensorType(DType.FLOAT32, ("n", 4))
    with pytest.raises(ShapeError, match="exactly one of pool_strings and pool_int64s"):
        infer("TfIdfVectorizer", [TensorType(S, (3,))],
              dict(attrs, pool_int64s=[1, 2, 3, 4, 5, 6]))
    with pytest.raises(ShapeError, match="the input is int64, which does not match pool_strings"):
        infer("TfIdfVectorizer", [TensorType(DType.INT64, (3,))], attrs)
    with pytest.raises(ShapeError, match="mode 'BM25'"):
        infer("TfIdfVectorizer", [TensorType(S, (3,))], dict(attrs, mode="BM25"))
