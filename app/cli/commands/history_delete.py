"""``outpost history delete``: a conversation, or with ``--message`` a message and everything
below it, deleted as the window deletes them: their words leave the database file
(``Store.delete_conversation`` / ``delete_subtree``, then ``app.storage.erasure``), and with
``--from-backups`` the backups' copies too (``app.storage.backup_erasure``). Asked first on a
terminal (``--yes`` skips the question; without a terminal it is needed); refused while a reply
in it is being written, here or in the window (the store's own refusal)."""
from __future__ import annotations

import argparse
import sys

from app.config.secrets import known_keys
from app.domain.errors import UsageError
from app.domain.secrets_mask import SecretMask
from app.domain.wording import counted
from app.storage.backup_erasure import backups_hold, erase_from_backups, held_in_backups


def cmd_history_delete(core, args: argparse.Namespace) -> int:
    """``core``: ``app.cli.commands.common.Core``, signed in; the caller closes its store."""
    store = core.store
    if (args.id is None) == (args.message is None):
        raise UsageError("Give the conversation to delete (ID), or --message MSG to delete a "
                         "message and everything below it; not both.")
    conversations: list[str]  # what is deleted, by id, for the backups
    messages: list[str]
    if args.message is None:
        conversation = store.get_conversation(args.id)
        core.profiles.check_owner(core.profile, conversation)
        count = len(store.messages(conversation.id))
        what, conversations, messages = "it", [conversation.id], []
        title = SecretMask(known_keys()).scrub(conversation.title) if _asking(args) else ""
        question = (f"Delete \u201c{title}\u201d and all its messages "
                    f"({counted(count, 'message')})? This cannot be undone.")
    else:
        message = store.get_message(args.message)
        conversation = store.get_conversation(message.conversation_id)
        core.profiles.check_owner(core.profile, conversation, message_id=args.message)
        count = _below(store.messages(conversation.id), message.id)
        what = "it" if count == 1 else "them"
        conversations, messages = [], [message.id]
        question = (f"Delete this {message.role.value} message and everything below it (its "
                    f"replies, their follow-ups and their other versions: "
                    f"{counted(count, 'message')} in all)? This cannot be undone.")
    held = held_in_backups(store.path, conversations, messages)
    from_backups = args.from_backups
    if _asking(args):
        if held:
            question += f"\n{backups_hold(what)}"
        if not _yes(question + " [y/N] ", default=False):
            print("Nothing was deleted.", file=sys.stderr)
            return 0
        if held and not from_backups:
            from_backups = _yes(f"Delete {what} from the backups too? [Y/n] ", default=True)
    if args.message is None:
        store.delete_conversation(conversation.id)  # refused while a reply is being written
        print(f"Deleted the conversation {conversation.id} and its "
              f"{counted(count, 'message')}.")
    else:
        messages = store.delete_subtree(message.id)  # refused while a reply is being written
        print(f"Deleted {counted(len(messages), 'message')} from the conversation "
              f"{conversation.id}.")
    if from_backups:
        print(erase_from_backups(store.path, conversations, messages).describe(what))
    elif held:
        print(f"{backups_hold(what)} (--from-backups deletes {what} there too.)")
    return 0


def _asking(args: argparse.Namespace) -> bool:
    """Whether the question is asked: on a terminal, unless --yes; refused without either
    (deleting cannot be undone)."""
    if args.yes:
        return False
    if not sys.stdin.isatty():
        raise UsageError("Deleting cannot be undone and there is no terminal to ask at; add "
                         "--yes to delete without the question. Nothing was deleted.")
    return True


def _yes(question: str, default: bool) -> bool:
    try:
        answer = input(question).strip().lower()
    except EOFError:
        return False
    return default if not answer else answer in ("y", "yes")


def _below(messages, message_id: str) -> int:
    """How many messages the delete of ``message_id`` takes: it and everything below it."""
    children: dict[str | None, list[str]] = {}
    for m in messages:
        children.setdefault(m.parent_id, []).append(m.id)
    count, stack = 0, [message_id]
    while stack:
        count += 1
        stack.extend(children.get(stack.pop(), []))
    return count
