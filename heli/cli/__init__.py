"""The ``heli`` command line."""

from heli.cli._main import main

__all__ = ["main"]
