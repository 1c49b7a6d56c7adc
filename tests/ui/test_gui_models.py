"""Model ▸ Models… (issue 14): the library in the window, load settings that reload the model in
use in the background (the old one answering meanwhile), and downloads with a progress bar,
queued while offline, from a real HTTP server on loopback."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PySide6.QtWidgets import QPushButton

from tests.engines import test_model_download as downloads
from tests.support import grab_in_palette, send

pytestmark = pytest.mark.gui
# the loopback server of the engine's download tests (it can cut a download once)
server, model_bytes, model_digest = (downloads.server, downloads.model_bytes,
                                     downloads.model_digest)


@pytest.fixture
def held_server(bundled_model):
    """Serves the bundled GGUF; the body stops at 40 % until ``release`` is set."""
    data = bundled_model.read_bytes()
    state = {"release": threading.Event(), "requests": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 (http.server naming)
            state["requests"] += 1
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            cut = int(len(data) * 0.4)
            try:
                self.wfile.write(data[:cut])
                self.wfile.flush()
                state["release"].wait(60)
                self.wfile.write(data[cut:])
            except (BrokenPipeError, ConnectionResetError):
                pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/field-notes.gguf"
    yield state
    state["release"].set()
    httpd.shutdown()
    httpd.server_close()


def test_a_download_shows_progress_waits_offline_and_lands_in_the_library(
        qtbot, scripted, held_server, artifacts_dir):
    window = scripted.window
    dialog = window.model_menu.open_models()
    qtbot.addWidget(dialog)
    names = [e.name for e in dialog.entries]
    assert "SmolLM2-135M-Instruct.Q4_1" in names  # the bundled model

    # offline: queued, nothing is fetched, it says what it waits for
    scripted.settings.set("offline_mode", True)
    dialog.url.setText(held_server["url"])
    dialog.download_button.click()
    row = dialog.rows[held_server["url"]]
    assert "Waiting for the network" in row.state.text() and not row.bar.isVisible()
    assert held_server["requests"] == 0

    # back online: it starts by itself, with a progress bar, speed and time left
    scripted.settings.set("offline_mode", False)
    window.offline_mode_changed.emit()
    qtbot.waitUntil(lambda: dialog.rows.get(held_server["url"]) is not None and
                    dialog.rows[held_server["url"]].bar.value() >= 350, timeout=30000)
    row = dialog.rows[held_server["url"]]
    assert row.bar.isVisible() and "%" in row.bar.format() and "of 93.8 MiB" in row.bar.format()
    assert not any(e.name == "field-notes" for e in dialog.library.entries())  # half: not offered
    dialog.resize(980, 720)
    for theme_name in ("light", "dark"):
        grab_in_palette(qtbot, dialog, artifacts_dir / f"models-{theme_name}.png", theme_name)

    with qtbot.waitSignal(scripted.downloads.finished, timeout=60000):
        held_server["release"].set()
    qtbot.waitUntil(lambda: "field-notes" in [e.name for e in dialog.entries], timeout=10000)
    assert dialog.rows == {}  # the queue is empty


def test_a_bad_url_is_one_sentence_and_nothing_is_queued(qtbot, scripted):
    dialog = scripted.window.model_menu.open_models()
    qtbot.addWidget(dialog)
    dialog.url.setText("ftp://example.org/x.gguf")
    dialog.download_button.click()
    assert "is not an http(s) URL" in dialog.download_note.text()
    assert dialog.rows == {}


@pytest.mark.local_model
def test_new_load_settings_reload_the_model_in_use_while_the_old_one_answers(qtbot, outpost):
    window = outpost.window
    old = outpost.loader.active
    dialog = window.model_menu.open_models()
    qtbot.addWidget(dialog)
    dialog.select("SmolLM2-135M-Instruct.Q4_1")
    form = dialog.settings_form
    form.context.setValue(2048)
    form.threads.setValue(1)
    with qtbot.waitSignal(outpost.loader.loading_started, timeout=5000):
        assert form.apply()
    assert outpost.loader.engine_for_turn() is old  # the loaded model answers meanwhile
    assert "answers until it is ready" in window.model_status.state_label.text()
    qtbot.waitUntil(lambda: outpost.loader.active is not old, timeout=60000)
    new = outpost.loader.active
    assert (new.n_ctx, new.n_threads) == (2048, 1)
    assert window.model_label.text().endswith("CPU, 1 thread")
    send(qtbot, outpost, "Hello")
    assert outpost.store.list_conversations(window.profile_name)
    # a bad value is refused in the form, in one sentence
    form.context.setValue(9000)
    assert not form.apply() and "trained on 8,192 tokens" in form.error.text()
    # in the form's words, on a line of its own, whole (it was cut beside Apply)
    form.context.setValue(2048)
    form.kv_type.setCurrentIndex(form.kv_type.findText("q4_0"))
    form.flash_attn.setCurrentIndex(form.flash_attn.findText("off"))
    assert not form.apply()
    assert "turn flash attention (flash_attn) on" in form.error.text()
    assert "the KV cache (kv_type) to f16" in form.error.text()
    qtbot.wait(50)
    assert form.error.height() >= form.error.heightForWidth(form.error.width())


def test_a_reference_shows_renames_and_reloads_under_the_name_it_was_given(
        qtbot, outpost_app, tmp_path, bundled_model, monkeypatch):
    """A reference imported with a name is listed, renamed and given load settings under that
    name (the file keeps its own); new load settings reload it when it is the model in use,
    although its name is not its file's."""
    import shutil

    from engines.model_library import ModelLibrary
    from tests.support import ScriptedEngine
    from ui.model_manager import QInputDialog

    model = tmp_path / "tiny.gguf"
    shutil.copyfile(bundled_model, model)
    engine = ScriptedEngine(model="tiny.gguf")  # the window uses this file
    app = outpost_app(max_tokens=8, engine_factory=engine.factory)
    with qtbot.waitSignal(app.loader.model_ready, timeout=10000):
        app.start()
    ModelLibrary.from_settings(app.settings).import_file(model, "reference", name="smolref")
    dialog = app.window.model_menu.open_models()
    qtbot.addWidget(dialog)
    row = [e.name for e in dialog.entries].index("smolref")
    assert dialog.table.item(row, 0).text() == "smolref  (in use)"
    dialog.select("smolref")
    assert dialog.rename_button.isEnabled() and dialog.remove_button.isEnabled()
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("tiny-model", True))
    dialog.rename_button.click()
    assert dialog.selected().name == "tiny-model" and dialog.selected().path == model
    loads = len(engine.loads)
    dialog.settings_form.context.setValue(2048)
    assert dialog.settings_form.apply()
    assert dialog.library.load_settings.get("tiny-model").context == 2048
    qtbot.waitUntil(lambda: len(engine.loads) > loads, timeout=5000)  # reloaded: it is in use


