"""Scorecards: how much of ONNX and of real models a target runs itself, and how well.

``heli conformance --target T --report DIR`` writes ``DIR/T.md`` and ``DIR/T.json``
from three parts:

* ONNX's per-operator node cases, run on the target alone (no fallback): a case
  the target does not claim is *unsupported* and counted apart from the cases it
  claims and passes or fails;
* the `light` CNNs shipped with onnx (against ONNX Runtime), also without fallback;
  one the target cannot run alone is also run as the real models are, with fallback;
* the real test models of :mod:`heli.testing` on small inputs, compiled for the
  target *with* fallback to ``ref``: accuracy against ``ref`` (the float model),
  and the share of the model's nodes, MACs and FLOPs the target runs itself.
  With ``quantize`` (the ``npu``'s int8 datapath) each model is first quantized
  to int8 with calibration on a few sample inputs, and the target's result is
  also checked against ``ref`` running the same quantized graph.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from heli.conformance._node import CaseResult

#: The tolerance a float target's model outputs must meet against ``ref``.
MODEL_RTOL = 1e-3
MODEL_ATOL = 1e-4
#: Conv-like and matrix ops: their multiply-accumulates are what "MACs" counts.
MAC_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "QConv", "QMatMul"})

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class RealModel:
    """A real test model and its inputs: ``load()`` gives the ONNX path, the
    input the scorecard runs, and a few more samples to calibrate int8 with."""

    name: str
    description: str
    load: Callable[[], tuple[Path, Feeds, list[Feeds]]]


def _ocr(kind: str, width: int, height: int = 48) -> Callable[[], tuple[Path, Feeds, list[Feeds]]]:
    def load() -> tuple[Path, Feeds, list[Feeds]]:
        from heli.testing import ocr_input, ppocr_model, render_text

        words = ("Heli compiler 42", "many chips", "invoice total", "open NPU")
        feeds = [{"x": ocr_input(render_text(w, height=height, width=width, font_size=24))}
                 for w in words]
        return ppocr_model(kind), feeds[0], feeds[1:]

    return load


def _image_model(getter: str) -> Callable[[], tuple[Path, Feeds, list[Feeds]]]:
    def load() -> tuple[Path, Feeds, list[Feeds]]:
        import heli.testing

        rng = np.random.default_rng(0)
        feeds = [{"input": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)}
                 for _ in range(3)]
        return getattr(heli.testing, getter)(), feeds[0], feeds[1:]

    return load


def _minilm() -> tuple[Path, Feeds, list[Feeds]]:
    from heli.testing import minilm_onnx

    rng = np.random.default_rng(0)
    feeds = []
    for _ in range(3):  # [CLS] 14 word-piece ids [SEP]
        ids = np.concatenate([[101], rng.integers(1000, 20000, 14), [102]])[None]
        feeds.append({"input_ids": ids.astype(np.int64),
                      "attention_mask": np.ones_like(ids, np.int64),
                      "token_type_ids": np.zeros_like(ids, np.int64)})
    return minilm_onnx(), feeds[0], feeds[1:]


REAL_MODELS = (
    RealModel("ppocr-det", "PP-OCRv4 text detection, a 64x320 rendered line", _ocr("det", 320, 64)),
    RealModel("ppocr-rec", "PP-OCRv4 text recognition, a 48x320 rendered line", _ocr("rec", 320)),
    RealModel("ppocr-cls", "PP-OCR direction classifier, a 48x192 rendered line",
              _ocr("cls", 192)),
    RealModel("minilm", "all-MiniLM-L6-v2 sentence encoder, 16 tokens", _minilm),
    RealModel("resnet18", "ResNet-18 (random weights), 1x3x224x224", _image_model("resnet18_onnx")),
    RealModel("mobilenetv2", "MobileNetV2 (random weights), 1x3x224x224",
              _image_model("mobilenetv2_onnx")),
)


def real_models(pattern: str | None = None) -> list[RealModel]:
    """The real test models whose name contains ``pattern`` (all without one)."""
    return [m for m in REAL_MODELS if not pattern or pattern in m.name]


def light_as_real_model(path: Path) -> RealModel:
    """A `light` CNN as a :class:`RealModel` (seeded random feeds, as its conformance run)."""
    from heli.conformance._models import random_feeds

    def load() -> tuple[Path, Feeds, list[Feeds]]:
        return path, random_feeds(str(path), 0), [random_feeds(str(path), s) for s in (1, 2)]

    return RealModel(path.stem, "light CNN, random input", load)


@dataclass
class ModelScore:
    """One real model on one target."""

    name: str
    description: str
    status: str  # "pass", "fail" (beyond tolerance), "error" (did not run) or "int8"
    detail: str = ""
    quantized: bool = False
    max_abs: float | None = None  # against ref on the float model
    max_rel: float | None = None  # max |error| / max |ref output|
    exact_vs_int8_ref: bool | None = None  # quantized: equal to ref on the same int8 graph
    nodes: dict[str, int] = field(default_factory=dict)  # per target that ran them
    macs: dict[str, int] = field(default_factory=dict)
    flops: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def node_costs(node: Any) -> tuple[int, int]:
    """(MACs, FLOPs) of one node with static shapes, counted as :mod:`heli.ir` stats do."""
    from heli.ir._stats import FLOP_COUNTERS, ZERO_FLOP_OPS, _elementwise_flops

    name = node.op.name
    if name in ZERO_FLOP_OPS:
        return 0, 0
    base = name[1:] if name in ("QConv", "QMatMul") else name
    flops = (FLOP_COUNTERS.get(base, _elementwise_flops)(node) or 0)
    return (flops // 2 if name in MAC_OPS else 0), flops


def placement_shares(model: Any) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Nodes, MACs and FLOPs per target of a compiled model's (only) specialization."""
    (spec,) = model.specializations.values()
    nodes: Counter[str] = Counter()
    macs: Counter[str] = Counter()
    flops: Counter[str] = Counter()
    for stage in spec.stages:
        for node in stage.graph.nodes:
            m, f = node_costs(node)
            nodes[stage.target] += 1
            macs[stage.target] += m
            flops[stage.target] += f
    return dict(nodes), dict(macs), dict(flops)


