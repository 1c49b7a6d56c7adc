"""The ``outpost`` command: the window with no arguments, or headless subcommands.

Exit codes (also in ``outpost --help``):
  0 success · 1 unexpected error · 2 bad usage or unknown id · 3 model file problem ·
  4 engine failed while answering · 5 storage problem · 130 stopped (Ctrl+C / SIGTERM)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
from typing import Sequence

from app.errors import Cancelled, OutpostError, UsageError

EXIT_CODES = """exit codes:
  0    success
  1    unexpected error (a bug: please report it)
  2    bad usage: invalid flag value, unknown conversation id, empty prompt, or no secure
       keychain for a key (see `outpost keys set --help`)
  3    the model file is missing, not GGUF, truncated or could not be loaded
  4    the engine or provider failed: auth, rate limit, unavailable, timeout, connection
       (a partial answer is saved, marked interrupted)
  5    the database could not be read or written (disk full, locked, read-only)
  130  the reply was stopped (Ctrl+C or SIGTERM); the partial answer is saved

environment:
  OUTPOST_HOME   keep data and config under this folder instead of the user dirs
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="outpost",
        description="Outpost: chat with LLMs, online or offline. Without a command, opens the window.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ask = sub.add_parser("ask", help="send one message and stream the reply to stdout",
                         epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ask.add_argument("prompt", metavar="PROMPT", help="the message to send ('-' reads stdin)")
    where = ask.add_mutually_exclusive_group()
    where.add_argument("--new", action="store_true", help="start a new conversation (default)")
    where.add_argument("--conversation", metavar="ID", help="continue this conversation")
    ask.add_argument("--provider", metavar="NAME",
                     help="answer with this cloud provider (see `outpost providers list`); "
                          "default: the local model")
    ask.add_argument("--route", choices=["auto", "local", "cloud"],
                     help="local: only the local model, nothing leaves the machine; cloud: only "
                          "the provider (unreachable: queued in the outbox); auto: the provider, "
                          "with the local model hedging a slow first token, answering when the "
                          "provider cannot be reached and continuing a reply that broke off "
                          "(default: the conversation's route, else the default_route setting; "
                          "without --provider the local model answers). Saved on a new "
                          "conversation.")
    ask.add_argument("--offline", action="store_true",
                     help="offline mode for this message: the local model answers, no socket "
                          "is opened (the offline_mode setting does it for every message)")
    ask.add_argument("--send-when-online", action="store_true", dest="send_when_online",
                     help="route auto: if the provider cannot be reached, the local model "
                          "answers now and the message is also queued in the outbox for the "
                          "provider (route cloud queues it always)")
    ask.add_argument("--model", metavar="M", help="with --provider: the provider's model name; "
                     "otherwise a GGUF model file (default: the setting, else the bundled "
                     "SmolLM2-135M-Instruct)")
    ask.add_argument("--temperature", type=float, metavar="F")
    ask.add_argument("--top-p", type=float, metavar="F", dest="top_p")
    ask.add_argument("--max-tokens", type=int, metavar="N", dest="max_tokens")
    ask.add_argument("--stop", action="append", default=[], metavar="S",
                     help="stop sequence (repeatable)")
    ask.add_argument("--json", action="store_true",
                     help="print one JSON object per line, each with an \"event\" key")

    providers = sub.add_parser("providers", help="configure cloud providers")
    psub = providers.add_subparsers(dest="providers_command", metavar="ACTION", required=True)
    padd = psub.add_parser("add", help="add (or with --replace, change) a provider")
    padd.add_argument("name", metavar="NAME")
    padd.add_argument("--kind", choices=["openai", "anthropic"],
                      help="wire format (default: the preset's, else openai)")
    padd.add_argument("--base-url", dest="base_url", metavar="URL",
                      help="API base URL (default: the preset's)")
    padd.add_argument("--model", metavar="M", help="default model")
    padd.add_argument("--preset", metavar="P", help="start from a preset: " + ", ".join(
        sorted(__import__("app.providers", fromlist=["PRESETS"]).PRESETS)))
    padd.add_argument("--replace", action="store_true", help="overwrite an existing provider")
    plist = psub.add_parser("list", help="configured providers and whether a key is stored")
    plist.add_argument("--json", action="store_true")
    psub.add_parser("presets", help="the built-in presets")
    premove = psub.add_parser("remove", help="remove a provider (and its stored key)")
    premove.add_argument("name", metavar="NAME")
    pmodels = psub.add_parser("models", help="list the provider's models (GET /models)")
    pmodels.add_argument("name", metavar="NAME")

    keys = sub.add_parser("keys", help="API keys, kept in the OS keychain")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    kset = ksub.add_parser("set", help="store a provider's key (read from stdin, not echoed)")
    kset.add_argument("name", metavar="NAME")
    where = kset.add_mutually_exclusive_group()
    where.add_argument("--insecure-file", action="store_true",
                       help="no secure keychain here: store it in a file only you can read (0600)")
    kdel = ksub.add_parser("delete", help="forget a provider's key")
    kdel.add_argument("name", metavar="NAME")

    outbox = sub.add_parser("outbox", help="messages waiting for a cloud provider to be "
                            "reachable again")
    osub = outbox.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    olist = osub.add_parser("list", help="queued (and failed) items, oldest first")
    olist.add_argument("--all", action="store_true", help="sent and cancelled items too")
    olist.add_argument("--json", action="store_true")
    osend = osub.add_parser("send", help="send queued items now, in order, each once; exit 4 "
                            "when some could not be sent (items another Outpost process is "
                            "sending are left to it)")
    osend.add_argument("id", metavar="ID", nargs="?", type=int, help="only this item")
    osend.add_argument("--json", action="store_true")
    ocancel = osub.add_parser("cancel", help="cancel a queued item (its message stays)")
    ocancel.add_argument("id", metavar="ID", type=int)

    usage = sub.add_parser("usage", help="tokens, requests and cost today (or this month), "
                           "from the usage ledger")
    usage.add_argument("--profile", metavar="P", help="whose usage (default: yours; 'all': "
                       "everyone on this machine)")
    usage.add_argument("--month", action="store_true", help="this calendar month, not today")
    usage.add_argument("--json", action="store_true")

    quota = sub.add_parser("quota", help="per-profile quotas and rate limits (the policy file "
                           "wins over these)")
    qsub = quota.add_subparsers(dest="quota_command", metavar="ACTION", required=True)
    qshow = qsub.add_parser("show", help="a profile's limits and where they come from")
    qshow.add_argument("--profile", metavar="P")
    qshow.add_argument("--json", action="store_true")
    qset = qsub.add_parser("set", help="set a limit: cloud_tokens_per_day, cloud_cost_per_month, "
                           "requests_per_minute, tokens_per_minute, allowed_routes (comma list), "
                           "count_local (true/false); 'none' removes it")
    qset.add_argument("name", metavar="NAME")
    qset.add_argument("value", metavar="VALUE")
    qset.add_argument("--profile", metavar="P")

    offline = sub.add_parser("offline", help="Offline mode: every message answered by the "
                             "local model, nothing sent (the window's Offline mode switch)")
    offline.add_argument("switch", choices=["on", "off", "status"], nargs="?", default="status")

    history = sub.add_parser("history", help="list or show stored conversations")
    hsub = history.add_subparsers(dest="history_command", metavar="ACTION", required=True)
    hlist = hsub.add_parser("list", help="conversations, newest first")
    hlist.add_argument("--json", action="store_true")
    hshow = hsub.add_parser("show", help="the messages of one conversation")
    hshow.add_argument("id", metavar="ID")
    hshow.add_argument("--json", action="store_true")
    hsearch = hsub.add_parser("search", help="full-text search over all messages")
    hsearch.add_argument("query", metavar="QUERY")
    hsearch.add_argument("--json", action="store_true")
    return parser


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _open_core():
    from app.chat_service import ChatService
    from app.settings import Settings
    from app.store import Store

    settings = Settings()
    for warning in settings.load_warnings:
        sys.stderr.write(f"outpost: warning: {warning}\n")
    from app.ledger import make_ledger

    store = Store()
    service = ChatService(store, settings)
    service.ledger = make_ledger(store, settings)
    from app.quotas import QuotaBook, QuotaGuard

    service.quotas = QuotaGuard(QuotaBook(), service.ledger)
    service.recover_interrupted()
    return settings, store, service


