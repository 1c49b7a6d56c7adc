"""The composition root: builds every service once and passes it down."""
from __future__ import annotations

import gc
import logging
import sys
from typing import Callable

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from app.chat.connectivity import Connectivity
from app.chat.model_changes import ModelChanges
from app.compose import build_service, window_pipeline
from app.config.paths import resource
from app.config.providers import ProviderRegistry
from app.config.secrets import KeyStore
from app.config.settings import Settings, default_user_id
from app.domain.errors import BackupSkipped, OutpostError, ProfileError, UsageError
from app.storage.profiles import Profile, Profiles
from app.storage.store import Store
from engines.llama_local import gpu_offload_supported
from engines.model_library import ModelLibrary
from engines.model_load import NO_GPU_OFFLOAD
from engines.registry import CloudEnginePool, CloudTargets, cloud_timeouts, create_local_engine
from ui.chat_controller import ChatController
from ui.daily_backup import DailyBackup
from ui.damaged_database import CannotStartDialog, open_store_or_restore
from ui.downloads import Downloads
from ui.errors import install_excepthook
from ui.input_guard import install_input_guard
from ui.settings_dialog import Unavailable
from ui.interrupted_replies import interrupted_words, open_newest
from ui.main_window import MainWindow, WindowServices
from ui.model_loader import ModelLoader
from ui.model_manager import ModelManager
from ui.outbox_monitor import OutboxMonitor
from ui.outbox_panel import OutboxPanel
from ui.profiles_dialog import sign_in
from ui.providers_dialog import ProvidersDialog
from ui.tasks import TaskRunner
from ui.theme import apply_theme

log = logging.getLogger(__name__)


