"""``outpost outbox`` and ``outpost offline``: queued cloud requests, Offline mode."""
from __future__ import annotations

import argparse

from app.chat.outbox_sender import OutboxSender
from app.cli.commands.ask import save_before_exit
from app.cli.commands.common import cloud_engine, emit_list, local_time, open_core
from app.config.providers import ProviderRegistry
from app.config.secrets import stored_keys
from app.config.settings import Settings, default_user_id
from app.domain.errors import OutpostError, ReplyNotSaved, UsageError
from app.domain.routes import KEPT_LOCAL
from app.domain.secrets_mask import SecretMask
from app.storage.outbox import OutboxState


def cmd_offline(args: argparse.Namespace) -> int:
    settings = Settings()
    if args.switch != "status":
        settings.set("offline_mode", args.switch == "on")
        settings.save()
    on = settings["offline_mode"]
    print("Offline mode is on: every message is answered on this computer (the local model, "
          "or a provider at localhost) and nothing is sent beyond it." if on
          else "Offline mode is off: conversations follow their routes.")
    return 0

def cmd_outbox(args: argparse.Namespace) -> int:
    core = open_core(args)
    settings, store, service = core.settings, core.store, core.service
    outbox = service.outbox
    try:
        me = core.profile.name
        if args.outbox_command == "cancel":
            core.profiles.check_owner(core.profile,
                                      store.get_conversation(outbox.get(args.id).conversation_id),
                                      outbox_item=args.id)
            item = outbox.cancel(args.id)
            print(f"Cancelled outbox item {item.id} ({item.provider}); the message stays in "
                  "its conversation.")
            return 0
        if args.outbox_command == "retry":
            core.profiles.check_owner(core.profile,
                                      store.get_conversation(outbox.get(args.id).conversation_id),
                                      outbox_item=args.id)
            item = outbox.requeue_failed(args.id, settings["default_route"])
            print(f"Outbox item {item.id} waits to be sent to {item.provider} again "
                  "(`outpost outbox send` sends it now).")
            return 0
        if args.outbox_command == "list":
            outbox.recover()
            items = outbox.items(profile=me) if args.all else outbox.items(
                (OutboxState.QUEUED, OutboxState.SENDING, OutboxState.FAILED), me)
            # a queued message may hold a key (queued before the key was stored): masked
            mask = SecretMask(stored_keys())
            if args.json:
                emit_list([dict(i.as_dict(), prompt=mask.scrub(i.prompt),
                                last_error=mask.scrub_optional(i.last_error)) for i in items])
            elif not items:
                print("Nothing waits in the outbox." + ("" if args.all else
                      " (`outpost outbox list --all` shows the sent and cancelled too.)"))
            else:
                print(f"{'id':>4}  {'state':9} {'provider':12} {'queued at':16}  message")
            for item in items if not args.json else ():
                prompt = " ".join(mask.scrub(item.prompt).split())
                prompt = prompt if len(prompt) <= 50 else prompt[:49] + "…"
                note = item.held() if item.state is OutboxState.QUEUED else None
                note = note or (item.last_error if item.state is not OutboxState.SENT
                                else None)
                error = f"  ({mask.scrub(note)})" if note else ""
                print(f"{item.id:>4}  {item.state.value:9} {item.provider:12} "
                      f"{local_time(item.created_at)}  {prompt}{error}")
            return 0
        # Offline mode sends only to providers on this computer (loopback); the others' items
        # keep waiting, untried
        elsewhere = _held_by_offline_mode(outbox, args.id) if settings["offline_mode"] else set()
        sender = OutboxSender(outbox, lambda name, model: cloud_engine(name, model,
                                                                         service.ledger.record),
                              ledger=service.ledger,
                              default_route=lambda: settings["default_route"],
                              keep_unsaved=service.keep_unsaved, quotas=service.quotas,
                              default_profile=lambda: default_user_id(settings))
        if args.id is not None and outbox.get(args.id).state is not OutboxState.QUEUED:
            raise UsageError(f"Outbox item {args.id} is {outbox.get(args.id).state.value}, "
                             "not queued.")
        report = sender.send(only=args.id, skip_provider=lambda name: name in elsewhere)
        if service.unsaved:  # an answer the disk refused: a few more tries before exiting
            try:
                save_before_exit(service.save_unsaved, service.unsaved[0].unsaved_error)
            except ReplyNotSaved:
                _hand_over_unsaved(outbox, sender.kept)
                raise
        if args.json:
            emit_list([dict(item.as_dict(), result="sent") for item, _ in report.sent] +
                       [dict(item.as_dict(), result="waiting") for item in report.waiting] +
                       [dict(item.as_dict(), result="failed") for item, _ in report.failed] +
                       [dict(item.as_dict(), result="elsewhere") for item in report.elsewhere])
        else:
            for item, message in report.sent:
                print(f"Sent item {item.id} to {item.provider}: the answer is in conversation "
                      f"{item.conversation_id}" + (f" ({message.status.value})"
                                                   if message else "") + ".")
            for item in report.waiting:  # (the last error is a sentence of its own)
                if item.provider in elsewhere:  # not tried: Offline mode
                    print(f"Item {item.id} waits for Offline mode to be off: {item.provider} "
                          "is not on this computer.")
                    continue
                if item.id in report.behind:  # not tried: the queue's order holds
                    print(f"Item {item.id} waits behind item {report.behind[item.id]} for "
                          f"{item.provider}: items go out in the order they were queued.")
                    continue
                if item.id in report.held:  # not tried: the provider asked to wait
                    print(f"Item {item.id} {report.held[item.id]}.")
                    continue
                print(f"Item {item.id} waits to be sent to {item.provider} again: "
                      + (_sentence(item.last_error) if item.last_error
                         else "it is still unreachable."))
            for item, error in report.failed:
                print(f"Item {item.id}: {error}" if error == KEPT_LOCAL else
                      f"Item {item.id} failed: {error}")
            for item in report.elsewhere:
                print(f"Item {item.id} is being sent by another Outpost process (the window?), "
                      "or waits behind one that is.")
            if not (report.sent or report.waiting or report.failed or report.elsewhere):
                print("Nothing to send.")
        return 4 if report.waiting or report.failed else 0
    finally:
        store.close()


def _held_by_offline_mode(outbox, only: int | None) -> set[str]:
    """The providers (not on this computer) whose items Offline mode keeps waiting; refused
    in one sentence when nothing else would be sent (nothing at all, too)."""
    registry = ProviderRegistry()
    pending = [item for item in outbox.pending() if only is None or item.id == only]
    held = {item.provider for item in pending if not registry.on_this_computer(item.provider)}
    if all(item.provider in held for item in pending):
        raise UsageError("Offline mode is on: nothing is sent beyond this computer (only a "
                         "provider at localhost would be). Turn it off first with `outpost "
                         "offline off` (or the window's Offline mode switch).")
    return held


def _hand_over_unsaved(outbox, kept) -> None:
    """The answers the disk would not take, this process their only holder: printed (the
    user has them), and their items queued again, to be asked once more (same key)."""
    for item_id, turn in kept:
        if turn.unsaved is None:
            continue
        print(f"Item {item_id}'s answer, which could not be saved:\n{turn.reply.text}")
        try:
            outbox._finish(item_id, OutboxState.QUEUED, "answered, but the disk refused the "
                           "answer: it is asked again")
        except OutpostError:  # (the disk still refuses): the next start queues it again
            pass


def _sentence(text: str) -> str:
    """``text`` ending as a sentence does, without doubling its own full stop."""
    text = text.strip()
    return text if text.endswith((".", "?", "!")) else text + "."
