"""``outpost providers`` and ``outpost keys``: cloud providers and their API keys."""
from __future__ import annotations

import argparse
import getpass
import sys

from app.cli.commands.common import cloud_engine, emit_list, require_admin
from app.config.providers import PRESETS, ProviderConfig, ProviderRegistry, needs_key, preset_of
from app.config.secrets import KeyStore, mask
from app.domain.errors import UsageError
from engines import network_guard


def cmd_providers(args: argparse.Namespace) -> int:
    registry = ProviderRegistry()
    if args.providers_command == "presets":
        for key, preset in PRESETS.items():
            print(f"{key:13} {preset.kind:10} {preset.base_url:34} {preset.default_model}")
        return 0
    if args.providers_command in ("add", "remove"):
        require_admin(args, f"{args.providers_command} providers (every profile here uses "
                            "them)")
    if args.providers_command == "add":
        preset = PRESETS.get(args.preset or args.name.lower())
        if args.preset and preset is None:
            raise UsageError(f"There is no preset {args.preset!r}; see `outpost providers "
                             "presets`.")
        base_url = args.base_url or (preset.base_url if preset else None)
        if not base_url:
            raise UsageError("Give the provider's --base-url (or --preset).")
        existed = any(p.name == args.name for p in registry.list())
        if existed and not args.replace:
            raise UsageError(f"A provider called {args.name!r} already exists; add --replace "
                             "to change it (`outpost providers list` shows it).")
        config = registry.add(ProviderConfig(
            args.name, args.kind or (preset.kind if preset else "openai"), base_url,
            args.model or (preset.default_model if preset else "")), replace=args.replace)
        store_key = f"outpost keys set {config.name}"
        preset_used = PRESETS.get(preset_of(config) or "")
        if existed and KeyStore(fallback="file").get(config.name) is not None:
            hint = "Its stored key is kept."
        elif needs_key(config):
            hint = f"Store its key with: {store_key}"
        elif preset_used is not None:  # Ollama, vLLM, llama.cpp, LM Studio on this machine
            hint = f"A local server needs no key (if yours wants one: {store_key})."
        else:
            hint = f"If it needs a key: {store_key}"
        print(f"{'Replaced' if existed else 'Added'} provider {config.name} ({config.kind}, "
              f"{config.base_url}). {hint}")
        return 0
    if args.providers_command == "remove":
        registry.remove(args.name)
        keys = KeyStore(fallback="file")
        had_key = keys.get(args.name) is not None
        keys.delete(args.name)
        print(f"Removed provider {args.name}" + (" and its stored key." if had_key else "."))
        return 0
    if args.providers_command == "models":
        config = registry.get(args.name)
        # said before the key is looked up; the engine's client is guarded anyway
        network_guard.check_url(config.base_url, f"{config.name} ({config.base_url})")
        engine = cloud_engine(args.name, config.default_model or "-", None)
        try:
            for model in engine.list_models():
                print(model)
        finally:
            engine.close()
        return 0
    keys = KeyStore(fallback="file")
    rows = []
    for config in registry.list():
        key = keys.get(config.name)
        rows.append({"name": config.name, "kind": config.kind, "base_url": config.base_url,
                     "default_model": config.default_model, "key": mask(key) if key else None})
    if args.json:
        emit_list(rows)
    else:
        if not rows:  # (on stderr: stdout stays empty for a script)
            print("No providers yet: `outpost providers add NAME --preset PRESET` adds one "
                  "(`outpost providers presets` lists them).", file=sys.stderr)
        for row in rows:
            print(f"{row['name']:16} {row['kind']:9} {row['base_url']:40} "
                  f"{row['default_model'] or '-':24} key: {row['key'] or 'none'}")
    return 0

def cmd_keys(args: argparse.Namespace) -> int:
    if args.keys_command == "delete":
        ProviderRegistry().get(args.name)
        require_admin(args, "delete API keys (every profile here uses them)")
        keys = KeyStore(fallback="file")
        if keys.get(args.name) is None:
            print(f"No key was stored for {args.name}; nothing to forget.")
            return 0
        keys.delete(args.name)
        print(f"Forgot the key of {args.name}.")
        return 0
    if args.typed_key:
        raise UsageError("A key is never taken on the command line (it stays in your shell's "
                         "history and shows in the process list), so nothing was stored. Run "
                         f"`outpost keys set {args.name}` and paste it when asked, or pipe it "
                         "in; if it was a real key, think of replacing it at the provider.")
    ProviderRegistry().get(args.name)  # the provider must exist
    require_admin(args, "store API keys (every profile here uses them)")
    if sys.stdin.isatty():
        key = getpass.getpass(f"API key for {args.name} (not shown): ")
    else:  # all of it: a key wrapped over two lines is refused, not cut at the first
        key = sys.stdin.read()
    store = KeyStore(fallback="file" if args.insecure_file else "refuse")
    where = store.set(args.name, key)
    place = {"keychain": "the OS keychain", "file": f"{store.file_path} (mode 0600)"}[where]
    print(f"Stored the key {mask(key.strip())} for {args.name} in {place}.")
    return 0
