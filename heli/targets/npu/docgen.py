"""Regenerates the instruction reference of ``docs/npu.md`` from the ISA.

The section between the ``BEGIN``/``END`` markers is rewritten from
:mod:`heli.targets.npu.isa`; everything else in the file is written by hand.

    python -m heli.targets.npu.docgen           # rewrite docs/npu.md
    python -m heli.targets.npu.docgen --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from heli.targets.npu.isa import OPCODE_BITS, WORD_BITS, Field, InstrDef, instructions

BEGIN = "<!-- BEGIN GENERATED: npu-isa (python -m heli.targets.npu.docgen) -->"
END = "<!-- END GENERATED: npu-isa -->"
DOC_PATH = Path(__file__).resolve().parents[3] / "docs" / "npu.md"


def _bits(f: Field) -> str:
    return f"[{f.msb}:{f.lsb}]" if f.width > 1 else f"[{f.lsb}]"


def _range(f: Field) -> str:
    if f.enum is not None:
        return ", ".join(f"{int(m)} = `{m.name.lower()}`" for m in f.enum)
    return f"{f.min} .. {f.max}"


def _queue(d: InstrDef) -> str:
    if d.halts:
        return "fetch unit"
    return f"{d.queue.name.lower()} queue" if d.queue is not None else "queue in field `queue`"


def _md(text: str) -> str:
    """Prose from a docstring as Markdown: ``*`` outside code spans is literal."""
    parts = text.split("`")
    return "`".join(p if k % 2 else p.replace("*", "\\*") for k, p in enumerate(parts))


def _cell(text: str) -> str:
    return _md(text).replace("|", "\\|")


def _syntax(d: InstrDef) -> str:
    parts = [d.name]
    for f in d.fields:
        value = f"<{f.type_name}>"
        parts.append(f"[{f.name}={f.format(f.default)}]" if f.default is not None
                     else f"{f.name}={value}")
    return " ".join(parts)


def _title(d: InstrDef) -> str:
    return f"`{d.name}` — opcode `{d.opcode:#04x}`, {_queue(d)}"


def _anchor(title: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def _instruction(d: InstrDef) -> list[str]:
    summary, _, body = d.doc.partition("\n")
    out = [f"### {_title(d)}", "", _md(summary), ""]
    if body.strip():
        out += [_md(body.strip()), ""]
    out += ["```", _syntax(d), "```", ""]
    out += ["| bits | field | type | valid values | meaning |", "|---|---|---|---|---|",
            f"| [{OPCODE_BITS - 1}:0] | opcode | u{OPCODE_BITS} | `{d.opcode:#04x}` | |"]
    for f in d.fields:
        default = f" (default {f.format(f.default)})" if f.default is not None else ""
        out.append(f"| {_bits(f)} | `{f.name}` | {f.type_name} | {_range(f)} | "
                   f"{_cell(f.doc)}{default} |")
    if d.used_bits < WORD_BITS:
        out.append(f"| [{WORD_BITS - 1}:{d.used_bits}] | reserved | | 0 | must be zero |")
    return out + [""]


def render() -> str:
    """The generated section, markers included."""
    defs = instructions()
    out = [BEGIN, "", "<!-- Do not edit by hand: generated from heli/targets/npu/isa.py. -->",
           "", "### Opcode map", "",
           "| opcode | mnemonic | executed by | bits used | summary |", "|---|---|---|---|---|"]
    for d in defs:
        out.append(f"| `{d.opcode:#04x}` | [`{d.name}`](#{_anchor(_title(d))}) | "
                   f"{_queue(d)} | {d.used_bits} | {_cell(d.summary)} |")
    out.append("")
    for d in defs:
        out += _instruction(d)
    out.append(END)
    return "\n".join(out)


def update(text: str) -> str:
    """``text`` with its generated section replaced by :func:`render`."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the markers {BEGIN!r} and {END!r} are missing.")
    return text[:start] + render() + text[end + len(END):]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", type=Path, default=DOC_PATH)
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args(argv)
    old = args.path.read_text(encoding="utf-8")
    new = update(old)
    if args.check:
        if new != old:
            print(f"{args.path} is out of date: run python -m heli.targets.npu.docgen",
                  file=sys.stderr)
            return 1
        return 0
    if new != old:
        args.path.write_text(new, encoding="utf-8")
        print(f"updated {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