def _errors(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]
            ) -> tuple[float, float, bool]:
    """Max abs error, max error relative to the output's scale, and whether every
    output is within MODEL_RTOL / MODEL_ATOL."""
    abs_err = rel_err = 0.0
    close = True
    for name, w in want.items():
        w64, g64 = np.asarray(w, np.float64), np.asarray(got[name], np.float64)
        err = float(np.max(np.abs(g64 - w64))) if w64.size else 0.0
        scale = float(np.max(np.abs(w64))) if w64.size else 0.0
        abs_err, rel_err = max(abs_err, err), max(rel_err, err / scale if scale else err)
        close = close and bool(np.allclose(g64, w64, MODEL_RTOL, MODEL_ATOL))
    return abs_err, rel_err, close


def run_real_model(model: RealModel, target: str, quantize: bool = False) -> ModelScore:
    """Compile ``model`` for ``target`` with fallback to ``ref`` and score it."""
    import heli

    start = time.perf_counter()
    score = ModelScore(model.name, model.description, "error", quantized=quantize)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path, feeds, calib = model.load()
            shapes = {k: v.shape for k, v in feeds.items()}
            want = heli.compile(str(path), "ref", input_shapes=shapes).run(feeds)
            source: Any = str(path)
            if quantize:
                from heli.passes import QdqToInt
                from heli.quant import quantize as int8

                source = QdqToInt().apply(int8(str(path), [feeds, *calib], input_shapes=shapes,
                                               outputs=True))
            compiled = heli.compile(source, target, input_shapes=shapes, fallback=("ref",))
            got = compiled.run(feeds)
            if quantize:
                int8_ref = heli.compile(source, "ref", input_shapes=shapes).run(feeds)
                score.exact_vs_int8_ref = all(np.array_equal(got[k], v)
                                              for k, v in int8_ref.items())
        score.nodes, score.macs, score.flops = placement_shares(compiled)
        score.max_abs, score.max_rel, close = _errors(got, want)
        score.status = "int8" if quantize else "pass" if close else "fail"
        if not quantize and not close:
            score.detail = f"outside rtol {MODEL_RTOL} / atol {MODEL_ATOL} of ref"
    except Exception as error:  # a target's failure is a result, not a crashed report
        score.detail = f"{type(error).__name__}: {error}"[:500]
    score.seconds = time.perf_counter() - start
    return score


# -- the report ---------------------------------------------------------------


def _status_counts(results: Sequence[CaseResult]) -> dict[str, int]:
    counts = Counter(r.status for r in results)
    return {k: counts.get(k, 0) for k in ("pass", "fail", "unsupported")}


