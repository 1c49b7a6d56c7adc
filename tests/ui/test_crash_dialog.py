"""The dialog for an unexpected error (``ui.errors.install_excepthook``): a key this process
sent never shows in its traceback, nor in what it writes to stderr."""
from __future__ import annotations

import sys

from app.domain.secrets_mask import REDACTED, remember
from ui import errors

KEY = "sk-crash-test-0123456789abcdefKEYZ"


def test_the_crash_dialog_masks_a_key_the_process_used(qapp, monkeypatch, capsys):
    shown: list[str] = []
    monkeypatch.setattr(errors.QMessageBox, "exec",
                        lambda box: shown.append(box.detailedText()) or 0)
    saved = sys.excepthook
    try:
        errors.install_excepthook(lambda: None)
        remember(KEY)  # as the cloud engine does with the key it sends
        try:
            raise ValueError(f"Illegal header value b'Bearer {KEY}'")
        except ValueError as exc:
            sys.excepthook(type(exc), exc, exc.__traceback__)
    finally:
        sys.excepthook = saved
    [details] = shown
    assert "ValueError: Illegal header value b'Bearer " + REDACTED in details
    assert KEY not in details and KEY[:12] not in details
    assert KEY not in capsys.readouterr().err