def _read_prompt(value: str) -> str:
    return sys.stdin.read() if value == "-" else value


def cmd_ask(args: argparse.Namespace) -> int:
    from app.chat_service import TurnOptions
    from app.domain import Finished, FinishReason, Seam, TextDelta, Usage
    from app.chat_service import OutboxPlan
    from app.quotas import RateLimitedLocally
    from app.router import Route

    settings, store, service = _open_core()
    cancel = threading.Event()

    def _stop(signum, frame):  # first signal stops the reply cleanly; a second one kills
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()

    signal.signal(signal.SIGINT, _stop)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _stop)

    conversation = store.get_conversation(args.conversation) if args.conversation else None
    engine, decision = _route_engine(args, settings, service, conversation)
    route_reason = decision.reason
    send_when_online = args.send_when_online or settings["send_when_online"]
    try:
        counter = engine if hasattr(engine, "count_prompt") else None
        if counter is not None:
            engine.wait_ready()  # exact counts from the model's own tokenizer
        prompt = _read_prompt(args.prompt)
        while True:
            try:
                turn = service.start_turn(
                    prompt, args.conversation, model=engine.info.model,
                    options=TurnOptions(temperature=args.temperature, top_p=args.top_p,
                                        max_tokens=args.max_tokens, stop=tuple(args.stop)),
                    route=args.route, counter=counter, effective_route=decision.route.value)
                break
            except RateLimitedLocally as exc:
                if not settings["rate_limit_wait"]:
                    raise
                _countdown(str(exc), exc.wait_s, cancel)
        _report_fit(args, turn.fit)
        if decision.route is not Route.LOCAL:
            turn.outbox_plan = OutboxPlan(args.provider, args.model,
                                          always=decision.route is Route.CLOUD,
                                          with_local=send_when_online)
        finish: Finished | None = None
        try:
            for event in turn.run(engine, cancel, route_reason):
                if isinstance(event, TextDelta):
                    if args.json:
                        _emit({"event": "delta", "text": event.text})
                    else:
                        sys.stdout.write(event.text)
                        sys.stdout.flush()
                elif isinstance(event, Seam):
                    if args.json:
                        _emit({"event": "seam", "engine": event.engine, "model": event.model,
                               "reason": event.reason, "offset": event.offset})
                elif isinstance(event, Usage):
                    if args.json:
                        _emit({"event": "usage", "prompt_tokens": event.prompt_tokens,
                               "completion_tokens": event.completion_tokens,
                               "cached_prompt_tokens": event.cached_prompt_tokens,
                               "estimated": event.estimated})
                elif isinstance(event, Finished):
                    finish = event
        except OutpostError as exc:
            item = service.queue_if_unreachable(turn, engine, exc)
            if item is None:
                raise
            if args.json:
                _report_queued(args, item, turn)
            raise type(exc)(f"{exc} Queued in the outbox as item {item.id}; `outpost outbox "
                            "send` sends it once the provider is reachable.") from None
        if not args.json:
            sys.stdout.write("\n")
        if args.json and finish is not None:
            answered = getattr(engine, "answered", None) or engine.info
            _emit({"event": "finished", "reason": finish.reason.value,
                   "conversation_id": turn.conversation_id,
                   "message_id": turn.assistant_message_id,
                   "ttft_ms": _round(finish.ttft_ms), "tokens_per_s": _round(finish.tokens_per_s),
                   "engine": answered.engine, "model": answered.model,
                   "route_reason": getattr(engine, "reason", None) or route_reason})
        item = service.queue_if_unreachable(turn, engine)
        if item is not None:
            _report_queued(args, item, turn)
        if finish is not None and finish.reason is FinishReason.ERROR:
            raise finish.error if isinstance(finish.error, OutpostError) else OutpostError(
                str(finish.error))
        if finish is not None and finish.reason is FinishReason.CANCELLED:
            raise Cancelled("The reply was stopped; the partial answer is saved.")
        return 0
    finally:
        engine.close()
        store.close()


