"""Outpost's Qt-free core, in layers (bottom first; each imports only the ones below it, checked
by the import-linter contract in pyproject.toml):

    app.domain       plain data, the error tree, pure rules
    app.config       paths, settings, providers, keys, presets
    app.accounting   token counting, prices, context windows
    app.storage      the SQLite database: history, usage ledger, profiles, quotas, outbox
    (engines)        the backends, beside app.storage and independent of it
    app.chat         the turn pipeline, the chat service, the Auto router, best-of-n
    app.compose      the composition root: builds the core for a front end
    app.cli          the command line (with ui/, the window, on top)

Nothing here but ``app.cli`` (which can start the window) imports Qt.
"""
