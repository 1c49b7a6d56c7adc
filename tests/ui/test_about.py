"""Help ▸ About names the licences a user expects there (a trial: it had versions only):
Outpost's own, the bundled model's and the main libraries', each linked to its text."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel

pytestmark = pytest.mark.gui

ROOT = Path(__file__).resolve().parents[2]


def test_about_names_the_licences_with_links(qtbot, scripted):
    box = scripted.window.help_menu.show_about()
    qtbot.addWidget(box)
    text = box.text()
    credits = text[text.index("Licences"):]
    for what, licence in (("Outpost", "Apache-2.0"), ("SmolLM2-135M-Instruct", "Apache-2.0"),
                          ("Qt and PySide6", "LGPL-3.0"), ("llama.cpp", "MIT"),
                          ("llama-cpp-python", "MIT")):
        row = re.search(rf"{re.escape(what)}[^<]*(?:</a>)?</td><td>(.*?)</td>", credits)
        assert row and licence in row.group(1), (what, licence)
    links = re.findall(r'href="([^"]+)"', text)
    assert len(links) >= 8 and all(link.startswith("https://") for link in links)
    assert "huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct" in text
    # Outpost's licence is the package's own
    from ui.help_menu import APP_LICENCE

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert APP_LICENCE == project["license"]["text"]
    # the links open in the browser, by the mouse or the keyboard
    [label] = [label for label in box.findChildren(QLabel) if "Licences" in label.text()]
    assert label.openExternalLinks()
    assert label.textInteractionFlags() & Qt.TextInteractionFlag.LinksAccessibleByKeyboard
    box.close()
