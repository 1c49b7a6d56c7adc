"""``outpost models``: the model library (``engines.model_library``): list, info, import,
rename, remove."""
from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import replace
from typing import Iterator

from app.chat.model_changes import ModelChanges, Renamed
from app.cli.commands.common import emit, emit_list
from app.config.settings import Settings
from app.domain.errors import ModelInvalid, UsageError
from app.domain.wording import counted
from app.storage.store import Store
from engines.model_download import Progress, download
from engines.model_files import file_sha256
from engines.model_library import ModelEntry, ModelLibrary, size_text
from engines.model_load import check_for_model, parse_value


def cmd_models(args: argparse.Namespace) -> int:
    settings = Settings()
    library = ModelLibrary.from_settings(settings)
    context = settings["context_cap"]
    action = args.models_command
    if action == "list":
        entries = library.entries()
        if args.json:
            emit_list([library.describe(e, context) for e in entries + library.adapters])
        else:
            for entry in entries:
                print(_line(entry, context))
            for entry in library.adapters:
                print(_line(entry, context, "LoRA adapter"))
            for problem in library.problems:
                sys.stderr.write(f"outpost: skipped: {problem}\n")
        return 0
    if action == "info":
        _show(library, library.find(args.model), context, args.json)
        return 0
    if action == "set":
        return _set(args, library, context)
    if action == "import":
        mode = "link" if args.link else "reference" if args.reference else "copy"
        _show(library, library.import_file(args.file, mode, args.name), context, args.json)
        return 0
    if action == "download":
        return _download(args, library, context)
    if action == "verify":
        entry = library.find(args.model)  # reads (and checks) the whole header
        digest = file_sha256(entry.path)
        wanted = args.sha256.strip().lower() if args.sha256 else None
        if args.json:
            emit({"name": entry.name, "path": str(entry.path), "sha256": digest,
                  "matches": None if wanted is None else digest == wanted})
        else:
            print(f"{entry.name}: GGUF header ok, sha256 {digest}")
        if wanted is not None and digest != wanted:
            raise ModelInvalid(f"{entry.name} does not match the sha256 given (expected "
                               f"{wanted}, got {digest}).")
        return 0
    if action == "rename":
        with _changes(library, settings) as changes:
            renamed = changes.rename(args.model, args.new_name)
        for note in _carried(renamed):
            sys.stderr.write(f"outpost: {note}\n")
        _show(library, renamed.entry, context, args.json)
        return 0
    if action == "remove":
        with _changes(library, settings) as changes:
            return _remove(args, changes)
    raise UsageError(f"Unknown models action {action!r}.")


@contextlib.contextmanager
def _changes(library: ModelLibrary, settings: Settings) -> Iterator[ModelChanges]:
    store = Store()
    try:
        yield ModelChanges(library, settings, store)
    finally:
        store.close()


def _carried(renamed: Renamed) -> list[str]:
    """What a rename carried, in words (nothing: no words)."""
    notes = []
    if renamed.setting:
        notes.append(f"the model_path setting now names {renamed.entry.name}.")
    if renamed.conversations:
        notes.append(f"{counted(renamed.conversations, 'conversation')} that remembered it "
                     f"now remember {renamed.entry.name}.")
    if renamed.usage_rows:
        notes.append(f"{counted(renamed.usage_rows, 'usage row')} now filed under "
                     f"{renamed.entry.path.name}.")
    return notes


