"""String ops: StringNormalizer, StringSplit, StringConcat, RegexFullMatch and
TfIdfVectorizer (n-gram counting over int or string tokens).

Strings are numpy object arrays of Python ``str`` at run time.  Work on them
is a Python loop over the elements; there is no faster honest way.
"""

from __future__ import annotations

import re

import numpy as np

from heli.ir._ops import Attr, InferContext, op
from heli.ir._types import DType, TensorType, Type
from heli.ops._infer import broadcast, input_shape, tensor_input, unknown_dim


def _strings(values, shape) -> np.ndarray:
    """An object array of ``shape`` holding ``values`` (a flat list of str)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out.reshape(shape)


def _require_strings(ctx: InferContext, index: int, what: str) -> TensorType | None:
    t = tensor_input(ctx, index)
    if t is not None and t.dtype is not DType.STRING:
        raise ctx.error(f"{what} must be a string tensor, not {t.dtype}.")
    return t


# -- StringNormalizer ------------------------------------------------------------


def _string_normalizer_infer(ctx: InferContext) -> list[Type | None]:
    t = _require_strings(ctx, 0, "the input X")
    action = ctx.attrs["case_change_action"]
    if action not in ("NONE", "LOWER", "UPPER"):
        raise ctx.error(
            f"case_change_action {action!r} is not one of 'NONE', 'LOWER' or 'UPPER'."
        )
    if t is None or t.shape is None:
        return [TensorType(DType.STRING, None)]
    shape = t.shape
    leading = shape[0] if len(shape) == 2 else 1
    if len(shape) not in (1, 2) or (isinstance(leading, int) and leading != 1):
        raise ctx.error(f"the input must have shape [C] or [1, C], not {list(shape)!r}.")
    if not ctx.attrs["stopwords"]:
        return [t]  # nothing can be dropped
    return [TensorType(DType.STRING, (*shape[:-1], unknown_dim()))]


def _change_case(word: str, change) -> str:
    """Change case character by character, as C++ runtimes do: a character
    whose other case is several characters (German eszett) stays as it is."""
    changed = change(word)
    if len(changed) == len(word):
        return changed
    return "".join(c2 if len(c2 := change(c)) == 1 else c for c in word)


@op(
    "StringNormalizer",
    infer=_string_normalizer_infer,
    inputs=1,
    attrs={
        "case_change_action": Attr.STRING("NONE"),
        "is_case_sensitive": Attr.INT(0),
        "locale": Attr.STRING(""),
        "stopwords": Attr.STRINGS(()),
    },
)
def string_normalizer(x, *, case_change_action, is_case_sensitive, locale, stopwords):
    """Drop the stop words, then lower- or upper-case what is left."""
    if x.ndim not in (1, 2) or (x.ndim == 2 and x.shape[0] != 1):
        raise ValueError(f"the input must have shape [C] or [1, C], not {list(x.shape)!r}.")
    words = list(x.reshape(-1))
    if stopwords:
        if is_case_sensitive:
            stop = set(stopwords)
            words = [w for w in words if w not in stop]
        else:
            stop = {s.lower() for s in stopwords}
            words = [w for w in words if w.lower() not in stop]
    if case_change_action == "LOWER":
        words = [_change_case(w, str.lower) for w in words]
    elif case_change_action == "UPPER":
        words = [_change_case(w, str.upper) for w in words]
    if not words and x.size:
        words = [""]  # everything dropped: the spec's "empty value", one empty string
    return _strings(words, (1, len(words)) if x.ndim == 2 else (len(words),))


# -- StringSplit --------------------------------------------------------------------


def _string_split_infer(ctx: InferContext) -> list[Type | None]:
    shape = input_shape(ctx, 0)
    _require_strings(ctx, 0, "the input X")
    if shape is None:
        return [TensorType(DType.STRING, None), TensorType(DType.INT64, None)]
    # The padded width is the most substrings of any element: data dependent.
    return [TensorType(DType.STRING, (*shape, unknown_dim())), TensorType(DType.INT64, shape)]


@op(
    "StringSplit",
    infer=_string_split_infer,
    inputs=1,
    outputs=2,
    attrs={"delimiter": Attr.STRING(None), "maxsplit": Attr.INT(None)},
)
def string_split(x, *, delimiter, maxsplit):
    """Split every element on ``delimiter`` (on whitespace runs when it is unset
    or empty); pad the substrings with empty strings to a common width."""
    limit = -1 if maxsplit is None else maxsplit
    if delimiter:
        # An empty string has no substrings (not one empty one).
        parts = [s.split(delimiter, limit) if s else [] for s in x.reshape(-1)]
    else:
        # Whitespace runs separate; leading and trailing whitespace is dropped,
        # also from an unsplit remainder.
        parts = [s.strip().split(None, limit) for s in x.reshape(-1)]
    lengths = np.array([len(p) for p in parts], dtype=np.int64).reshape(x.shape)
    width = max((len(p) for p in parts), default=0)
    padded = [s for p in parts for s in p + [""] * (width - len(p))]
    return _strings(padded, (*x.shape, width)), lengths


# -- StringConcat -----------------------------------------------------------------------


def _string_concat_infer(ctx: InferContext) -> list[Type | None]:
    _require_strings(ctx, 0, "the input X")
    _require_strings(ctx, 1, "the input Y")
    return broadcast(DType.STRING)(ctx)


@op("StringConcat", infer=_string_concat_infer, inputs=2)
def string_concat(x, y):
    """Elementwise concatenation with numpy broadcasting."""
    # ``+`` on object arrays concatenates the str elements.
    return np.asarray(np.add(x, y), dtype=object)


# -- RegexFullMatch ------------------------------------------------------------------------


def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(
            f"the pattern {pattern!r} is not a valid regular expression: {error}."
        ) from None


def _regex_infer(ctx: InferContext) -> list[Type | None]:
    t = _require_strings(ctx, 0, "the input X")
    pattern = ctx.attrs["pattern"]
    if pattern is None:
        raise ctx.error("the attribute 'pattern' is required.")
    try:
        _compile(pattern)
    except ValueError as error:
        raise ctx.error(str(error)) from None
    return [TensorType(DType.BOOL, t.shape if t is not None else None)]


@op("RegexFullMatch", infer=_regex_infer, inputs=1, attrs={"pattern": Attr.STRING(None)})
def regex_full_match(x, *, pattern):
    """True where the whole element matches ``pattern``."""
    regex = _compile(pattern)
    flat = [regex.fullmatch(s) is not None for s in x.reshape(-1)]
    return np.array(flat, dtype=bool).reshape(x.shape)


# -- TfIdfVectorizer ---------------------------------------------------------------------------


def _tfidf_width(ngram_indexes) -> int:
    return int(max(ngram_indexes)) + 1 if len(ngram_indexes) else 0


def _tfidf_infer(ctx: InferContext) -> list[Type | None]:
    attrs = ctx.attrs
    if attrs["mode"] not in ("TF", "IDF", "TFIDF"):
        raise ctx.error(f"mode {attrs['mode']!r} is not one of 'TF', 'IDF' or 'TFIDF'.")
    if (attrs["pool_strings"] is None) == (attrs["pool_int64s"] is None):
        raise ctx.error("exactly one of pool_strings and pool_int64s must be set.")
    if not 1 <= attrs["min_gram_length"] <= attrs["max_gram_length"]:
        raise ctx.error(
            f"min_gram_length {attrs['min_gram_length']!r} and max_gram_length "
            f"{attrs['max_gram_length']!r} must satisfy 1 <= min <= max."
        )
    weights = attrs["weights"]
    if weights is not None and len(weights) != len(attrs["ngram_indexes"]):
        raise ctx.error(
            f"weights has {len(weights)} entries but ngram_indexes has "
            f"{len(attrs['ngram_indexes'])}."
        )
    t = tensor_input(ctx, 0)
    if t is not None and (t.dtype is DType.STRING) != (attrs["pool_strings"] is not None):
        pool = "pool_strings" if attrs["pool_strings"] is not None else "pool_int64s"
        raise ctx.error(f"the input is {t.dtype}, which does not match {pool}.")
    if t is not None and t.dtype not in (DType.STRING, DType.INT32, DType.INT64):
        raise ctx.error(f"the input must be string, int32 or int64, not {t.dtype}.")
    shape = input_shape(ctx, 0)
    width = _tfidf_width(attrs["ngram_indexes"])
    if shape is None:
        return [TensorType(DType.FLOAT32, None)]
    if len(shape) == 1:
        return [TensorType(DType.FLOAT32, (width,))]
    if len(shape) == 2:
        return [TensorType(DType.FLOAT32, (shape[0], width))]
    raise ctx.error(f"the input must be 1-D or 2-D, not of rank {len(shape)}.")


def _pool_ngrams(pool: np.ndarray, ngram_counts, n: int) -> tuple[int, np.ndarray]:
    """(index of the first n-gram of length ``n``, the n-grams as rows [M, n])."""
    starts = list(ngram_counts) + [len(pool)]
    items = pool[starts[n - 1]:starts[n]]
    if len(items) % n:
        raise ValueError(
            f"the pool holds {len(items)} items for the {n}-grams, not a multiple of {n}."
        )
    # The n-gram number of the level's first entry: earlier levels hold
    # (starts[k+1] - starts[k]) / (k+1) n-grams each.
    first = sum((starts[k + 1] - starts[k]) // (k + 1) for k in range(n - 1))
    return first, items.reshape(-1, n)


def _encode_tokens(x: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """String tokens as int64 codes (equal strings, equal codes)."""
    vocab, codes = np.unique(np.concatenate([pool.astype(object), x.reshape(-1).astype(object)]),
                             return_inverse=True)
    codes = codes.astype(np.int64)
    return codes[len(pool):].reshape(x.shape), codes[:len(pool)]


@op(
    "TfIdfVectorizer",
    infer=_tfidf_infer,
    inputs=1,
    attrs={
        "max_gram_length": Attr.INT(),
        "max_skip_count": Attr.INT(),
        "min_gram_length": Attr.INT(),
        "mode": Attr.STRING(),
        "ngram_counts": Attr.INTS(),
        "ngram_indexes": Attr.INTS(),
        "pool_int64s": Attr.INTS(None),
        "pool_strings": Attr.STRINGS(None),
        "weights": Attr.FLOATS(None),
    },
)
def tfidf_vectorizer(x, *, max_gram_length, max_skip_count, min_gram_length, mode,
                     ngram_counts, ngram_indexes, pool_int64s, pool_strings, weights):
    """Count the pool's n-grams in each row of ``x`` (n-grams may skip up to
    ``max_skip_count`` items between their elements), then weight the counts."""
    rows = x.reshape(1, -1) if x.ndim == 1 else x
    if pool_strings is not None:
        rows, pool = _encode_tokens(rows, np.array(pool_strings, dtype=object))
    else:
        pool = np.asarray(pool_int64s, dtype=np.int64)
        rows = rows.astype(np.int64)
    indexes = np.asarray(ngram_indexes, dtype=np.int64)
    counts = np.zeros((rows.shape[0], _tfidf_width(ngram_indexes)), dtype=np.float32)
    length = rows.shape[1]
    for n in range(min_gram_length, min(max_gram_length, len(ngram_counts)) + 1):
        first, grams = _pool_ngrams(pool, ngram_counts, n)
        if not len(grams):
            continue
        # A unigram is the same whatever the skip: count it once.
        for skip in range(max_skip_count + 1 if n > 1 else 1):
            stride = skip + 1
            span = (n - 1) * stride + 1
            if span > length:
                break
            starts = np.arange(length - span + 1)
            windows = rows[:, starts[:, None] + stride * np.arange(n)]  # [N, P, n]
            which = _match_rows(windows.reshape(-1, n), grams)
            hit = which >= 0
            row_of = np.repeat(np.arange(rows.shape[0]), len(starts))
            np.add.at(counts, (row_of[hit], indexes[first + which[hit]]), 1.0)
    if mode == "IDF":
        counts = np.minimum(counts, 1.0)
    if mode in ("IDF", "TFIDF") and weights is not None:
        scale = np.zeros(counts.shape[1], dtype=np.float32)
        scale[indexes] = np.asarray(weights, dtype=np.float32)
        counts = counts * scale
    return counts.reshape(-1) if x.ndim == 1 else counts


def _match_rows(windows: np.ndarray, grams: np.ndarray) -> np.ndarray:
    """For each row of ``windows`` the index of the equal row of ``grams`` (the
    last one if repeated), or -1."""
    both = np.concatenate([grams, windows])
    _, inverse = np.unique(both, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    table = np.full(len(both), -1, dtype=np.int64)
    table[inverse[:len(grams)]] = np.arange(len(grams))  # later entries win
    return table[inverse[len(grams):]]