def scorecard(target: str, cases: Sequence[CaseResult], light: Sequence[CaseResult],
              models: Sequence[ModelScore], command: str = "",
              light_fallback: Sequence[ModelScore] = ()) -> dict[str, Any]:
    """The scorecard of ``target`` as a JSON-ready dict; ``light_fallback`` scores the
    `light` CNNs the target could not run alone, run with fallback to ``ref``."""
    import onnx

    import heli
    from heli.target import TARGET_API_VERSION, get_target

    info = get_target(target)
    per_op: dict[str, Counter[str]] = defaultdict(Counter)
    for r in cases:
        per_op[r.op][r.status] += 1
    summary = _status_counts(cases)
    claimed = summary["pass"] + summary["fail"]
    return {
        "target": target,
        "target_version": str(info.version or ""),
        "target_api_version": info.api_version,
        "heli_api_version": TARGET_API_VERSION,
        "description": info.description,
        "heli_version": heli.__version__,
        "onnx_version": onnx.__version__,
        "command": command,
        "node_cases": {
            "total": len(cases),
            **summary,
            "claimed": claimed,
            "pass_rate_of_claimed": round(summary["pass"] / claimed, 4) if claimed else None,
            "ops": len(per_op),
            "ops_claimed": sum(1 for c in per_op.values() if c["pass"] + c["fail"]),
            "per_op": {op: {k: c.get(k, 0) for k in ("pass", "fail", "unsupported")}
                       for op, c in sorted(per_op.items())},
            "failures": [{"name": r.name, "op": r.op, "detail": r.detail}
                         for r in cases if r.status == "fail"],
        },
        "light_models": {
            **_status_counts(light),
            "total": len(light),
            "models": [{"name": r.name, "status": r.status, "detail": r.detail} for r in light],
            "with_fallback": [_score_dict(m) for m in light_fallback],
        },
        "real_models": [_score_dict(m) for m in models],
    }