def _remove(args: argparse.Namespace, changes: ModelChanges) -> int:
    """``models remove``: asks first (or --yes); the configured model is refused."""
    entry = changes.removable(args.model)
    if not args.yes:
        what = "forget the reference to" if entry.source == "reference" else "delete"
        if not sys.stdin.isatty():
            raise UsageError(f"Removing {entry.name} would {what} {entry.path}; pass --yes "
                             "to confirm.")
        answer = input(f"{what.capitalize()} {entry.path} ({size_text(entry.size)})? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            sys.stderr.write("outpost: nothing was removed.\n")
            return 0
    outcome = changes.remove(entry.name)
    removed = outcome.entry
    if outcome.conversations:
        sys.stderr.write(f"outpost: {counted(outcome.conversations, 'conversation')} that "
                         f"remembered {removed.name} will be answered by the configured "
                         "local model.\n")
    if args.json:
        emit({"removed": removed.name, "path": str(removed.path), "source": removed.source})
    else:
        print(f"Removed {removed.name}.")
    return 0


def _download(args: argparse.Namespace, library: ModelLibrary, context: int) -> int:
    """A progress line on stderr (redrawn on a terminal, every 10 % in a log), or JSON lines."""
    live = sys.stderr.isatty()
    shown = {"tenth": -1}

    def progress(p: Progress) -> None:
        if args.json:
            tenth = int((p.fraction or 0) * 100)
            if tenth != shown["tenth"]:
                shown["tenth"] = tenth
                emit({"event": "progress", "done": p.done, "total": p.total,
                      "speed_bps": round(p.speed_bps), "eta_s": _round(p.eta_s)})
            return
        line = (f"{size_text(p.done)}" + (f" of {size_text(p.total)} ({p.fraction:.0%})"
                                      if p.total else "")
                + f" · {size_text(int(p.speed_bps))}/s"
                + (f" · {p.eta_s:.0f} s left" if p.eta_s is not None else ""))
        tenth = int((p.fraction or 0) * 10)
        if live:
            sys.stderr.write(f"\routpost: {line}   ")
        elif tenth != shown["tenth"]:
            shown["tenth"] = tenth
            sys.stderr.write(f"outpost: {line}\n")

    def notice(text: str) -> None:
        sys.stderr.write(f"\noutpost: {text}\n" if live else f"outpost: {text}\n")

    try:
        entry = download(args.url, library, name=args.name, sha256=args.sha256,
                         on_progress=progress, on_notice=notice)
    finally:
        if live:
            sys.stderr.write("\n")
    if args.json:
        emit({"event": "done", **entry.describe(context)})
    else:
        print(f"Downloaded {entry.name} ({size_text(entry.size)}) into {entry.path.parent}.")
    return 0


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def _set(args: argparse.Namespace, library: ModelLibrary, context: int) -> int:
    """``models set MODEL KEY VALUE``: one load setting, checked against the model."""
    entry = library.find(args.model)
    value = parse_value(args.key, args.value)
    options = replace(library.load_settings.get(entry.name), **{args.key: value})
    check_for_model(options, name=entry.name, trained_context=entry.info.context_length,
                    layers=int(entry.info.metadata.get(
                        f"{entry.info.architecture}.block_count") or 0))
    library.load_settings.put(entry.name, options)
    if args.json:
        emit(library.describe(entry, context))
    else:
        shown = "auto" if value is None else ("on" if value is True else "off"
                                              if value is False else value)
        print(f"{entry.name}: {args.key} = {shown} (from its next load; the window reloads it "
              "in the background)")
    return 0


def _settings_text(options: dict) -> str:
    return ", ".join(f"{k} {'auto' if v is None else 'on' if v is True else 'off' if v is False else v}"
                     for k, v in options.items())


def _show(library: ModelLibrary, entry: ModelEntry, context: int, as_json: bool) -> None:
    data = library.describe(entry, context)
    if as_json:
        emit(data)
        return
    rows = [("name", data["name"]), ("path", data["path"]), ("source", data["source"]),
            ("architecture", data["architecture"]),
            ("parameters", f"{data['parameters'] / 1e6:,.0f} M"),
            ("quantization", data["quantization"]),
            ("trained context", f"{data['trained_context']:,}" if data["trained_context"]
             else "unknown"),
            ("chat template", "yes" if data["chat_template"] else "no (plain User:/Assistant:)"),
            ("license", data["license"] or "not given"), ("size", size_text(data["size_bytes"])),
            ("memory", f"about {size_text(data['memory_estimate_bytes'])} at a context of "
                       f"{data['context']:,}"),
            ("load settings", _settings_text(data["load_settings"]))]
    for label, value in rows:
        print(f"{label + ':':<16} {value}")


def _line(entry: ModelEntry, context: int, kind: str = "") -> str:
    data = entry.describe(context)
    return (f"{data['name']:<40} {data['quantization']:<7} "
            f"{data['parameters'] / 1e6:>7,.0f}M  {size_text(data['size_bytes']):>9}  "
            f"{data['source']}{'  ' + kind if kind else ''}")
