"""User settings, by schema: every option has a type, a default and a description.

Stored as JSON in the config dir (never a secret: keys go to the OS keychain). Unknown keys in the
file are ignored with no loss of the known ones; a value of the wrong type falls back to the
default, with a warning. Nothing the user wrote is lost: ``save`` writes back unknown options
and the invalid values of options not changed since, as they were; a file that could not be read
at all (not JSON, bigger than 1 MB, nested too deep, not an object) gives the defaults and a
warning, and is kept beside the new one (``settings.json.damaged-<time>``) when settings are
saved. Reading never changes the file.
``SETTINGS_VERSION`` is bumped when an option changes meaning, so old files can be upgraded.
"""
from __future__ import annotations

import builtins
import getpass
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from app.config import paths
from app.config.file_schema import ConfigFile, ConfigFileInvalid, is_text, write_config
from app.domain.errors import FileWriteFailed, UsageError
from app.domain.routes import ROUTE_LABELS
from app.domain.sampling import BY_NAME as KNOBS

SETTINGS_VERSION = 1


@dataclass(frozen=True)
class Option:
    name: str
    type: type
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    # the minimum itself is not allowed: "greater than 0" (top_p, as its sampling knob)
    minimum_open: bool = False
    choices: tuple | None = None
    # where the Settings dialog shows it (one of GROUPS); "" = not shown there (state the
    # window keeps, e.g. the last profile)
    group: str = "General"
    # what changing it needs: "" (applies at once), "reload" (the local model), "restart"
    takes_effect: str = ""
    # its name in the Settings dialog; empty: made from ``name``
    label: str = ""
    # how the Settings dialog names each choice (a choice not here: capitalised)
    choice_labels: dict | None = None
    # a list option: the type of its items
    items: builtins.type | None = None  # ("type" here would be the field above)
    # a file's path: the Settings dialog's Browse… offers these files ("" : typed only)
    browse: str = ""
    # a text the Settings dialog edits on several lines (a system prompt)
    multiline: bool = False

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    @property
    def rule(self) -> str:
        """What a valid value is, in words: "a whole number from 256 to 1,048,576"."""
        if self.choices is not None:
            return "one of " + ", ".join(str(choice) for choice in self.choices)
        kind = _KINDS.get(self.type, f"a {self.type.__name__}")
        if self.items is not None:
            kind += " of " + _KINDS.get(self.items, self.items.__name__)
        if self.minimum is None or self.maximum is None:
            return kind
        if self.minimum_open:
            return f"{kind} {self.span}"
        return f"{kind} from {_number(self.minimum)} to {_number(self.maximum)}"

    @property
    def span(self) -> str:
        """Its range in words, as the command line's help gives a sampling knob's ("between 0
        and 2"; the Settings dialog shows it under the option); "" for an option without one."""
        if self.minimum is None or self.maximum is None:
            return ""
        if self.minimum_open:
            return f"greater than {_number(self.minimum)} and at most {_number(self.maximum)}"
        return f"between {_number(self.minimum)} and {_number(self.maximum)}"


def _number(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:,}"


def _knob_option(name: str, default: Any, description: str) -> Option:
    """A sampling knob's default for new conversations, with the knob's own type, range and
    name (``app.domain.sampling``): Settings takes what the Sampling panel and ``--top-p`` take,
    under the panel's name for it (it said "Max tokens per reply" for the panel's "Max tokens")."""
    knob = KNOBS[name]
    assert knob.low is not None and knob.high is not None, name
    return Option(name, knob.kind, default, description, knob.low, knob.high, label=knob.label,
                  minimum_open=knob.low_open)


_KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text",
          list: "a list"}
GROUPS = ("General", "Local model", "Network and failover", "Privacy", "Appearance")
TAKES_EFFECT = ("", "reload", "restart")


