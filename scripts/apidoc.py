"""Generate the API reference ``docs/api/*.md`` from the docstrings of Heli's public API.

The public API is what each public module exports in ``__all__``; one page per
module, plus ``docs/api/README.md`` (an index). ``--check`` writes nothing and
fails (exit 1) when a committed page differs from what the docstrings give,
naming the stale pages: run ``python scripts/apidoc.py`` after changing a
public docstring or signature.

    python scripts/apidoc.py [--check] [--out docs/api]
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import importlib
import inspect
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The public modules, in the order of the index (a vendor's path through the API).
MODULES = ("heli", "heli.target", "heli.ir", "heli.kernel", "heli.conformance")
OUT = ROOT / "docs" / "api"


def _clean(text: str) -> str:
    """Text without run-specific noise (object addresses)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def _doc(obj: object) -> str:
    """The docstring, its reStructuredText roles and literals as Markdown code."""
    doc = inspect.getdoc(obj)
    if not doc:
        return "*(no docstring)*"
    return _markdown(doc.strip())


def _markdown(text: str) -> str:
    """reStructuredText roles and literals as Markdown code."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


class _Raw(str):
    """An annotation string shown as written (not quoted)."""

    def __repr__(self) -> str:
        return str(self)


def _signature(obj: object, returns: bool = True) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    params = [p.replace(annotation=_Raw(p.annotation)) if isinstance(p.annotation, str) else p
              for p in sig.parameters.values()]
    ret = sig.return_annotation
    ret = inspect.Signature.empty if not returns else _Raw(ret) if isinstance(ret, str) else ret
    return _clean(str(sig.replace(parameters=params, return_annotation=ret)))


def _comments(source: str) -> dict[str, str]:
    """``#:`` comments by the name assigned on the line below them."""
    found: dict[str, str] = {}
    pending: list[str] = []
    for line in source.splitlines():
        text = line.strip()
        if text.startswith("#:"):
            pending.append(text[2:].strip())
            continue
        match = re.match(r"(\w+)\s*[:=]", text)
        if match and pending:
            found[match.group(1)] = _markdown(" ".join(pending))
        pending = []
    return found


def _source(obj: object) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def _class_attributes(cls: type) -> list[str]:
    """Public class attributes a subclass sets (e.g. ``Target.name``), with their comments."""
    if dataclasses.is_dataclass(cls) or issubclass(cls, enum.Enum):
        return []
    comments = _comments(_source(cls))
    lines = []
    for name, annotation in vars(cls).get("__annotations__", {}).items():
        if name.startswith("_"):
            continue
        default = f" = {_short_repr(vars(cls)[name], 80)}" if name in vars(cls) else ""
        note = f": {comments[name]}" if name in comments else ""
        lines.append(f"* **`{name}: {annotation}{default}`** (class attribute){note}")
    return lines


def _own_members(cls: type) -> list[tuple[str, object]]:
    """Public methods and properties defined by ``cls`` itself (not inherited)."""
    members = []
    for name, value in vars(cls).items():
        if name.startswith("_") and name != "__call__":
            continue
        if isinstance(value, staticmethod | classmethod):
            value = value.__func__
        if inspect.isfunction(value) or isinstance(value, property):
            members.append((name, value))
    return members


def _class_section(name: str, cls: type) -> list[str]:
    kind = "enum" if issubclass(cls, enum.Enum) else (
        "dataclass" if dataclasses.is_dataclass(cls) else "class")
    bases = [b.__name__ for b in cls.__bases__ if b is not object]
    head = f"{kind} {name}" + (f"({', '.join(bases)})" if bases and kind == "class" else "")
    lines = [f"### `{name}`", "", f"```python\n{head}{_init_signature(cls, kind)}\n```", "",
             _doc(cls), ""]
    if kind == "enum":
        lines += ["Members: " + ", ".join(f"`{m.name}`" for m in cls), ""]
    attributes = _class_attributes(cls)
    lines += [*attributes, ""] if attributes else []
    for member, value in _own_members(cls):
        if isinstance(value, property):
            lines += [f"* **`{member}`** (property): {_doc(value.fget)}"]
        else:
            doc = _doc(value).replace("\n", "\n  ")
            lines += [f"* **`{member}{_signature(value)}`**: {doc}"]
    if _own_members(cls):
        lines.append("")
    return lines