def test_renaming_the_configured_model_moves_the_setting_and_removing_it_is_refused(
        qtbot, outpost_app, tmp_path, bundled_model, monkeypatch):
    """Models… ▸ Rename of the model the setting names renames it in the setting too (it named
    a file that was gone, and the next start or `outpost ask` failed); Remove of that model is
    refused, as `outpost models remove` refuses it."""
    import shutil

    from app.config.settings import Settings
    from engines.model_library import ModelLibrary
    from tests.support import ScriptedEngine
    from ui.model_manager import QInputDialog, QMessageBox

    model = tmp_path / "gem.gguf"
    shutil.copyfile(bundled_model, model)
    app = outpost_app(max_tokens=8, engine_factory=ScriptedEngine().factory)
    with qtbot.waitSignal(app.loader.model_ready, timeout=10000):
        app.start()
    entry = ModelLibrary.from_settings(app.settings).import_file(model, "link")
    app.settings.set("model_path", str(entry.path))  # as Use leaves it
    dialog = app.window.model_menu.open_models()
    qtbot.addWidget(dialog)
    dialog.select("gem")
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("gemma", True))
    dialog.rename_button.click()
    assert dialog.selected().name == "gemma"
    # what auto threads means, as the README and the engine say (it said "the physical cores")
    assert "auto: the n_threads setting if set, else the cores free now" in \
        dialog.settings_form.threads.toolTip()
    assert app.settings["model_path"] == str(entry.path.with_name("gemma.gguf"))
    assert Settings()["model_path"] == app.settings["model_path"]  # saved
    warnings = []
    monkeypatch.setattr(QMessageBox, "warning", lambda _p, _t, text: warnings.append(text))
    assert not dialog.remove("gemma")
    assert "gemma is the configured local model" in warnings[0]
    assert entry.path.with_name("gemma.gguf").exists()