# ``takes_effect`` says what the window does with a change, from where each option is read:
# the load settings and ``model_path`` when a local model loads (engines/registry.py; the
# window loads it again, the old one answering meanwhile); the library, the key store, the
# cloud engines' timeouts and the default profile are built once at start (ui/app.py); the
# rest is read for each turn, or kept in step by the window from ``applied``.
SCHEMA: tuple[Option, ...] = (
    # -- General: how a new conversation is answered ------------------------------------------
    Option("system_prompt", str, "You are a helpful assistant.",
           "System prompt of new conversations.", label="System prompt", multiline=True),
    _knob_option("temperature", 0.7, "Sampling temperature."),
    _knob_option("top_p", 0.95, "Nucleus sampling: keep the smallest set of tokens whose "
                 "probabilities add up to top-p."),
    _knob_option("max_tokens", 512, "Most tokens one reply may have."),
    Option("user_id", str, "", "Name of this machine's default profile, created as the admin "
           "on first use (see `outpost profile`). Empty: the OS user.",
           takes_effect="restart", label="Default profile"),
    # -- Local model ------------------------------------------------------------------------------
    Option("model_path", str, "",
           "The local model: a name from `outpost models list`, or a GGUF file's path. Empty: "
           "the bundled SmolLM2-135M-Instruct (Q4_1).",
           group="Local model", takes_effect="reload", label="Model",
           browse="GGUF models (*.gguf)"),
    Option("models_dir", str, "",
           "Where imported models are kept. Empty: the models folder in Outpost's data "
           "folder.", group="Local model", takes_effect="restart", label="Models folder"),
    Option("shared_model_folders", list, [],
           "Read-only folders (a network share, a USB stick) scanned for GGUF models; Outpost "
           "never writes or deletes there.",
           group="Local model", takes_effect="restart", label="Shared model folders",
           items=str),
    Option("context_cap", int, 4096,
           "Upper bound of the local context window in tokens; the model's own trained context "
           "length is used when it is smaller.", 256, 1_048_576,
           group="Local model", takes_effect="reload", label="Context cap (tokens)"),
    Option("kv_cache_max_mb", int, 2048,
           "Disk space for saved conversation states (the local model's KV cache), so a long "
           "conversation resumes fast after a restart. 0: off.", 0, 1_048_576,
           group="Local model", takes_effect="reload", label="Saved conversation states (MB)"),
    Option("n_threads", int, 0,
           "CPU threads for the local model. 0: the cores free now, at most one per physical "
           "core (looked at again during each reply); a number fixes it.", 0, 512,
           group="Local model", takes_effect="reload", label="CPU threads"),
    Option("gpu_offload", bool, True,
           "Put all layers on the GPU when llama.cpp was built with GPU support.",
           group="Local model", takes_effect="reload", label="Use the GPU"),
    Option("reproducible_seeds", bool, True,
           "Local model: the same seed, prompt and knobs always give the same text (the prompt "
           "is evaluated as on a cold cache; a reply is evaluated again once written, so the "
           "follow-up evaluates only what is new). Off: llama-cpp-python's own cache reuse, "
           "without that guarantee.",
           group="Local model", takes_effect="reload", label="Reproducible replies"),
    # -- Network and failover ---------------------------------------------------------------------
    Option("default_route", str, "auto",
           "Route of conversations that have none of their own: Auto (the chosen provider "
           "first, the local model when it cannot answer), Local only (never leaves the "
           "machine) or Cloud only (the provider only; unreachable: the request waits in the "
           "outbox).",
           choices=("auto", "local", "cloud"), group="Network and failover",
           label="Default route",
           choice_labels={route.value: label for route, label in ROUTE_LABELS.items()}),
    Option("hedge_after_s", float, 2.5,
           "Auto route: when the cloud's first token is later than this, the local model starts "
           "too and the first to stream wins. 0 turns hedging off.", 0.0, 600.0,
           group="Network and failover", label="Start the local model after (s)"),
    Option("send_when_online", bool, False,
           "Auto route: when the provider cannot be reached, also queue the message in the "
           "outbox and send it once the provider is back (the local model answers now).",
           group="Network and failover", label="Send when back online"),
    Option("first_token_timeout_s", float, 30.0,
           "Cloud: give up when no text arrived this many seconds after sending.", 1.0, 600.0,
           group="Network and failover", takes_effect="restart",
           label="First-token timeout (s)"),
    Option("idle_timeout_s", float, 60.0,
           "Cloud: give up when the stream sends nothing (not even a keep-alive) for this many "
           "seconds.", 1.0, 600.0, group="Network and failover", takes_effect="restart",
           label="Idle timeout (s)"),
    Option("rate_limit_wait", bool, True,
           "When a profile's requests/tokens per minute are used up: wait (with a countdown) "
           "instead of refusing. The command line waits; the window says when to try again.",
           group="Network and failover", label="Wait when rate-limited"),
    # -- Privacy ----------------------------------------------------------------------------------
    Option("offline_mode", bool, False,
           "Offline mode: every conversation is answered on this computer, by the local "
           "model or a provider at localhost; no connection beyond it is opened.",
           group="Privacy", label="Offline mode"),
    Option("key_fallback", str, "refuse",
           "Where API keys go when no secure OS keychain exists: nowhere (Do not keep them), "
           "memory (Only this session) or a file (In a file only I can read). Chosen "
           "explicitly by the user.",
           choices=("refuse", "memory", "file"), group="Privacy", takes_effect="restart",
           label="API keys without a keychain", choice_labels={
               "refuse": "Do not keep them", "memory": "Only this session",
               "file": "In a file only I can read"}),
    # -- Appearance -------------------------------------------------------------------------------
    Option("theme", str, "system",
           "The window's colours: Follow the system (its light or dark scheme), Light or "
           "Dark.", choices=("system", "light", "dark"),
           group="Appearance", label="Theme",
           choice_labels={"system": "Follow the system", "light": "Light", "dark": "Dark"}),
    # -- not in the dialog: what the window remembers by itself -----------------------------------
    Option("last_profile", str, "",
           "The profile the window opens as (it asks for its PIN, if any). Empty: the default.",
           group=""),
    Option("chat_target", str, "local",
           "Who answers new messages in the window: 'local', or 'provider:NAME'.", group=""),
)

