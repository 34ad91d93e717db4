"""Run ONNX node test cases on a Heli target; print failures and a summary.

    python scripts/opcheck.py [SUBSTRING ...] [--target ref] [--show-unsupported]

A developer's quick loop while writing ops; `heli conformance` is the full tool.
"""

import argparse
import collections

from heli.conformance import heli_runner, node_cases, run_case

parser = argparse.ArgumentParser()
parser.add_argument("patterns", nargs="*")
parser.add_argument("--target", default="ref")
parser.add_argument("--show-unsupported", action="store_true")
args = parser.parse_args()

cases = node_cases()
if args.patterns:
    cases = [c for c in cases if any(p in c.name for p in args.patterns)]
runner = heli_runner(args.target)
counts = collections.Counter()
for case in cases:
    result = run_case(case, runner)
    counts[result.status] += 1
    if result.status == "fail" or (args.show_unsupported and result.status == "unsupported"):
        print(f"{result.status.upper():11} {result.name}: {result.detail[:300]}")
print(f"{counts['pass']} passed, {counts['fail']} failed, {counts['unsupported']} unsupported")
