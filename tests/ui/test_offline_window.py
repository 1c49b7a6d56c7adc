"""Offline mode in the window opens no socket (issue 17): the switch turns the network layer's
guard on, then the Providers dialog's "Test connection", the model list of the picker and the
downloads' probe connect nowhere. Every connect of this process is recorded (``connects``)."""
from __future__ import annotations

import pytest
from PySide6.QtWidgets import QWidget

from app.chat.connectivity import Connectivity, LinkState
from app.config.providers import ProviderConfig, ProviderRegistry
from app.config.secrets import KeyStore
from app.config.settings import Settings
from app.domain.errors import OfflineModeOn
from engines import network_guard
from engines.model_library import ModelLibrary
from engines.registry import CloudEnginePool, CloudTargets
from tests.engines.test_offline_guard import ELSEWHERE, connects  # noqa: F401 (a fixture)

pytestmark = pytest.mark.gui


@pytest.fixture
def offline_window(qtbot):
    """The window's pieces that touch the network, with Offline mode switched on by the user."""
    from ui.offline_switch import OfflineSwitch
    from ui.tasks import TaskRunner

    settings = Settings()
    parent = QWidget()
    qtbot.addWidget(parent)
    switch = OfflineSwitch(settings, parent)
    switch.action.setChecked(True)  # Ctrl+Shift+O
    registry = ProviderRegistry()
    registry.add(ProviderConfig("remote", "openai", ELSEWHERE + "/v1", "m"))
    return {"settings": settings, "parent": parent, "switch": switch, "registry": registry,
            "keys": KeyStore(fallback="memory"), "tasks": TaskRunner(parent)}


def test_test_connection_and_model_lists_open_nothing_in_offline_mode(qtbot, offline_window,
                                                                        connects):  # noqa: F811
    from ui.providers_dialog import ProvidersDialog

    w = offline_window
    assert network_guard.offline_mode()
    dialog = ProvidersDialog(w["registry"], w["keys"], w["settings"], w["tasks"], w["parent"])
    qtbot.addWidget(dialog)
    dialog.reload(select="remote")
    dialog._on_test()
    assert dialog.result.text().startswith("✘ Offline mode is on: remote")
    assert dialog.test_button.isEnabled()
    # the picker's model list (CloudTargets.models, on a background thread in the window)
    targets = CloudTargets(w["registry"], w["keys"], CloudEnginePool())
    with pytest.raises(OfflineModeOn):
        targets.models("remote")
    assert connects == []

    w["switch"].action.setChecked(False)  # online again: the same test does try
    dialog._on_test()
    qtbot.waitUntil(lambda: "✘" in dialog.result.text(), timeout=20000)
    assert "Offline mode" not in dialog.result.text()
    assert ("connect", ("192.0.2.1", 9)) in connects


def test_the_downloads_probe_opens_nothing_in_offline_mode(qtbot, offline_window, tmp_path,
                                                          connects):  # noqa: F811
    from ui.downloads import Downloads, link_name

    w = offline_window
    links = Connectivity()
    downloads = Downloads(ModelLibrary(tmp_path / "models"), w["settings"], links,
                          w["parent"], tick_ms=60000)
    url = ELSEWHERE + "/notes.gguf"
    downloads.add(url)
    downloads.kick()  # the timer's tick
    assert downloads._thread is None
    assert downloads._online() is False
    assert links.probe(link_name(url), url) is LinkState.UNKNOWN  # asked directly: refused
    assert connects == []
    downloads.shutdown()

    w["switch"].action.setChecked(False)
    assert links.probe(link_name(url), url) is not LinkState.ONLINE
    assert ("connect", ("192.0.2.1", 9)) in connects
