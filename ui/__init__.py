"""Outpost's PySide6 window. Calls into ``app`` and ``engines``; never touches the database directly."""
