import subprocess
import sys
import textwrap

import pytest

import heli
from heli.target import (
    TARGET_API_VERSION,
    Target,
    available_targets,
    get_target,
    register_target,
    target_problems,
)


def test_ref_target_is_found_through_its_entry_point():
    from importlib.metadata import entry_points

    names = {e.name: e.value for e in entry_points(group="heli.targets")}
    assert names["ref"] == "heli.targets.ref:RefTarget"
    assert "ref" in available_targets()
    assert get_target("ref").name == "ref"


def test_wrong_api_version_is_rejected_clearly():
    class Old(Target):
        name = "old"
        api_version = TARGET_API_VERSION + 41

        def supports(self, node):  # pragma: no cover
            raise AssertionError

        def compile(self, graph, options):  # pragma: no cover
            raise AssertionError

    with pytest.raises(heli.TargetError, match="written for target API version 42"):
        register_target(Old)


def test_broken_plugins_do_not_break_other_targets(tmp_path):
    """Plugins that fail to import, declare a wrong API version, or register a
    name twice are reported; `ref` keeps working."""
    package = tmp_path / "plugins"
    package.mkdir()
    (package / "broken_plugin.py").write_text("raise RuntimeError('boom')\n")
    (package / "old_plugin.py").write_text(textwrap.dedent("""
        from heli.targets.ref import RefTarget
        class Old(RefTarget):
            name = "old"
            api_version = 0
    """))
    dist = package / "fake_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[heli.targets]\nbroken = broken_plugin:Target\nold = old_plugin:Old\n"
        "ref = heli.targets.ref:RefTarget\n"
    )
    script = textwrap.dedent("""
        import heli.target as t
        problems = t.target_problems()
        print(sorted(t.available_targets()))
        for name in sorted(problems):
            print(name, '->', problems[name])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={"PYTHONPATH": str(package)}, check=True).stdout
    assert "broken -> The target plugin 'broken' failed to import: RuntimeError: boom." in out
    assert "old -> The target plugin 'old' was written for target API version 0" in out
    assert "ref -> Two plugins register the target name 'ref'" in out
    # With `ref` claimed twice neither is trusted; the other targets still load.
    assert "broken" not in out.splitlines()[0] and "old" not in out.splitlines()[0]


def test_problems_are_empty_in_a_clean_install():
    assert target_problems() == {}