_BY_NAME = {option.name: option for option in SCHEMA}


def option_named(name: str) -> Option:
    option = _BY_NAME.get(name)
    if option is None:
        raise UsageError(f"There is no setting called {name!r}.")
    return option


def _coerce(option: Option, value: Any) -> Any:
    if option.type is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if option.type is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:  # a whole number hundreds of digits long
            raise ValueError from None
    if not isinstance(value, option.type) or isinstance(value, bool) and option.type is not bool:
        raise TypeError
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError
    if isinstance(value, str) and not is_text(value):
        raise ValueError  # a lone surrogate ("\ud800" in JSON): not text that can be written
    if isinstance(value, list):
        if option.items is not None and not all(
                isinstance(item, option.items) and (option.items is not str or is_text(item))
                for item in value):
            raise TypeError
        value = list(value)  # a copy: the caller's list may change later
    if option.choices is not None and value not in option.choices:
        raise ValueError
    number = cast(float, value)  # a number here: min/max are set on numeric options only
    if option.minimum is not None and (number <= option.minimum if option.minimum_open
                                       else number < option.minimum):
        raise ValueError
    if option.maximum is not None and number > option.maximum:
        raise ValueError
    return value


class Settings:
    """The user's settings, loaded from and saved to one JSON file.

    ``load_warnings`` holds one sentence per problem found in the file (the CLI prints them on
    stderr, the window shows them); the file itself is never changed by reading it."""

    def __init__(self, path: Path | None = None):
        self.path = path or paths.settings_path()
        self._values: dict[str, Any] = {o.name: o.default for o in SCHEMA}
        self.load_warnings: list[str] = []
        # what the file holds that is not used (unknown options, invalid values): written back
        # as it was by ``save`` unless the option is set since
        self._kept: dict[str, Any] = {}
        self._damaged = False  # the file could not be read at all: set aside before a save
        self._load()

    def _load(self) -> None:
        file = ConfigFile(self.path, "settings file")
        try:
            raw = file.read()
        except FileNotFoundError:
            return
        except ConfigFileInvalid as exc:
            self._damage(str(exc))
            return
        values = raw.get("values") if isinstance(raw, dict) else None
        if values is None and isinstance(raw, dict) and "version" not in raw:
            values = raw  # written by hand: {"offline_mode": true} means what it says
        if values is None and isinstance(raw, dict):
            return  # {"version": 1} and nothing else: all defaults
        if not isinstance(raw, dict):
            self._damage(str(file.wrong("", "an object", raw)))
            return
        if not isinstance(values, dict):
            self._damage(str(file.wrong("values", "an object of setting names and values",
                                        values)))
            return
        for name, value in values.items():
            option = _BY_NAME.get(name) if is_text(name) else None
            if option is None:
                self._kept[name] = value  # a newer version's option: kept, not used
                continue
            try:
                self._values[name] = _coerce(option, value)
            except (TypeError, ValueError):
                self._kept[name] = value
                self.load_warnings.append(
                    f"Setting {name}={_shown(value)} in {self.path} is invalid (it must be "
                    f"{option.rule}); the default {option.default!r} is used.")

    def _damage(self, problem: str) -> None:
        self._damaged = True
        self.load_warnings.append(f"{problem.removesuffix('.')}; the defaults are used and the "
                                  "file is left as it is.")

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def set(self, name: str, value: Any) -> None:
        self._values[name] = self.check(name, value)
        self._kept.pop(name, None)

    @staticmethod
    def check(name: str, value: Any) -> Any:
        """``value`` as ``set`` would keep it, without keeping it (the Settings dialog checks
        each field as it is typed). Raises UsageError saying what a valid value is."""
        option = option_named(name)
        try:
            return _coerce(option, value)
        except (TypeError, ValueError):
            raise UsageError(f"Setting {name} must be {option.rule}; got {value!r}.") from None

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def save(self) -> None:
        """Write atomically (``write_atomic``: temp file, fsync, rename), so a crash or a full
        disk never leaves half a file; raises ``FileWriteFailed`` (one sentence) when it cannot.
        A file that could not be read is first kept as ``<name>.damaged-<time>``."""
        # the user's invalid values as they wrote them, and the options this version does not know
        values = {**self._values, **self._kept}
        text = json.dumps({"version": SETTINGS_VERSION, "values": values}, indent=2,
                          sort_keys=True)
        aside = self._keep_damaged() if self._damaged else None
        try:
            write_config(self.path, text + "\n")
        except FileWriteFailed:
            if aside is not None:
                aside.unlink(missing_ok=True)  # the damaged file is still where it was
            raise
        self._damaged = False

    def _keep_damaged(self) -> Path | None:
        """A second name for the damaged file (a hard link: no space needed; a copy where the
        disk has no links), so replacing it loses nothing."""
        aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
        while aside.exists():
            aside = aside.with_name(aside.name + "-1")
        try:
            try:
                os.link(self.path, aside)
            except FileNotFoundError:
                return None  # removed meanwhile: nothing to keep
            except OSError:
                shutil.copyfile(self.path, aside)
        except OSError as exc:
            aside.unlink(missing_ok=True)
            raise FileWriteFailed(f"The settings could not be saved: the damaged {self.path} "
                                  f"could not be kept beside the new one "
                                  f"({(exc.strerror or str(exc)).lower()}); it is left as it is."
                                  ) from None
        return aside


def _shown(value: Any) -> str:
    """A file's value in a warning: short, one line."""
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def default_user_id(settings: Settings) -> str:
    if settings["user_id"]:
        return settings["user_id"]
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers)
        return "local"
