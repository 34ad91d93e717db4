"""docs/api/ is generated from the public API's docstrings (scripts/apidoc.py) and
must match them: after changing a public docstring or signature, run
``python scripts/apidoc.py``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_api_reference_is_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "apidoc.py"), "--check"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_names_a_stale_page(tmp_path):
    script = str(ROOT / "scripts" / "apidoc.py")
    subprocess.run([sys.executable, script, "--out", str(tmp_path)], check=True,
                   capture_output=True)
    page = tmp_path / "heli.target.md"
    assert "### `get_target`" in page.read_text()
    assert "The target registered as `name` (one shared instance)." in page.read_text()
    page.write_text(page.read_text() + "edited by hand\n")
    result = subprocess.run([sys.executable, script, "--check", "--out", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "stale ['heli.target.md']" in result.stdout
