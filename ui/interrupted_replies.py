"""What a start says of the replies a crash, a kill or a power cut left half written
(``ChatService.recover_interrupted`` marked them interrupted; their text is kept), and the
banner's button that opens the chat holding one: the newest, which need not be the chat the
window came back on (window.ini remembers the chat last open, not where a reply was cut)."""
from __future__ import annotations

from typing import Callable

from app.domain.errors import OutpostError
from app.domain.messages import Message
from app.domain.wording import counted
from app.storage.store import Store
from ui.errors import BannerAction


def interrupted_words(replies: list[Message]) -> str:
    """How many replies the stop cut short (and in how many chats, when several)."""
    chats = len({reply.conversation_id for reply in replies})
    were = "was" if len(replies) == 1 else "were"
    where = f", in {chats} chats" if chats > 1 else ""
    return (f"{counted(len(replies), 'reply', 'replies')} {were} interrupted when Outpost "
            f"stopped{where}; the text that had arrived is kept, marked interrupted.")


def open_newest(replies: list[Message], store: Store, profile: str,
                open_at: Callable[[str, str], None]) -> BannerAction | None:
    """The banner's button: ``open_at(conversation_id, message_id)`` for the newest of
    ``replies`` (oldest first) in a chat ``profile`` may open; None when there is none."""
    mine = [reply for reply in replies if _opens(store, reply.conversation_id, profile)]
    if not mine:
        return None
    newest = mine[-1]
    if len({reply.conversation_id for reply in mine}) > 1:
        text, description = ("Open the newest",
                             "Open the chat of the newest reply that was interrupted")
    else:
        text, description = "Open the chat", "Open the chat of the reply that was interrupted"
    return BannerAction(text, description,
                        lambda: open_at(newest.conversation_id, newest.id))


def _opens(store: Store, conversation_id: str, profile: str) -> bool:
    try:
        return store.get_conversation(conversation_id).profile in (None, profile)
    except OutpostError:  # (deleted meanwhile)
        return False
