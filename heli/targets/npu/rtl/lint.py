"""``verilator --lint-only -Wall`` on the generated Verilog, with the waivers of
``docs/npu.md`` ("RTL", "Lint") stated as code: every warning must match one
of :data:`WAIVERS`, each an idiom of Yosys' Verilog writer (through which
``amaranth.back.verilog`` goes) rather than a defect of the design."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_WARNING = re.compile(r"^%Warning-([A-Z0-9_]+): (?:[^:]+:\d+:\d+: )?(.*)$")
_EXTENDS = re.compile(r"expects (\d+) bits? on the (?:LHS|RHS), but .* generates (\d+) bits?\.$")


#: Yosys writes a variable part-select ``x[i*w +: w]`` (Amaranth's
#: ``bit_select`` / ``word_select``) as ``x >> (i*w)`` assigned to a w-bit wire.
_PART_SELECT = re.compile(r"^Operator ASSIGNW expects \d+ bits on the Assign RHS, but Assign "
                          r"RHS's SHIFTR generates \d+ bits\.$")


def _width_ok(message: str) -> bool:
    """Operand widening only (never truncation), ``!x`` of a multi-bit ``x``, or
    a variable part-select written as a right shift."""
    if message.startswith("Logical operator LOGNOT expects 1 bit"):
        return True
    if _PART_SELECT.match(message):
        return True
    m = _EXTENDS.search(message)
    return m is not None and int(m.group(2)) < int(m.group(1))


#: Warning kind -> (reason, predicate on the message).
WAIVERS = {
    "UNUSEDSIGNAL": ("Amaranth keeps a named wire for every signal and view member (for "
                     "debugging), and carry bits of wrapping adds are dropped on purpose",
                     lambda msg: True),
    "DECLFILENAME": ("one file holds every module; only the top-level's name matches it",
                     lambda msg: True),
    "CASEINCOMPLETE": ("Yosys writes each process as default assignments followed by a "
                       "case without a default branch", lambda msg: True),
    "WIDTH": ("Yosys relies on Verilog's implicit operand extension and writes a variable "
              "part-select as a right shift; only widening and those shifts are waived "
              "(any other truncation fails)", _width_ok),
}


@dataclass
class LintResult:
    returncode: int
    waived: Counter = field(default_factory=Counter)
    unexplained: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.unexplained


def verilator() -> str | None:
    """The verilator executable, or None."""
    return shutil.which("verilator")


def lint(path: str | Path, top: str | None = None) -> LintResult:
    """Runs ``verilator --lint-only -Wall`` on ``path`` and sorts its warnings."""
    exe = verilator()
    if exe is None:
        raise FileNotFoundError("verilator is not installed (make tools installs it).")
    cmd = [exe, "--lint-only", "-Wall", "-Wno-fatal", str(path)]
    if top:
        cmd += ["--top-module", top]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    result = LintResult(proc.returncode, output=proc.stderr + proc.stdout)
    for line in result.output.splitlines():
        if line.startswith("%Error"):
            result.unexplained.append(line)
            continue
        m = _WARNING.match(line)
        if m is None:
            continue
        kind, msg = m.groups()
        if kind in WAIVERS and WAIVERS[kind][1](msg):
            result.waived[kind] += 1
        else:
            result.unexplained.append(line)
    return result
