"""The ``outpost`` command: the window with no arguments, or headless subcommands.

Exit codes (also in ``outpost --help``):
  0 success · 1 unexpected error · 2 bad usage or unknown id · 3 model file problem ·
  4 engine failed while answering · 5 storage problem · 130 stopped (Ctrl+C / SIGTERM)
"""
from __future__ import annotations

import argparse
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
  2    bad usage: invalid flag value, unknown conversation id, empty prompt
  3    the model file is missing, not GGUF, truncated or could not be loaded
  4    the engine failed while answering (the partial answer is saved, marked interrupted)
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
    ask.add_argument("--model", metavar="PATH", help="GGUF model file (default: the setting, "
                     "else the bundled SmolLM2-135M-Instruct)")
    ask.add_argument("--temperature", type=float, metavar="F")
    ask.add_argument("--top-p", type=float, metavar="F", dest="top_p")
    ask.add_argument("--max-tokens", type=int, metavar="N", dest="max_tokens")
    ask.add_argument("--stop", action="append", default=[], metavar="S",
                     help="stop sequence (repeatable)")
    ask.add_argument("--json", action="store_true",
                     help="print one JSON object per line, each with an \"event\" key")

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
    store = Store()
    service = ChatService(store, settings)
    service.recover_interrupted()
    return settings, store, service


def _read_prompt(value: str) -> str:
    return sys.stdin.read() if value == "-" else value


def cmd_ask(args: argparse.Namespace) -> int:
    from app.chat_service import TurnOptions
    from app.domain import Finished, FinishReason, TextDelta, Usage
    from engines.registry import create_local_engine

    settings, store, service = _open_core()
    cancel = threading.Event()

    def _stop(signum, frame):  # first signal stops the reply cleanly; a second one kills
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()

    signal.signal(signal.SIGINT, _stop)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _stop)

    engine = create_local_engine(settings, args.model)  # validates the file, starts loading
    try:
        turn = service.start_turn(
            _read_prompt(args.prompt), args.conversation, model=engine.info.model,
            options=TurnOptions(temperature=args.temperature, top_p=args.top_p,
                                max_tokens=args.max_tokens, stop=tuple(args.stop)))
        finish: Finished | None = None
        for event in turn.run(engine, cancel):
            if isinstance(event, TextDelta):
                if args.json:
                    _emit({"event": "delta", "text": event.text})
                else:
                    sys.stdout.write(event.text)
                    sys.stdout.flush()
            elif isinstance(event, Usage):
                if args.json:
                    _emit({"event": "usage", "prompt_tokens": event.prompt_tokens,
                           "completion_tokens": event.completion_tokens,
                           "cached_prompt_tokens": event.cached_prompt_tokens,
                           "estimated": event.estimated})
            elif isinstance(event, Finished):
                finish = event
        if not args.json:
            sys.stdout.write("\n")
        if args.json and finish is not None:
            _emit({"event": "finished", "reason": finish.reason.value,
                   "conversation_id": turn.conversation_id,
                   "message_id": turn.assistant_message_id,
                   "ttft_ms": _round(finish.ttft_ms), "tokens_per_s": _round(finish.tokens_per_s)})
        if finish is not None and finish.reason is FinishReason.ERROR:
            raise finish.error if isinstance(finish.error, OutpostError) else OutpostError(
                str(finish.error))
        if finish is not None and finish.reason is FinishReason.CANCELLED:
            raise Cancelled("The reply was stopped; the partial answer is saved.")
        return 0
    finally:
        engine.close()
        store.close()


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
            try:
                messages = store.search(args.query)
            except OutpostError as exc:
                raise UsageError(f"The search query {args.query!r} is not valid: {exc}") from exc
        if args.json:
            keys = ("id", "conversation_id", "parent_id", "role", "content", "status", "engine",
                    "model", "params", "prompt_tokens", "completion_tokens",
                    "cached_prompt_tokens", "ttft_ms", "tokens_per_s", "finish_reason", "error",
                    "created_at", "updated_at")
            rows = []
            for m in messages:
                data = m.as_dict()
                rows.append({k: data[k] for k in keys})
            _emit_list(rows)
        else:
            if conversation is not None:
                print(f"# {conversation.title}  ({conversation.id})")
            for m in messages:
                mark = "" if m.status.value == "complete" else f" [{m.status.value}]"
                who = m.role.value if m.role.value != "assistant" else f"assistant · {m.model}"
                print(f"\n{who}{mark}:\n{m.content}")
        return 0
    finally:
        store.close()


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
        raise UsageError(f"Unknown command {args.command!r}.")
    except OutpostError as exc:
        if getattr(args, "json", False) and args.command == "ask":
            _emit({"event": "error", "kind": exc.kind, "message": str(exc)})
        sys.stderr.write(f"outpost: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("outpost: stopped.\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