def _countdown(message: str, seconds: float, cancel: threading.Event) -> None:
    """Wait out a local rate limit, saying so on stderr once a second (Ctrl+C stops)."""
    import math
    import time

    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        sys.stderr.write(f"\routpost: {message.split(';')[0]}; waiting {math.ceil(left)} s… ")
        sys.stderr.flush()
        if cancel.wait(min(1.0, left)):
            raise Cancelled("Stopped while waiting for the rate limit; nothing was sent.")
    sys.stderr.write("\n")


def _report_fit(args: argparse.Namespace, fit) -> None:
    """How the conversation was fitted into the context window (and what was left out)."""
    if fit is None:
        return
    if args.json:
        _emit({"event": "context", "prompt_tokens": fit.prompt_tokens, "exact": fit.exact,
               "max_tokens": fit.max_tokens, "context_window": fit.window,
               "dropped_messages": len(fit.dropped)})
    elif fit.dropped:
        sys.stderr.write(f"outpost: {fit.describe_dropped()}\n")


def _report_queued(args: argparse.Namespace, item, turn) -> None:
    if args.json:
        _emit({"event": "queued", "outbox_id": item.id, "provider": item.provider,
               "conversation_id": turn.conversation_id,
               "idempotency_key": item.request.idempotency_key})
    else:
        sys.stderr.write(f"outpost: {item.provider} is unreachable: queued in the outbox as "
                         f"item {item.id}; it is sent with `outpost outbox send` (or by the "
                         "window) once the provider is back.\n")


