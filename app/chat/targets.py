"""Who answers a conversation, remembered with it (``conversations.target``, ``target_model``).

The window stores its pickers' choice with each message sent and switches the pickers back to
it when the chat is opened again; ``outpost ask`` does the same with its flags: it stores the
``--provider``/``--model`` it was given (none: the local model) and, given neither, answers
with the target the conversation remembers. These are the pieces both need."""
from __future__ import annotations

import dataclasses

from app.chat.pipeline import TurnTarget
from app.config.providers import LOCAL_TARGET, PROVIDER_TARGET, ProviderRegistry, \
    target_provider
from app.domain.messages import Conversation

LOCAL = LOCAL_TARGET
PROVIDER = PROVIDER_TARGET  # + the provider's name


def target_record(target: TurnTarget) -> tuple[str, str | None]:
    """How a conversation remembers ``target``: ("provider:NAME", its model or None for the
    provider's default), or ("local", the local model's name or None for the configured one)."""
    if target.provider is not None:
        return f"{PROVIDER}{target.provider}", target.model or None
    return LOCAL, target.model or None


def describe(target: str, model: str | None) -> str:
    """A remembered target in words: "the local model", "the local model gemma", "openai ·
    gpt-4o-mini". A target Outpost never writes (an imported "openai") is the local model's."""
    name = target_provider(target)
    if name is None:
        return f"the local model {model}" if model and target == LOCAL else "the local model"
    return f"{name} · {model}" if model else name


def remembered_target(target: TurnTarget, conversation: Conversation | None,
                      providers: ProviderRegistry, *, remembers: bool = True
                      ) -> tuple[TurnTarget, str | None]:
    """The target of a turn in ``conversation`` as a command asked for it (``target``), and a
    note for the user (None: nothing to say).

    Given no provider and no model, the turn goes where the conversation remembers (as the
    window's pickers do once the chat is opened); a remembered provider that is no longer
    configured leaves the local model answering, and says so. Given either, they apply; when
    they differ from what the conversation remembers, the note says so (``remembers``: the
    command stores them with the conversation, as ``ask`` does; else they are for this turn
    only, as ``regenerate``'s are, and need no note)."""
    if conversation is None or not conversation.target:
        return target, None  # a new conversation, or one never sent from a front end that kept it
    if conversation.target != LOCAL and target_provider(conversation.target) is None:
        return target, None  # a value Outpost never writes (a file imported before it was
        #                      checked): as if it remembered none
    was = conversation.target, conversation.target_model or None
    if target.provider is not None or target.model is not None:
        now = target_record(target)
        if not remembers or now == was:
            return target, None
        return target, (f"this conversation was answered by {describe(*was)}; it is answered "
                        f"by {describe(*now)} now, as asked, and remembers that.")
    if was[0] == LOCAL:
        return dataclasses.replace(target, model=was[1]), None
    name = target_provider(was[0]) or ""
    if name not in {provider.name for provider in providers.list()}:
        return target, (f"this conversation was answered by {name}, which is no longer "
                        "configured: the local model answers (--provider NAME chooses "
                        "another).")
    return dataclasses.replace(target, provider=name, model=was[1]), None