class OutpostApp:
    """Everything the window needs, built in one place (tests build it the same way)."""

    def __init__(self, settings: Settings | None = None, store: Store | None = None,
                 profile: Profile | None = None, engine_factory=None, flush_timer=None):
        """``profile``: who is signed in (default: the machine's default profile; ``run_gui``
        asks for the last profile's PIN before building the app).

        ``engine_factory(settings, model_path, on_attempt)`` builds the local engine each time a
        model is loaded; None: the real GGUF model (``create_local_engine``). ``flush_timer``
        paces the reply's renders (None: a QTimer, see ``ChatController``). Tests pass a scripted
        engine and a timer they fire by hand; everything else is built as for the user."""
        install_input_guard(QApplication.instance())  # the wheel and the focus ring, app-wide
        self.settings = settings or Settings()
        self.store = store or Store()
        self.profiles = Profiles(self.store)
        default = self.profiles.ensure_default(default_user_id(self.settings))
        profile = profile or default
        if profile is None:  # (run_gui asks who it is first: _sign_in_at_start)
            raise ProfileError(f"There is no profile named {default_user_id(self.settings)!r}"
                               " (it was removed): say which profile signs in.")
        self.service = build_service(self.store, self.settings, profile.name)
        self.recovered = self.service.recover_interrupted()  # a dead process's streaming replies
        self.ledger = self.service.ledger
        self.tasks = TaskRunner()
        # the day's backup: at start (run_gui opens the store without it) and as days change
        self.daily_backup = DailyBackup(self.store, self.tasks, self._on_backup_failed)
        # erasing a delete's words from the file rewrites the search index (~1 s at 100k
        # messages, bench/erase.py): off the GUI thread
        self.store.run_erasure = self._erase_in_background
        self.loader = ModelLoader(self.settings, self.tasks, on_attempt=self._on_attempt,
                                  engine_factory=engine_factory or create_local_engine)
        self.registry = ProviderRegistry()
        self.keys = KeyStore(fallback=self.settings["key_fallback"])
        self.connectivity = Connectivity()
        self.cloud_pool = CloudEnginePool(on_attempt=self._on_attempt,
                                          timeouts=cloud_timeouts(self.settings))
        self.cloud = CloudTargets(self.registry, self.keys, self.cloud_pool, self.connectivity)
        self.monitor = OutboxMonitor(self.settings, self.connectivity, self.service.outbox,
                                     self.cloud, self.tasks, self._watched_providers,
                                     ledger=self.ledger, keep_unsaved=self.service.keep_unsaved,
                                     quotas=self.service.quotas)
        self.library = ModelLibrary.from_settings(self.settings)
        self.downloads = Downloads(self.library, self.settings, self.connectivity)
        self._flush_timer = flush_timer
        self.controller: ChatController | None = None  # built with the window (it needs the view)
        services = WindowServices(
            store=self.store, settings=self.settings, loader=self.loader,
            registry=self.registry, tasks=self.tasks, connectivity=self.connectivity,
            outbox=self.service.outbox, monitor=self.monitor, profiles=self.profiles,
            profile=profile,
            providers_dialog_factory=lambda parent: ProvidersDialog(
                self.registry, self.keys, self.settings, self.tasks, parent,
                refusal=self._providers_refusal()),
            outbox_panel_factory=lambda parent, profile_of: OutboxPanel(
                self.service.outbox, parent, profile_of,
                default_route=lambda: self.settings["default_route"],
                links=self.connectivity, offline=lambda: self.settings["offline_mode"]),
            models_dialog_factory=lambda parent: ModelManager(
                self.library, self.downloads, self.settings["context_cap"],
                gpu_offload_supported(), self._model_in_use, parent,
                changes=ModelChanges(self.library, self.settings, self.store)),
            setting_notes=lambda: {} if gpu_offload_supported() else {
                "gpu_offload": Unavailable(NO_GPU_OFFLOAD)})
        self.window = MainWindow(services, self._make_controller)
        self.window.offline_mode_changed.connect(self._on_offline_toggled)
        self.window.theme_changed.connect(self._on_theme_changed)
        self._network_info = None
        for warning in self.settings.load_warnings:
            self.window.errors.present(UsageError(warning))
        # e.g. a leftover write-ahead log copied aside; replies a crash cut short
        self._tell(self.store.notes, self.recovered, profile.name)
        # a profile signing in is told of its replies a stop cut short while another was
        # signed in (after the window's own slot, which clears the banner)
        self.window.profile_button.profile_changed.connect(self._tell_interrupted)

    def _tell_interrupted(self, profile: Profile) -> None:
        try:
            replies = self.store.take_untold_interruptions(profile.name)
        except OutpostError as exc:
            self.window.errors.present(exc)
            return
        self._tell([], replies, profile.name)

    def _tell(self, notes: list[str], replies: list, profile: str) -> None:
        """``notes`` and what a stop cut short of ``profile``'s ``replies`` in the banner, with
        a button that opens the newest chat holding one (nothing when there is nothing)."""
        news = [*notes, *([interrupted_words(replies)] if replies else [])]
        if news:
            self.window.errors.inform(" ".join(news), open_newest(
                replies, self.store, profile, self.window.show_search_result))

    def _make_controller(self, view) -> ChatController:
        """The window's chat controller, rendering into the window's conversation ``view``."""
        self.controller = ChatController(
            window_pipeline(self.service, self.loader.engine_for_turn, self.cloud), self.loader,
            view, self.cloud, flush_timer=self._flush_timer)
        return self.controller

    def _model_in_use(self) -> str | None:
        """The file name of the local model the window uses (None: none loaded)."""
        engine = self.loader.active or self.loader.pending
        return engine.info.model if engine is not None else None

    def _on_theme_changed(self, name: str) -> None:
        apply_theme(QApplication.instance(), name)

    def _providers_refusal(self) -> str | None:
        """Why the profile signed in may not change providers or keys (None: it is the
        admin)."""
        try:
            self.profiles.require_admin(self.profiles.get(self.window.profile_name),
                                        "change providers or their API keys (every profile "
                                        "here uses them)")
        except OutpostError as exc:
            return str(exc)
        return None

    def _on_offline_toggled(self) -> None:
        if not self.settings["offline_mode"]:
            self._watch_os_network()
        self.monitor.tick()
        self.downloads.kick()

    def _watch_os_network(self) -> None:
        """Feed the OS's network-change news (Qt's QNetworkInformation: NetworkManager, glib,
        …) into the link tracker: probe at once when the network comes back. Not in Offline
        mode, where nothing about the network matters."""
        if self._network_info is not None or self.settings["offline_mode"]:
            return
        try:
            # deferred: optional; not every platform has a backend
            from PySide6.QtNetwork import QNetworkInformation

            if not QNetworkInformation.loadDefaultBackend():
                return
            info = QNetworkInformation.instance()
        except (ImportError, RuntimeError, AttributeError):
            return
        if info is None:
            return
        self._network_info = info
        info.reachabilityChanged.connect(lambda *_: self._on_os_network_changed())

    def _on_os_network_changed(self) -> None:
        self.connectivity.network_changed()
        self.monitor.tick()
        self.downloads.kick()

    def _watched_providers(self) -> list[str]:
        """The chosen provider, when the current conversation may use the cloud."""
        controller = self.controller
        if controller is None or controller.provider is None or \
                controller.effective_route() == "local":
            return []
        return [controller.provider]

    def _on_attempt(self, record) -> None:
        """Every attempt: a usage-ledger row, and news for the connectivity tracker."""
        self.ledger.record(record)
        self.connectivity.record_attempt(record)

    def start(self) -> None:
        """Show the window, and start loading the model on the engine's thread. Only the GGUF
        header is read here (tens of ms), so a bad file is reported at once; the weights load
        in the background while the window is already usable."""
        self.window.restore_state()
        self.window.show()
        self.loader.load(self.settings["model_path"] or None)
        self.window.update_route_display()
        self.window.outbox_button.refresh()
        self._watch_os_network()
        self.monitor.start()
        self.downloads.start()  # downloads left queued (offline, or the app closed) go on
        self.daily_backup.start()  # a copy of the whole file: off the GUI thread
        # What is built by now (modules, the window, the services) lives as long as the app:
        # out of the garbage collector's full passes, which walked all of it, holding the GIL
        # for 25-65 ms here, whichever thread ran them: a visible stall of the window
        # (bench/gui_event_loop.py, issue 16).
        gc.collect()
        gc.freeze()

    def _erase_in_background(self, erase: Callable[[], None]) -> None:
        """``Store.erase_deleted`` on the task pool (its thread's connection closed after)."""
        def job() -> None:
            try:
                erase()
            finally:
                self.store.release_thread_connection()

        self.tasks.run_in_background(job, lambda _: None, self._on_backup_failed)

    def _on_backup_failed(self, exc: Exception) -> None:
        """The day's backup (or the erasing after a delete) found the database damaged, or
        could not write: shown; a bug is raised to the excepthook."""
        if not isinstance(exc, OutpostError):
            raise exc
        if isinstance(exc, BackupSkipped):  # a warning: nothing the user does is refused
            log.warning("%s", exc)
            self.window.errors.inform(str(exc))
            return
        self.window.errors.present(exc)

    def shutdown(self) -> None:
        self.daily_backup.stop()
        self.monitor.stop()
        self.downloads.shutdown()
        self.window.controller.shutdown()
        self.loader.shutdown()
        self.cloud_pool.close()
        self.tasks.wait()
        self.store.close()