def _route_engine(args: argparse.Namespace, settings, service, conversation):
    """(engine, RouteDecision) for ``ask``: the route decides which engines are even built.
    Precedence: Offline mode (setting or --offline), then --route, then the conversation's
    route, then the default_route setting; without --provider, Auto is the local model."""
    from app.connectivity import Connectivity
    from app.router import Route, RoutedEngine, decide_route
    from engines.registry import create_local_engine

    wanted = args.route or (conversation.route if conversation else None)
    try:
        decision = decide_route(wanted, settings["default_route"],
                                settings["offline_mode"] or args.offline, args.provider)
    except UsageError:
        raise UsageError("This conversation is Cloud only: name its provider with --provider "
                         "NAME (or pass --route auto or --route local).") from None
    if settings["offline_mode"] and (args.provider or wanted == "cloud"):
        sys.stderr.write("outpost: Offline mode is on, so the local model answers and nothing "
                         "is sent (`outpost offline off` turns it off).\n")
    if decision.route is Route.LOCAL:
        local_model = None if args.provider else args.model
        reason = decision.reason or "no cloud provider chosen"
        return create_local_engine(settings, local_model, service.ledger.record), \
            dataclasses.replace(decision, reason=reason)
    cloud = _cloud_engine(args.provider, args.model, service.ledger.record)
    if decision.route is Route.CLOUD:
        return cloud, dataclasses.replace(decision, reason="cloud-only conversation")
    return RoutedEngine(cloud, lambda: create_local_engine(settings, None,
                                                           service.ledger.record),
                        Connectivity(), hedge_after_s=settings["hedge_after_s"],
                        on_attempt=service.ledger.record), decision


def _cloud_engine(name: str, model: str | None, on_attempt):
    from app.providers import ProviderRegistry, needs_key
    from app.secrets import KeyStore
    from app.settings import Settings
    from engines.registry import cloud_timeouts, create_cloud_engine

    config = ProviderRegistry().get(name)
    key = KeyStore(fallback="file").resolve(config.name, config.base_url)
    if key is None and needs_key(config):
        raise UsageError(f"There is no API key for {config.name}: store one with "
                         f"`outpost keys set {config.name}`.")
    return create_cloud_engine(config, key, model, on_attempt=on_attempt,
                               timeouts=cloud_timeouts(Settings()))