def _init_signature(cls: type, kind: str) -> str:
    if kind == "enum":
        return ""
    if "__init__" not in vars(cls) and not dataclasses.is_dataclass(cls):
        return ""
    return _signature(cls, returns=False)


def _short_repr(value: object, limit: int) -> str:
    text = _clean(repr(value))
    if len(text) <= limit:
        return text
    if hasattr(value, "__len__"):
        return f"<{type(value).__name__} of {len(value)} items>"
    return text[: limit - 3] + "..."


def _value_section(name: str, value: object, comment: str) -> list[str]:
    text = _short_repr(value, 300)
    return [f"### `{name}`", "", f"```python\n{name} = {text}\n```", "",
            *([comment, ""] if comment else [])]


def _module_comments(module_name: str) -> dict[str, str]:
    """``#:`` comments of the module and the private modules it re-exports from."""
    found: dict[str, str] = {}
    for name, module in sorted(sys.modules.items()):
        if name == module_name or name.startswith(module_name + "._"):
            found.update(_comments(_source(module)))
    return found


def module_page(module_name: str) -> str:
    module = importlib.import_module(module_name)
    names = list(module.__all__)
    lines = [f"# `{module_name}`", "",
             "*Generated by `scripts/apidoc.py` from the docstrings; do not edit.*", "",
             _doc(module), "", "## Contents", ""]
    lines += [f"* [`{n}`](#{n.lower().strip('_')})" for n in names]
    lines.append("")
    comments = _module_comments(module_name)
    for name in names:
        value = getattr(module, name)
        if inspect.isclass(value):
            lines += _class_section(name, value)
        elif inspect.isfunction(value) or inspect.isbuiltin(value):
            lines += [f"### `{name}`", "", f"```python\ndef {name}{_signature(value)}\n```", "",
                      _doc(value), ""]
        else:
            lines += _value_section(name, value, comments.get(name, ""))
    return "\n".join(lines).rstrip() + "\n"


def index_page() -> str:
    lines = ["# Heli API reference", "",
             "*Generated by `scripts/apidoc.py` from the docstrings of the public API (what "
             "each module exports in `__all__`); `python scripts/apidoc.py --check` says "
             "whether these pages are up to date.*", "",
             "| module | what |", "|---|---|"]
    for name in MODULES:
        first = " ".join(_doc(importlib.import_module(name)).split("\n\n")[0].split())
        lines.append(f"| [`{name}`]({name}.md) | {first} |")
    return "\n".join(lines) + "\n"


def pages() -> dict[str, str]:
    """File name -> content of every page."""
    result = {f"{name}.md": module_page(name) for name in MODULES}
    result["README.md"] = index_page()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="fail if the committed pages are not up to date; write nothing")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    wanted = pages()
    if args.check:
        stale = [n for n, text in wanted.items()
                 if not (args.out / n).is_file() or (args.out / n).read_text() != text]
        extra = sorted(p.name for p in args.out.glob("*.md") if p.name not in wanted) \
            if args.out.is_dir() else []
        if stale or extra:
            print(f"docs/api is out of date: stale {stale}, not generated {extra}; "
                  "run `python scripts/apidoc.py`.")
            return 1
        print(f"{args.out}: {len(wanted)} pages up to date.")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in wanted.items():
        tmp = args.out / f".{name}.tmp{os.getpid()}"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, args.out / name)
    print(f"wrote {len(wanted)} pages to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