def run_gui() -> int:
    qt_app = QApplication.instance() or QApplication(sys.argv)
    qt_app.setApplicationName("Outpost")
    qt_app.setOrganizationName("Outpost")
    # Wayland desktops match the window to its menu entry (and icon) by this name
    qt_app.setDesktopFileName("io.github.outpost_app.Outpost")
    qt_app.setWindowIcon(QIcon(str(resource("outpost.svg"))))
    # from the first dialog on (the PIN prompt): the wheel, the focus ring, fitting the screen
    install_input_guard(qt_app)
    try:
        settings = Settings()
        apply_theme(qt_app, settings["theme"])  # before the first window (the PIN prompt)
        # opened once, shared with the app; a damaged database: say so, offer the newest backup
        store = open_store_or_restore()
        if store is None:
            return 0
        try:
            profile = _sign_in_at_start(settings, store)
        except BaseException:
            store.close()
            raise
    except OutpostError as error:  # (a home it cannot write): said in a dialog as well as on
        # stderr (the caller's), since a start from the applications menu has no terminal
        CannotStartDialog(error).exec()
        raise
    if profile is None:
        store.close()
        return 0
    outpost = OutpostApp(settings, store, profile=profile)
    install_excepthook(lambda: outpost.window)
    outpost.start()
    try:
        code = qt_app.exec()
    finally:
        outpost.shutdown()
    return code


def _sign_in_at_start(settings: Settings, store: Store) -> Profile | None:
    """The profile the window opens as: the last one used (else the default). One with a PIN
    asks for it first, offering the others; None when the user cancels. With neither (the
    default profile was removed, and is not made again) the user is asked who they are."""
    profiles = Profiles(store)
    name = default_user_id(settings)
    default = profiles.ensure_default(name)
    last = profiles.find(settings["last_profile"]) if settings["last_profile"] else None
    if last or default:
        return sign_in(profiles, (last or default).name, choose=True)
    admin = next(p for p in profiles.list() if p.is_admin)
    return sign_in(profiles, admin.name, choose=True, note=(
        f"There is no profile named {name} on this computer any more (it was removed). "
        "Choose yours:"))
