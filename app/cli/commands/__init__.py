"""The ``outpost`` subcommands, one module per group (``app.cli`` parses and dispatches)."""
