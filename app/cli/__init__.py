"""The ``outpost`` command line: one module per group of subcommands (``commands``), the parser
and ``main`` in ``app.cli.main``. The top layer with ``ui`` (``outpost gui`` starts the window)."""
from app.cli.main import main

__all__ = ["main"]