def cmd_providers(args: argparse.Namespace) -> int:
    from app.providers import PRESETS, ProviderConfig, ProviderRegistry
    from app.secrets import KeyStore, mask

    registry = ProviderRegistry()
    if args.providers_command == "presets":
        for key, preset in PRESETS.items():
            print(f"{key:13} {preset.kind:10} {preset.base_url:34} {preset.default_model}")
        return 0
    if args.providers_command == "add":
        preset = PRESETS.get(args.preset or args.name.lower())
        if args.preset and preset is None:
            raise UsageError(f"There is no preset {args.preset!r}; see `outpost providers "
                             "presets`.")
        base_url = args.base_url or (preset.base_url if preset else None)
        if not base_url:
            raise UsageError("Give the provider's --base-url (or --preset).")
        config = registry.add(ProviderConfig(
            args.name, args.kind or (preset.kind if preset else "openai"), base_url,
            args.model or (preset.default_model if preset else "")), replace=args.replace)
        print(f"Added provider {config.name} ({config.kind}, {config.base_url}). "
              f"Store its key with: outpost keys set {config.name}")
        return 0
    if args.providers_command == "remove":
        registry.remove(args.name)
        KeyStore(fallback="file").delete(args.name)
        print(f"Removed provider {args.name} and its stored key.")
        return 0
    if args.providers_command == "models":
        config = registry.get(args.name)
        if config.kind != "openai":
            raise UsageError("Listing models is available for OpenAI-compatible providers.")
        engine = _cloud_engine(args.name, config.default_model or "-", None)
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
        _emit_list(rows)
    else:
        for row in rows:
            print(f"{row['name']:16} {row['kind']:9} {row['base_url']:40} "
                  f"{row['default_model'] or '-':24} key: {row['key'] or 'none'}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    import getpass

    from app.providers import ProviderRegistry
    from app.secrets import KeyStore, mask

    if args.keys_command == "delete":
        ProviderRegistry().get(args.name)
        KeyStore(fallback="file").delete(args.name)
        print(f"Forgot the key of {args.name}.")
        return 0
    ProviderRegistry().get(args.name)  # the provider must exist
    if sys.stdin.isatty():
        key = getpass.getpass(f"API key for {args.name} (not shown): ")
    else:
        key = sys.stdin.readline()
    store = KeyStore(fallback="file" if args.insecure_file else "refuse")
    where = store.set(args.name, key)
    place = {"keychain": "the OS keychain", "file": f"{store.file_path} (mode 0600)"}[where]
    print(f"Stored the key {mask(key.strip())} for {args.name} in {place}.")
    return 0


def _round(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None


def cmd_history(args: argparse.Namespace) -> int:
    _, store, _ = _open_core()
    try:
        if args.history_command == "list":
            conversations = store.list_conversations()
            if args.json:
                _emit_list([{"id": c.id, "title": c.title, "updated_at": c.updated_at,
                             "created_at": c.created_at} for c in conversations])
            else:
                for c in conversations:
                    print(f"{c.id}  {c.updated_at}  {c.title}")
            return 0
        if args.history_command == "show":
            conversation = store.get_conversation(args.id)
            messages = store.messages(conversation.id)
        else:
            conversation = None
            messages = store.search(args.query)
        if args.json:
            keys = ("id", "conversation_id", "parent_id", "role", "content", "status", "engine",
                    "model", "params", "prompt_tokens", "completion_tokens",
                    "cached_prompt_tokens", "ttft_ms", "tokens_per_s", "finish_reason", "error",
                    "route_reason", "segments", "created_at", "updated_at")
            rows = []
            for m in messages:
                data = m.as_dict()
                rows.append({k: data[k] for k in keys})
            _emit_list(rows)
        else:
            if conversation is not None:
                print(f"# {conversation.title}  ({conversation.id})")
            elif not messages:
                print(f"No message matches {args.query!r}.", file=sys.stderr)
            for m in messages:
                mark = "" if m.status.value == "complete" else f" [{m.status.value}]"
                if m.finish_reason == "length":
                    mark += " [cut at max tokens]"
                authors = " → ".join(f"{x.get('engine')} · {x.get('model')}"
                                     for x in m.segments or []) if m.segments and \
                    len(m.segments) > 1 else f"{m.engine} · {m.model}"
                who = m.role.value if m.role.value != "assistant" else f"assistant · {authors}"
                where = f"  (conversation {m.conversation_id})" if conversation is None else ""
                body = m.content or (f"({m.error})" if m.error else "")
                route = f"\n  [{m.route_reason}]" if m.role.value == "assistant" and \
                    m.route_reason and any(w in m.route_reason for w in (
                        "locally", "outbox", "hedge")) else ""
                print(f"\n{who}{mark}{where}:{route}\n{body}")
        return 0
    finally:
        store.close()


def cmd_usage(args: argparse.Namespace) -> int:
    from app.ledger import start_of_day, start_of_month

    _, store, service = _open_core()
    try:
        ledger = service.ledger
        profile = None if args.profile == "all" else (args.profile or ledger.profile)
        since = start_of_month() if args.month else start_of_day()
        totals = ledger.totals(since, profile)
        if args.json:
            _emit(dict(totals.as_dict(), profile=profile or "all",
                       period="month" if args.month else "day"))
            return 0
        period = since.strftime("%B %Y") if args.month else "today"
        cost = f"${totals.cost_usd:.4f}"
        if totals.unknown_cost_requests:
            cost += (f" + unknown ({totals.unknown_cost_requests} request"
                     f"{'s' if totals.unknown_cost_requests != 1 else ''} with no known price)")
        approx = " (some counts estimated)" if totals.estimated else ""
        plural = "request" if totals.requests == 1 else "requests"
        print(f"Usage of {profile or 'everyone'}, {period}: {totals.requests} {plural} "
              f"({totals.cloud_requests} cloud), {totals.prompt_tokens:,} prompt + "
              f"{totals.completion_tokens:,} completion tokens{approx}; cloud cost {cost}.")
        for row in totals.by_model:
            price = "free" if row["provider"] == "local" else (
                "unknown" if row["cost_usd"] is None else f"${row['cost_usd']:.4f}")
            print(f"  {row['provider']:12} {row['model'][:36]:36} {row['requests']:>5} req "
                  f"{row['prompt_tokens']:>9,} in {row['completion_tokens']:>9,} out  {price}")
        return 0
    finally:
        store.close()


def cmd_quota(args: argparse.Namespace) -> int:
    from app.chat_service import default_user_id
    from app.quotas import LIMIT_NAMES, QuotaBook
    from app.settings import Settings

    book = QuotaBook()
    profile = args.profile or default_user_id(Settings())
    if args.quota_command == "set":
        if args.name not in LIMIT_NAMES:
            raise UsageError(f"Unknown limit {args.name!r}; known: {', '.join(LIMIT_NAMES)}.")
        value = _parse_limit(args.name, args.value)
        book.set(profile, args.name, value)
        print(f"{args.name} for {profile}: " + ("removed" if value is None else f"{value}") + ".")
        return 0
    limits = book.limits(profile)
    if getattr(args, "json", False):
        _emit(dict(limits.as_dict(), profile=profile))
        return 0
    print(f"Limits of {profile} (from: {limits.source}; policy file: {book.policy}):")
    for name in LIMIT_NAMES:
        value = getattr(limits, name)
        print(f"  {name:22} {'no limit' if value is None else value}")
    return 0


def _parse_limit(name: str, text: str):
    text = text.strip()
    if text.lower() == "none":
        return None
    if name == "allowed_routes":
        return [part.strip() for part in text.split(",") if part.strip()]
    if name == "count_local":
        if text.lower() not in ("true", "false"):
            raise UsageError("count_local must be true or false.")
        return text.lower() == "true"
    try:
        return float(text) if name == "cloud_cost_per_month" else int(text)
    except ValueError:
        raise UsageError(f"{name} must be a number, got {text!r}.") from None


def cmd_offline(args: argparse.Namespace) -> int:
    from app.settings import Settings

    settings = Settings()
    if args.switch != "status":
        settings.set("offline_mode", args.switch == "on")
        settings.save()
    on = settings["offline_mode"]
    print("Offline mode is on: every message is answered by the local model and nothing is "
          "sent." if on else "Offline mode is off: conversations follow their routes.")
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    from app.outbox import OutboxSender, OutboxState

    settings, store, service = _open_core()
    outbox = service.outbox
    try:
        if args.outbox_command == "cancel":
            item = outbox.cancel(args.id)
            print(f"Cancelled outbox item {item.id} ({item.provider}); the message stays in "
                  "its conversation.")
            return 0
        if args.outbox_command == "list":
            outbox.recover()
            items = outbox.items() if args.all else outbox.items(
                (OutboxState.QUEUED, OutboxState.SENDING, OutboxState.FAILED))
            if args.json:
                _emit_list([i.as_dict() for i in items])
            elif not items:
                print("The outbox is empty.")
            else:
                print(f"{'id':>4}  {'state':9} {'provider':12} {'queued at':16}  message")
            for item in items if not args.json else ():
                prompt = " ".join(item.prompt.split())
                prompt = prompt if len(prompt) <= 50 else prompt[:49] + "…"
                error = f"  ({item.last_error})" if item.last_error and \
                    item.state is not OutboxState.SENT else ""
                print(f"{item.id:>4}  {item.state.value:9} {item.provider:12} "
                      f"{_local_time(item.created_at)}  {prompt}{error}")
            return 0
        if settings["offline_mode"]:
            raise UsageError("Offline mode is on: nothing is sent. Turn it off first with "
                         "`outpost offline off` (or the window's Offline mode switch).")
        sender = OutboxSender(outbox, lambda name, model: _cloud_engine(name, model,
                                                                         service.ledger.record),
                              ledger=service.ledger)
        if args.id is not None and outbox.get(args.id).state is not OutboxState.QUEUED:
            raise UsageError(f"Outbox item {args.id} is {outbox.get(args.id).state.value}, "
                             "not queued.")
        report = sender.send(only=args.id)
        if args.json:
            _emit_list([dict(item.as_dict(), result="sent") for item, _ in report.sent] +
                       [dict(item.as_dict(), result="waiting") for item in report.waiting] +
                       [dict(item.as_dict(), result="failed") for item, _ in report.failed] +
                       [dict(item.as_dict(), result="elsewhere") for item in report.elsewhere])
        else:
            for item, message in report.sent:
                print(f"Sent item {item.id} to {item.provider}: the answer is in conversation "
                      f"{item.conversation_id}" + (f" ({message.status.value})"
                                                   if message else "") + ".")
            for item in report.waiting:
                print(f"Item {item.id} waits: {item.provider} is still unreachable"
                      + (f" ({item.last_error})" if item.last_error else "") + ".")
            for item, error in report.failed:
                print(f"Item {item.id} failed: {error}")
            for item in report.elsewhere:
                print(f"Item {item.id} is being sent by another Outpost process (the window?), "
                      "or waits behind one that is.")
            if not (report.sent or report.waiting or report.failed or report.elsewhere):
                print("Nothing to send.")
        return 4 if report.waiting or report.failed else 0
    finally:
        store.close()


def _local_time(iso: str) -> str:
    import datetime as dt

    return dt.datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")


def _emit_list(rows: list[dict]) -> None:
    sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")


def cmd_gui() -> int:
    if sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
            or os.environ.get("QT_QPA_PLATFORM")):
        me = sys.argv[0] if os.path.basename(sys.argv[0]) == "outpost" else "outpost"
        sys.stderr.write(
            "Outpost needs a display, and this machine has none (DISPLAY and WAYLAND_DISPLAY "
            "are unset).\n"
            "  - On a desktop: run it from a graphical session.\n"
            f"  - Headless, on a virtual X screen:  xvfb-run -a {me}   "
            "(Debian/Ubuntu: apt-get install xvfb)\n"
            f"  - Headless, no screen at all:       QT_QPA_PLATFORM=offscreen {me}\n"
            f"  - Or use the command line:          {me} ask \"hello\"   (see {me} --help)\n")
        return 2
    missing = _missing_xcb_libraries()
    if missing:
        sys.stderr.write(
            "Qt cannot open a window on this X display: these system libraries are missing: "
            f"{', '.join(missing)}.\n"
            "  Debian/Ubuntu: apt-get install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 "
            "libxcb-render-util0 libxcb-image0 libxcb-shape0 libxkbcommon-x11-0\n"
            "  Or run without a screen: QT_QPA_PLATFORM=offscreen outpost\n")
        return 2
    from ui.app import run_gui

    return run_gui()


# Libraries Qt 6.5+'s xcb platform plugin loads; without them Qt aborts with a plugin error.
_XCB_LIBRARIES = ("xcb-cursor", "xcb-icccm", "xcb-keysyms", "xcb-render-util", "xcb-image",
                  "xcb-shape", "xkbcommon-x11")


def _missing_xcb_libraries() -> list[str]:
    if not sys.platform.startswith("linux") or not os.environ.get("DISPLAY") or \
            os.environ.get("QT_QPA_PLATFORM") or os.environ.get("WAYLAND_DISPLAY"):
        return []
    import ctypes.util

    return [f"lib{name}" for name in _XCB_LIBRARIES if ctypes.util.find_library(name) is None]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command is None:
            return cmd_gui()
        if args.command == "ask":
            return cmd_ask(args)
        if args.command == "history":
            return cmd_history(args)
        if args.command == "providers":
            return cmd_providers(args)
        if args.command == "keys":
            return cmd_keys(args)
        if args.command == "outbox":
            return cmd_outbox(args)
        if args.command == "offline":
            return cmd_offline(args)
        if args.command == "usage":
            return cmd_usage(args)
        if args.command == "quota":
            return cmd_quota(args)
        raise UsageError(f"Unknown command {args.command!r}.")
    except OutpostError as exc:
        if getattr(args, "json", False) and args.command == "ask" and \
                not isinstance(exc, Cancelled):  # a stop ends with finished(cancelled)
            _emit({"event": "error", "kind": exc.kind, "message": str(exc)})
        sys.stderr.write(f"outpost: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("outpost: stopped.\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