def test_a_cut_download_says_how_to_resume_it_in_the_window(
        qtbot, scripted, server, model_bytes, artifacts_dir):
    """It said the command line's "…: run the same command again to resume." in the window,
    where there is no command: now "… Press Retry to resume it.", and Retry does."""
    server.cut_at = 0.37  # the connection drops once, the network stays up
    url = f"{server.url}/field-notes.gguf"
    dialog = scripted.window.model_menu.open_models()
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(scripted.downloads.failed, timeout=60000):
        dialog.url.setText(url)
        dialog.download_button.click()
    qtbot.waitUntil(lambda: url in dialog.rows and
                    dialog.rows[url].state.text().startswith("Failed:"), timeout=10000)
    row = dialog.rows[url].state.text()
    assert row.startswith("Failed: The download of field-notes broke off: the server closed "
                          "the connection after ")
    assert row.endswith(" bytes are kept in field-notes.gguf.part. Press Retry to resume it.")
    assert "command" not in row
    assert dialog.download_note.text() == ""  # said once, on its row (it was said twice)
    dialog.resize(980, 720)
    for theme_name in ("light", "dark"):
        grab_in_palette(qtbot, dialog, artifacts_dir / f"models-download-cut-{theme_name}.png",
                        theme_name)

    retry = next(b for b in dialog.rows[url].findChildren(QPushButton) if b.text() == "Retry")
    with qtbot.waitSignal(scripted.downloads.finished, timeout=60000):
        retry.click()
    assert {"path": "/field-notes.gguf",
            "range": f"bytes={int(len(model_bytes) * 0.37)}-"} \
        in server.requests


def test_at_its_smallest_nothing_overlaps_and_the_url_field_shows_the_host(qtbot, scripted):
    """Resized to its minimum size, the "no GPU offload" note (two lines there) was drawn over
    the mlock check box, and the download fields shrank to "https://hugging…" and "s…"."""
    from PySide6.QtCore import QPoint, QRect

    dialog = scripted.window.model_menu.open_models()
    qtbot.addWidget(dialog)
    qtbot.waitExposed(dialog)
    form = dialog.settings_form
    form.gpu_note.setText("This llama.cpp build has no GPU offload: layers stay on the CPU.")
    form._say("A sentence long enough to take two lines or three at the smallest size of the "
              "dialog, which it must not draw over the Apply button.", "error")
    dialog.resize(dialog.minimumSizeHint())
    qtbot.waitUntil(lambda: dialog.width() < 980)

    def box(widget) -> QRect:
        return QRect(widget.mapTo(dialog, QPoint(0, 0)), widget.size())

    def settled() -> bool:  # every line of both sentences has its room
        return all(label.height() >= label.heightForWidth(label.width())
                   for label in (form.gpu_note, form.error))

    qtbot.waitUntil(settled, timeout=2000)
    shown = [form.mlock, form.gpu_note, form.error, form.apply_button]
    for upper, lower in zip(shown, shown[1:]):
        assert box(upper).bottom() < box(lower).top(), (upper, lower)
    assert box(form.apply_button).bottom() <= box(form).bottom()
    metrics = dialog.url.fontMetrics()
    assert dialog.url.width() > metrics.horizontalAdvance("https://huggingface.co/…") + 8
    assert dialog.sha256.width() > metrics.horizontalAdvance("sha256 (optional")


def test_without_gpu_offload_the_gpu_controls_are_disabled_and_use_is_off_for_the_model_in_use(
        qtbot, scripted, bundled_model, monkeypatch):
    """On a llama.cpp build without GPU offload, Settings' "Use the GPU" and Models' GPU layers
    are disabled and say why (they were enabled, "Use the GPU" ticked, while its text said it
    had no effect); "Use" is disabled for the model in use and enabled for another."""
    import llama_cpp

    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)
    in_use = [bundled_model.name]
    monkeypatch.setattr(scripted, "_model_in_use", lambda: in_use[0])

    settings = scripted.window.open_settings()
    qtbot.addWidget(settings)
    gpu = settings.rows["gpu_offload"]
    assert not gpu.field.isEnabled() and not gpu.reset_button.isEnabled()
    assert "has no GPU offload, so the model runs on the CPU" in gpu.description.text()
    assert "has no GPU offload" in gpu.field.toolTip()
    assert settings.rows["n_threads"].field.isEnabled()

    models = scripted.window.model_menu.open_models()
    qtbot.addWidget(models)
    names = [entry.path.name for entry in models.entries]
    models.table.selectRow(names.index(bundled_model.name))
    assert models.settings_form.isEnabled() and models.settings_form.threads.isEnabled()
    assert not models.settings_form.gpu_layers.isEnabled()
    assert "has no GPU offload" in models.settings_form.gpu_layers.toolTip()
    assert not models.use_button.isEnabled()
    assert "is the model in use" in models.use_button.toolTip()
    in_use[0] = "another.gguf"  # another model was chosen meanwhile
    models.refresh()
    assert models.use_button.isEnabled() and not models.settings_form.gpu_layers.isEnabled()
