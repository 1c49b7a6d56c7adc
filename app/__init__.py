"""Outpost's Qt-free core: domain types, storage, settings and the chat service.

Nothing in this package imports Qt (checked by tests/test_layering.py), so the CLI and the
window share every line of behaviour.
"""