def _score_dict(score: ModelScore) -> dict[str, Any]:
    return {k: v for k, v in asdict(score).items() if k != "seconds"} | {
        "seconds": round(score.seconds, 2)}


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def render_markdown(card: Mapping[str, Any]) -> str:
    """The scorecard as a Markdown page."""
    t, nc, light = card["target"], card["node_cases"], card["light_models"]
    lines = [f"# Scorecard: target `{t}`", ""]
    version = f" {card['target_version']}" if card["target_version"] else ""
    lines += [f"{card['description'] or t} (target{version}, target API "
              f"v{card['target_api_version']}; Heli {card['heli_version']}, "
              f"onnx {card['onnx_version']}).", ""]
    if card["command"]:
        lines += [f"Generated by `{card['command']}`.", ""]
    lines += ["| | |", "|---|---|"]
    if nc["total"]:
        lines.append(f"| ONNX node cases claimed by `{t}` | {nc['claimed']} of {nc['total']} "
                     f"({_pct(nc['claimed'], nc['total'])}), in {nc['ops_claimed']} of "
                     f"{nc['ops']} ops |")
        lines.append(f"| claimed cases passed | **{nc['pass']} / {nc['claimed']} "
                     f"({_pct(nc['pass'], nc['claimed'])})** |")
        lines.append(f"| all cases passed (unsupported count as not passed) | {nc['pass']} / "
                     f"{nc['total']} ({_pct(nc['pass'], nc['total'])}) |")
    if light["total"]:
        lines.append(f"| `light` CNNs (no fallback, vs ONNX Runtime) | {light['pass']} / "
                     f"{light['total']} passed, {light['unsupported']} unsupported |")
    models = card["real_models"]
    if models:
        ran = [m for m in models if m["status"] != "error"]
        macs = sum(m["macs"].get(t, 0) for m in ran)
        total = sum(sum(m["macs"].values()) for m in ran)
        lines.append(f"| real models run (with fallback to `ref`) | {len(ran)} / {len(models)}; "
                     f"{_pct(macs, total)} of their MACs on `{t}` |")
    lines.append("")
    if models:
        lines += _model_section(t, models)
    if light["total"]:
        lines += _light_section(t, light)
    if nc["total"]:
        lines += _node_section(t, nc)
    return "\n".join(lines).rstrip() + "\n"


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _model_section(t: str, models: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["## Real models", "",
             f"Compiled for `{t}` with fallback to `ref`; the error is against `ref` running "
             "the float model on the same input (relative error: max |error| / max |output|). "
             "Shares count the nodes, the multiply-accumulates of Conv/MatMul/Gemm, and all "
             "FLOPs (as `heli info` counts them) of the optimized graph by the target that ran "
             "them.", ""]
    if any(m["quantized"] for m in models):
        lines += ["Quantized: each model was first quantized to int8 (QDQ, min-max "
                  "calibration on 3 sample inputs) and its integer ops fused "
                  "(`heli.passes.QdqToInt`); *exact* says whether the result equals `ref` "
                  "running the same int8 graph bit for bit. The error against the float "
                  "model is the quantization error, not judged.", ""]
    lines += [f"| model | input | status | max abs err | max rel err | nodes on `{t}` "
              f"| MACs on `{t}` | FLOPs on `{t}` |", "|---|---|---|---|---|---|---|---|"]
    for m in models:
        status = m["status"]
        if m["exact_vs_int8_ref"] is not None:
            status += ", exact" if m["exact_vs_int8_ref"] else ", NOT exact"
        if m["status"] == "error":
            status += f": {_cell(m['detail'], 120)}"
        shares = [f"{_pct(d.get(t, 0), sum(d.values()))} of {sum(d.values()):,}" if d else "-"
                  for d in (m["nodes"], m["macs"], m["flops"])]
        lines.append(f"| {m['name']} | {m['description']} | {status} | {_num(m['max_abs'])} "
                     f"| {_num(m['max_rel'])} | {' | '.join(shares)} |")
    return [*lines, ""]


def _light_section(t: str, light: Mapping[str, Any]) -> list[str]:
    lines = ["## `light` CNNs", "", "Shipped with onnx; run on the target alone (no fallback) "
             "and compared with ONNX Runtime on seeded random inputs."]
    fallback = {m["name"]: m for m in light.get("with_fallback", [])}
    if fallback:
        lines[-1] += (f" Those `{t}` cannot run alone were also run with fallback to `ref`, as "
                      "the real models are (error against `ref`).")
    lines += ["", f"| model | alone on `{t}` | with fallback: status | max abs err "
              f"| MACs on `{t}` |", "|---|---|---|---|---|"]
    for m in light["models"]:
        alone = m["status"] + (f": {_cell(m['detail'], 100)}" if m["detail"] else "")
        f = fallback.get(m["name"])
        if f is None:
            lines.append(f"| {m['name']} | {alone} | | | |")
            continue
        status = f["status"] + (f": {_cell(f['detail'], 100)}" if f["status"] == "error" else "")
        macs = f"{_pct(f['macs'].get(t, 0), sum(f['macs'].values()))} of " \
               f"{sum(f['macs'].values()):,}" if f["macs"] else "-"
        lines.append(f"| {m['name']} | {alone} | {status} | {_num(f['max_abs'])} | {macs} |")
    return [*lines, ""]


def _node_section(t: str, nc: Mapping[str, Any]) -> list[str]:
    lines = ["## ONNX node cases", "",
             f"ONNX's generated backend cases (`onnx.backend.test.case`), run on `{t}` alone "
             f"(no fallback). *Unsupported*: `{t}` does not claim a node of the case, so it "
             "never ran; counted apart from failures.", "",
             "| op | cases | pass | fail | unsupported |", "|---|---|---|---|---|"]
    unclaimed = []
    for op, c in nc["per_op"].items():
        if c["pass"] + c["fail"] == 0:
            unclaimed.append(op)
            continue
        total = c["pass"] + c["fail"] + c["unsupported"]
        lines.append(f"| {op} | {total} | {c['pass']} | {c['fail'] or ''} | "
                     f"{c['unsupported'] or ''} |")
    lines.append("")
    if unclaimed:
        lines += [f"Ops with no claimed case ({len(unclaimed)}): {', '.join(unclaimed)}.", ""]
    if nc["failures"]:
        lines += ["### Failing cases", "", "| case | why |", "|---|---|"]
        lines += [f"| {f['name']} | {_cell(f['detail'])} |" for f in nc["failures"]]
        lines.append("")
    return lines


def write_report(directory: Path, card: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``<target>.md`` and ``<target>.json`` into ``directory``, each atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / f"{card['target']}.md", directory / f"{card['target']}.json"
    texts = render_markdown(card), json.dumps(card, indent=1, ensure_ascii=False) + "\n"
    for path, text in zip(paths, texts, strict=True):
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return paths
