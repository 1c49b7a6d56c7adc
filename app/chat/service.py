"""Starting a chat turn, shared by the CLI and the window (``ChatService``).

``start_turn`` (and ``regenerate_turn``, ``retry_turn``) checks the input, the knobs, the fit
into the context window and the quotas, commits the user's message before anything is sent,
and returns a ``Turn`` (``app.chat.turn``: streaming and storing the reply). The caller decides
which thread runs what: the window runs ``Turn.run`` on a worker thread. The service also keeps
the replies whose final write the disk refused (``save_unsaved``).

No known secret is stored or shown: every stored key (and every key this process handled) is
masked in the reply's text, its error and the error a turn raises (``app.domain.secrets_mask``),
before anything reaches the database or the caller, so the window, the CLI and the exports get
clean data. The keys are read once per turn, when its message is checked (before anything is
stored or sent), and that one reading serves the check and the mask (keyring reads can be
slow). A message that holds one of the user's own keys (pasted by mistake) is refused before it
is stored or sent (``KeyInMessage``, naming whose key it is): on a route that may reach a
provider, everything the turn would send is checked against every key; a Local only turn sends
nothing and opens no keychain (no socket), so its new message is checked against the keys known
without it (the opt-in file's, the environment's, those this process handled).
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

from app.chat.outbox_words import clock_words, queued_because
from app.chat.turn import Turn
from app.config.presets import PresetBook
from app.config.pseudonym import provider_user
from app.config.secrets import known_keys, stored_keys
from app.config.settings import Settings, default_user_id, option_named
from app.domain.adapters import LoraAdapter, adapters_from_records
from app.domain.context import ONE_REQUEST, Fanout, Fit, ReplyCap, fit_messages
from app.domain.errors import (
    ConnectionFailed,
    KeyInMessage,
    KnownStorageError,
    RateLimited,
    UsageError,
)
from app.domain.messages import (
    ChatMessage,
    ChatRequest,
    Conversation,
    Message,
    Role,
    estimate_prompt_tokens,
    new_id,
)
from app.domain.sampling import KNOB_NAMES
from app.domain.secrets_mask import SecretMask, find_secret, refuse_keys
from app.domain.structured import response_format as json_response_format
from app.domain.wording import sentence, title_from
from app.storage.outbox import Outbox, OutboxItem
from app.storage.profiles import is_admin, not_theirs
from app.storage.store import Store

if TYPE_CHECKING:
    from app.accounting.pricing import Price
    from app.storage.ledger import UsageLedger
    from app.storage.quotas import QuotaGuard
    from engines.base import Engine

# ``reply_to`` for a message that starts the conversation over (an edited first message): it
# follows nothing, beside the conversation's first message
NEW_ROOT = "root"
_DEFAULT_SYSTEM = option_named("system_prompt")
# where the user changes the system prompt a new chat takes (said when it holds a key)
DEFAULT_SYSTEM_PROMPT = f"Settings ▸ {_DEFAULT_SYSTEM.group} ▸ {_DEFAULT_SYSTEM.title}"


@dataclass(frozen=True)
class TurnOptions:
    """This turn's knobs (CLI flags, the sampling panel). None: not given, so the preset's,
    else the conversation's, else the settings' value applies (``ChatService.knobs``).
    ``stop`` None: not given; () : no stop sequences."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    preset: str | None = None
    system_prompt: str | None = None  # replaces the conversation's (saved with it)
    # structured output (app.domain.structured): JSON mode on/off (None: the conversation's), and
    # an optional JSON Schema the reply must match (implies JSON mode)
    json_mode: bool | None = None
    json_schema: dict | None = None
    # best-of-n / self-consistency as chosen in the window (kept with a new conversation; the
    # caller wraps the engine, see app.chat.candidates)
    test_time: dict | None = None
    # LoRA adapters on the local model (app.domain.adapters); None: the conversation's
    lora: tuple[LoraAdapter, ...] | None = None
    # knobs set back to "not sent" (e.g. the panel's top_k emptied), overriding the rest
    unset: tuple[str, ...] = ()
    # the knobs the user gave on purpose (ChatRequest.chosen: only these go to a model that
    # refuses them unless asked). None: every knob given here and in the preset (the command
    # line's flags); the window's panel, which passes every knob it shows, says ()
    chosen: tuple[str, ...] | None = None


def history_messages(system_prompt: str, messages: list[Message]) -> list[ChatMessage]:
    """The messages array of a conversation: the system prompt, then every user message and every
    assistant message that has text (partial answers included, failed empty ones left out)."""
    out: list[ChatMessage] = []
    if system_prompt.strip():
        out.append(ChatMessage(Role.SYSTEM, system_prompt))
    for message in messages:
        if message.role is Role.SYSTEM:
            continue
        if message.role is Role.ASSISTANT and not message.content.strip():
            continue
        out.append(ChatMessage(message.role, message.content))
    return out


class ChatService:
    """Starts turns: validates input, saves the prompt, builds the request."""

    def __init__(self, store: Store, settings: Settings, *, ledger: "UsageLedger | None" = None,
                 quotas: "QuotaGuard | None" = None, profile: str | None = None,
                 presets: PresetBook | None = None,
                 secrets: Callable[[], Iterable[str]] = stored_keys,
                 keys: Callable[[bool], Mapping[str, str]] = known_keys):
        """``ledger``: the usage ledger (each reply's cost); ``quotas``: checked before anything
        is sent; ``profile``: who is signed in (default: the machine's default profile);
        ``keys(ask_keychain)``: every key a message must not hold -> whose it is (default:
        ``app.config.secrets.known_keys``), read once per turn: the keys its turn masks too;
        ``secrets``: every key to mask for a turn that read none (a retry given no route;
        default: all stored keys).
        The composition root (``app.compose``) passes them; tests may leave them out."""
        self.store = store
        self.settings = settings
        self.outbox = Outbox(store)
        self.ledger = ledger
        self.quotas = quotas
        self.presets = presets or PresetBook()
        self.secrets = secrets
        self.keys = keys
        # the signed-in profile (app.storage.profiles): owns new conversations, may continue only
        # its own, and its quotas apply; the window changes it when the user switches profile
        self.profile: str = profile or default_user_id(settings)
        # turns whose final write failed (``ReplyNotSaved``), oldest first: ``save_unsaved``
        self.unsaved: list[Turn] = []
        self._unsaved_lock = threading.Lock()

    def release_hold(self, turn: Turn) -> None:
        """``turn``'s request ended (or will not be sent): what the quotas reserved for it
        while it ran is free again; its usage is in the ledger (``app.storage.quota_holds``)."""
        if self.quotas is not None:
            self.quotas.release(turn.request.idempotency_key)

    def keep_unsaved(self, turn: Turn) -> None:
        """``turn``'s reply could not be written: keep it until ``save_unsaved`` can."""
        with self._unsaved_lock:
            if turn.unsaved is not None and turn not in self.unsaved:
                self.unsaved.append(turn)

    def save_unsaved(self) -> int:
        """Try again to write every reply a failed final write kept; how many still wait."""
        with self._unsaved_lock:
            self.unsaved = [turn for turn in self.unsaved if not turn.save_again()]
            return len(self.unsaved)

    def act_as(self, profile: str) -> None:
        """The signed-in profile changed (the window's profile switch): new turns, quotas and
        ledger rows are theirs."""
        self.profile = profile
        if self.ledger is not None:
            self.ledger.profile = profile

    def own_conversation(self, conversation_id: str, message_id: str | None = None
                         ) -> Conversation:
        """The conversation, when the signed-in profile may continue it; else refused as
        ``Profiles.check_owner`` refuses it (``message_id``: the message the user named)."""
        conversation = self.store.get_conversation(conversation_id)
        if conversation.profile not in (None, self.profile):
            raise not_theirs(conversation.id, is_admin(self.store, self.profile), message_id)
        return conversation

    def knobs(self, options: TurnOptions | None = None, conversation=None) -> dict:
        """The knobs a turn sends, strongest last: the settings' defaults, the conversation's
        own, the chosen preset, the turn's options."""
        options = options or TurnOptions()
        settings = self.settings
        knobs: dict = {name: None for name in KNOB_NAMES}
        knobs.update(temperature=settings["temperature"], top_p=settings["top_p"],
                     max_tokens=settings["max_tokens"], stop=())
        if conversation is not None and conversation.sampling:
            knobs.update({k: v for k, v in conversation.sampling.items() if k in knobs})
        if options.preset:
            knobs.update(self.presets.get(options.preset))
        knobs.update({name: getattr(options, name) for name in KNOB_NAMES
                      if getattr(options, name) is not None})
        for name in options.unset:
            if name in knobs:  # (not "lora": the adapters are no knob, see ``lora``)
                knobs[name] = None if name not in ("temperature", "top_p", "max_tokens",
                                                   "stop") else knobs[name]
        return knobs

    def chosen(self, options: TurnOptions) -> tuple[str, ...]:
        """The knobs this turn's options give on purpose (``TurnOptions.chosen``)."""
        if options.chosen is not None:
            return tuple(options.chosen)
        given = {name for name in KNOB_NAMES if getattr(options, name) is not None}
        if options.preset:
            given |= {k for k, v in self.presets.get(options.preset).items() if v is not None}
        return tuple(sorted(given - set(options.unset)))

    def lora(self, options: "TurnOptions", conversation=None) -> tuple[LoraAdapter, ...]:
        """The LoRA adapters for this turn: the turn's, else its preset's (when the preset
        names adapters), else the conversation's; none when unset (``--no-lora``)."""
        if "lora" in options.unset:
            return ()
        if options.lora is not None:
            return tuple(options.lora)
        if options.preset:
            from_preset = self.presets.adapters(options.preset)
            if from_preset is not None:
                return from_preset
        if conversation is not None and conversation.sampling:
            return adapters_from_records(conversation.sampling.get("lora"))
        return ()

    @staticmethod
    def response_format(options: "TurnOptions", conversation=None) -> dict | None:
        """JSON mode for this turn: the turn's choice, else the conversation's."""
        if options.json_schema is not None:
            return json_response_format(options.json_schema)  # checks the schema itself
        if options.json_mode is not None:
            return json_response_format(None) if options.json_mode else None
        if conversation is not None and conversation.sampling:
            return conversation.sampling.get("response_format")
        return None

    def secret_mask(self) -> SecretMask:
        """Every stored key, read now (a turn reads them once, when it runs)."""
        return SecretMask(self.secrets())

    def queue_for_later(self, turn: Turn, provider: str, model: str | None,
                        error: Exception | None = None, *, cause: Exception | None = None,
                        offline: bool = False) -> OutboxItem:
        """Put the turn's request in the outbox (cloud wanted, provider unreachable). With
        ``error`` (Cloud only: nothing answered), the failed reply says where its request went.
        ``cause``: why the provider did not answer when the local model did (Auto): a 429's
        Retry-After holds the item as it does under Cloud only; ``offline``: Offline mode held
        the request back. The item keeps why it was queued (``app.chat.outbox_words``).
        The item keeps the max_tokens the user asked for, not a quota's cap of it: the quotas
        are checked again at each send (``app.chat.outbox_sender``), and cap it afresh then."""
        self.release_hold(turn)  # (it waits: the outbox reserves again when it sends it)
        request = turn.request if turn.reply_cap is None else \
            dataclasses.replace(turn.request, max_tokens=turn.reply_cap.asked)
        # a 429 with Retry-After: the provider asked not to be sent anything before then
        why = error if error is not None else cause
        retry_after = why.retry_after if isinstance(why, RateLimited) else None
        item = self.outbox.enqueue(turn.conversation_id, turn.user_message_id, provider, model,
                                   request,
                                   turn.assistant_message_id if error is not None else None,
                                   retry_after=retry_after,
                                   queued_because=turn.secret_mask().scrub(
                                       queued_because(provider, why, offline)))
        if error is not None and turn.assistant_message_id:
            held = item.held_until()
            when = f"it is sent at {clock_words(held)} (not before: {provider} asked to " \
                "wait)" if held is not None else f"it is sent once {provider} can be reached" \
                if isinstance(error, ConnectionFailed) else \
                f"it is sent again when {provider} is next tried"  # (it could be reached)
            words = turn.secret_mask().scrub(
                f"{sentence(str(error))} Queued in the outbox (item {item.id}): {when}.")
            unsaved = turn.unsaved
            if unsaved is not None:  # the reply's final write, still to come, says so too
                unsaved["error"] = words  # (it wrote the bare error over this)
            try:
                self.store.update_message(turn.assistant_message_id, error=words)
            except KnownStorageError:  # the disk is still full: that final write says it
                if unsaved is None:
                    raise
        return item

    def recover_interrupted(self) -> list[Message]:
        """Mark replies left 'streaming' by a dead process as 'interrupted' (start-up), every
        profile's, and return those the signed-in profile has not been told of, oldest first
        (what the window's start says, and opens), now told: marked now or by an earlier
        start (``outpost ask``, or the window signed in as another profile). Another
        profile's chats are not this one's to count or open: it is told when it signs in."""
        self.store.recover_orphaned_streaming()
        return self.store.take_untold_interruptions(self.profile)

    def retry_turn(self, failed: Turn, *, effective_route: str | None = None,
                   price_known: bool = True, price: "Price | None" = None,
                   fanout: Fanout = ONE_REQUEST, counter: "Engine | None" = None,
                   local_instead: bool = False, held: bool = False) -> Turn:
        """Answer the same saved prompt again (same request, same idempotency key); the new
        reply is stored as a sibling of the failed one. With ``effective_route`` (the route
        the retry takes now), the quotas are checked again first, as for a new message: a
        retry is a new request (the failed one is in the ledger already), and a quota left
        room for a shorter reply limits it. ``counter``: the engine that answers now, whose
        window the request is fitted into again (the turn may have been built for a larger
        one: the cloud's, before a spent quota has the local model answer). ``local_instead``,
        ``held``: as for ``start_turn``."""
        request, cap, fit = failed.request, failed.reply_cap, failed.fit
        asked = cap.asked if cap is not None else request.max_tokens
        if counter is not None:
            refit = fit_messages(request.messages, counter, asked,
                                 as_sent=_as_sent_by(counter, request.response_format))
            request = dataclasses.replace(request, messages=refit.messages)
            # what the first fit left out is still left out: said with what this one drops
            fit = dataclasses.replace(refit, dropped=tuple(failed.fit.dropped) +
                                      tuple(refit.dropped)) if failed.fit is not None else refit
        secrets = self.secret_mask  # (no route given: every stored key, read when it runs)
        if effective_route is not None:  # the route may differ from the first try's
            secrets = self._refuse_keys(list(request.messages), effective_route,
                                        new_prompt=False)
        if self.quotas is not None and effective_route is not None:
            prompt_tokens = fit.prompt_tokens if fit is not None else \
                estimate_prompt_tokens(list(request.messages))
            request, cap = self.quotas.admit(self.profile, effective_route, request,
                                             prompt_tokens, asked=asked,
                                             price_known=price_known, price=price,
                                             fanout=fanout, local_instead=local_instead,
                                             cloud=_sends_now(effective_route, held))
            if fit is not None:
                fit = dataclasses.replace(fit, max_tokens=request.max_tokens)
        return Turn(self.store, failed.conversation_id, failed.user_message_id, request,
                    route_reason=failed.route_reason, outbox_plan=failed.outbox_plan,
                    fit=fit, ledger=self.ledger, secrets=secrets, reply_cap=cap)

    def start_turn(self, prompt: str, conversation_id: str | None = None, *, model: str,
                   options: TurnOptions = TurnOptions(), route: str | None = None,
                   counter: "Engine | None" = None, effective_route: str = "local",
                   price_known: bool = True, reply_to: str | None = None,
                   price: "Price | None" = None, fanout: Fanout = ONE_REQUEST,
                   local_instead: bool = False, held: bool = False) -> Turn:
        """``route`` is stored on a new conversation (None: the default route now, kept: a
        later change of the default does not move it).
        ``counter`` (the engine's, see ``app.domain.context``): fit the conversation into its
        context window, dropping the oldest turns; a message that cannot fit at all is refused
        before anything is written. ``price_known``: False when the model's price is not known (a
        quota in dollars then refuses the turn unless unpriced models are allowed); ``price``:
        the model's price, with which a monthly budget limits the reply to what it can still
        pay for (``app.storage.quotas``); ``fanout``: the requests the turn sends (best-of-n),
        all reckoned against the quotas; ``local_instead`` (Auto, with a local model to
        answer): a budget that would limit the cloud's reply but not the local model's
        raises ``CloudReplyCapped`` instead, nothing written (the pipeline has the local
        model answer in full). ``held``: the request waits in the outbox while the local model
        answers now (Offline mode, or a provider known to be unreachable): the quotas reckon
        the local answer, on ``effective_route`` (its cloud budgets and per-minute limits are
        checked when the outbox sends it). ``reply_to``: the
        message this one follows (a branch from any point; default: the end of the active
        path; ``NEW_ROOT``: none, beside the first message); the model sees exactly the path
        from the root to it."""
        if not prompt or not prompt.strip():
            raise UsageError("The message is empty; type something to send.")
        settings = self.settings
        if conversation_id is None and reply_to is not None:
            raise UsageError("A reply to a message needs its conversation (--conversation ID).")
        if conversation_id is None:
            conversation = None
            system_prompt, previous = settings["system_prompt"], []
        else:
            conversation = self.own_conversation(conversation_id)
            system_prompt = conversation.system_prompt
            previous = [] if reply_to == NEW_ROOT else \
                self.store.branch(conversation.id, reply_to)
            self._refuse_while_written(previous)
        if options.system_prompt is not None:
            system_prompt = options.system_prompt
        messages = history_messages(system_prompt, previous) + [ChatMessage(Role.USER, prompt)]
        knobs, request_args, fit, cap, secrets = self._checked(
            messages, conversation, model=model, options=options, counter=counter,
            effective_route=effective_route, price_known=price_known, price=price,
            fanout=fanout, new_prompt=True, local_instead=local_instead, held=held)
        try:
            conversation, user_message = self._save_prompt(prompt, conversation, previous,
                                                           system_prompt, route, knobs,
                                                           request_args, options)
        except BaseException:  # nothing is sent: what the quotas reserved for it is free
            if self.quotas is not None:
                self.quotas.release(request_args["idempotency_key"])
            raise
        return self._turn(conversation.id, user_message.id, model, messages, request_args, fit,
                          effective_route, secrets, cap, fanout)

    def _save_prompt(self, prompt: str, conversation, previous: list[Message],
                     system_prompt: str, route: str | None, knobs: dict, request_args: dict,
                     options: TurnOptions) -> tuple:
        """(the conversation, the user's message): both saved, in one transaction."""
        settings = self.settings
        # the conversation (new, or its knobs changed) and the message land together or not
        # at all: a full disk never leaves a chat with no first message in the list
        with self.store.transaction():
            if conversation is None:  # a new conversation keeps the knobs it started with
                # and the route it started under: a chat begun Local only (by the default)
                # stays so when the default changes later, its history never sent anywhere
                conversation = self.store.create_conversation(
                    title_from(prompt), system_prompt, route or settings["default_route"],
                    profile=self.profile,
                    sampling={**{k: list(v) if isinstance(v, tuple) else v
                                 for k, v in knobs.items()},
                              "response_format": request_args["response_format"],
                              "test_time": options.test_time,
                              "lora": [a.record() for a in request_args["lora"]]})
            else:
                self._keep_turn_knobs(conversation, options)
            parent = previous[-1].id if previous else None
            user_message = self.store.add_message(conversation.id, Role.USER, prompt,
                                                  parent_id=parent)
        return conversation, user_message

    def _keep_turn_knobs(self, conversation, options: TurnOptions) -> None:
        """A turn's system prompt (and ``--seed random``, ``--no-lora``) becomes the
        conversation's own."""
        stored = conversation.sampling
        if "seed" in options.unset and stored and stored.get("seed") is not None:
            # `--seed random`: no fixed seed from now on (the one it started with was kept)
            stored = dict(stored, seed=None)
        if "lora" in options.unset and stored and stored.get("lora"):
            stored = dict(stored, lora=[])  # `--no-lora`: its adapters detached for good
        new_prompt = options.system_prompt is not None and \
            options.system_prompt != conversation.system_prompt
        if new_prompt or stored is not conversation.sampling:
            self.store.set_conversation_sampling(
                conversation.id, stored,
                system_prompt=options.system_prompt if new_prompt else None)

    def regenerate_turn(self, message_id: str, *, model: str,
                        options: TurnOptions = TurnOptions(),
                        counter: "Engine | None" = None, effective_route: str = "local",
                        price_known: bool = True, price: "Price | None" = None,
                        fanout: Fanout = ONE_REQUEST, local_instead: bool = False,
                        held: bool = False) -> Turn:
        """Answer again the user message that ``message_id`` (a reply) answers: the new reply
        is its sibling, from the path up to that question, with this turn's knobs and engine.
        Checked (fit, quotas) before anything is written."""
        reply = self.store.get_message(message_id)
        if reply.role is not Role.ASSISTANT or reply.parent_id is None:
            raise UsageError(f"The message {message_id} is not a reply; regenerate a reply "
                             "(its question is answered again).")
        conversation = self.own_conversation(reply.conversation_id, message_id=message_id)
        path = self.store.branch(conversation.id, reply.parent_id)
        self._refuse_while_written(path)
        system_prompt = conversation.system_prompt if options.system_prompt is None \
            else options.system_prompt
        messages = history_messages(system_prompt, path)
        _, request_args, fit, cap, secrets = self._checked(
            messages, conversation, model=model, options=options, counter=counter,
            effective_route=effective_route, price_known=price_known, price=price,
            fanout=fanout, local_instead=local_instead, held=held)
        if options.system_prompt is not None and \
                options.system_prompt != conversation.system_prompt:  # kept, as `ask` keeps it
            try:
                self.store.set_conversation_sampling(conversation.id, conversation.sampling,
                                                     system_prompt=options.system_prompt)
            except BaseException:  # nothing is sent: what the quotas reserved for it is free
                if self.quotas is not None:
                    self.quotas.release(request_args["idempotency_key"])
                raise
        return self._turn(conversation.id, reply.parent_id, model, messages, request_args, fit,
                          effective_route, secrets, cap, fanout)

    def _refuse_while_written(self, path: list[Message]) -> None:
        """A turn on a path with a reply still being written (by another window or `outpost
        ask`) is refused: that half reply would be sent as if whole, and the new message
        would hang under it."""
        kept = {turn.assistant_message_id for turn in self.unsaved}
        if any(m.id in kept for m in path):  # (written by this process: it waits to be saved)
            raise UsageError("A reply in this conversation is not saved yet (the disk refused "
                             "it; Outpost keeps it and tries again): send once it is saved, or "
                             "answer an earlier message instead.")
        if any(self.store.being_written(m) for m in path):
            raise UsageError("A reply in this conversation is still being written (by another "
                             "Outpost window or `outpost ask`); send once it has finished, or "
                             "answer an earlier message instead.")

    def _checked(self, messages: list[ChatMessage], conversation, *, model: str,
                 options: TurnOptions, counter: "Engine | None", effective_route: str,
                 price_known: bool, price: "Price | None" = None, fanout: Fanout = ONE_REQUEST,
                 local_instead: bool = False, new_prompt: bool = False, held: bool = False
                 ) -> tuple[dict, dict, Fit | None, ReplyCap | None, Callable[[], SecretMask]]:
        """(knobs, request arguments, fit, reply cap, the keys its turn masks) for a turn
        sending ``messages``: the knobs validated, the messages fitted to the window, no API
        key of the user's in them, the quotas checked. A quota with room for the prompt and a
        shorter reply than asked limits the request's max_tokens (the cap says so). Raises
        before anything is written (MessageTooLong, KeyInMessage, QuotaExceeded,
        RateLimitedLocally, a bad knob).
        ``new_prompt``: the last of ``messages`` is the user's new message, not yet saved;
        ``held``: see ``start_turn``."""
        knobs = self.knobs(options, conversation)
        request_args = dict(knobs, stop=tuple(knobs.get("stop") or ()),
                            response_format=self.response_format(options, conversation),
                            lora=self.lora(options, conversation),
                            chosen=self.chosen(options),
                            # known before the request is built: the quotas' hold is filed
                            # under it, and its end releases it (``release_hold``)
                            idempotency_key=f"turn-{new_id()}")
        ChatRequest(model=model, messages=tuple(messages[-1:]), **request_args)  # the knobs
        fit = fit_messages(messages, counter, request_args["max_tokens"],
                           as_sent=_as_sent_by(counter, request_args["response_format"])) \
            if counter is not None else None
        new_system = options.system_prompt if options.system_prompt is not None and (
            conversation is None or options.system_prompt != conversation.system_prompt) \
            else None
        if conversation is None and options.system_prompt is None:
            new_system = self.settings["system_prompt"]  # a new chat keeps the default
        secrets = self._refuse_keys(list(fit.messages) if fit is not None else messages,
                                    effective_route, new_prompt=new_prompt,
                                    new_system=new_system, default_system=(
                                        conversation is None and
                                        new_system == self.settings["system_prompt"]))
        cap = None
        if self.quotas is not None:
            prompt_tokens = fit.prompt_tokens if fit is not None else \
                estimate_prompt_tokens(messages)
            cap = self.quotas.check(self.profile, effective_route,
                                    _sends_now(effective_route, held), prompt_tokens,
                                    request_args["max_tokens"], price_known=price_known,
                                    model=model, price=price, fanout=fanout,
                                    local_instead=local_instead,
                                    hold=request_args["idempotency_key"])
        if cap is not None:  # the request actually sent asks for no more than the quota left
            request_args["max_tokens"] = cap.max_tokens
            if fit is not None:
                fit = dataclasses.replace(fit, max_tokens=cap.max_tokens)
        return knobs, request_args, fit, cap, secrets

    def _refuse_keys(self, messages: list[ChatMessage], effective_route: str, *,
                     new_prompt: bool, new_system: str | None = None,
                     default_system: bool = False) -> Callable[[], SecretMask]:
        """``KeyInMessage`` when what the turn would store or send holds one of the user's own
        API keys. A turn that may reach a provider: everything it sends, against every key. A
        Local only turn sends nothing: only its new message (``new_prompt``, the last one),
        which it would store, against the keys known without opening the keychain. Returns
        the mask of the keys read here, for the turn (read once: no second keychain read when
        it runs); a Local only turn that checks nothing reads none (the keys this process
        handled are masked still: ``SecretMask``). ``new_system``: a system prompt the turn
        would store with the conversation (checked on every route: it is kept on disk);
        ``default_system``: it is Settings' default, which a new chat takes (the refusal says
        where to change it)."""
        local = effective_route == "local"
        if local and not new_prompt and not new_system:
            return lambda: SecretMask(())
        owners = self.keys(not local)
        found = find_secret(new_system, owners) if new_system else None
        if found is not None and default_system:
            raise KeyInMessage(f"The default system prompt ({DEFAULT_SYSTEM_PROMPT}) contains "
                               f"{found[1]}; remove the key from it there (nothing was saved "
                               "or sent).", found[1])
        if found is not None:
            raise KeyInMessage(f"The system prompt contains {found[1]}; remove the key from it "
                               "(nothing was saved or sent).", found[1])
        refuse_keys(messages[-1:] if local else messages, owners, new_prompt=new_prompt)
        known = tuple(owners)
        return lambda: SecretMask(known)

    def _turn(self, conversation_id: str, user_message_id: str, model: str,
              messages: list[ChatMessage], request_args: dict, fit: Fit | None,
              effective_route: str, secrets: Callable[[], SecretMask],
              cap: ReplyCap | None = None, fanout: Fanout = ONE_REQUEST) -> Turn:
        request = ChatRequest(model=model,
                              messages=fit.messages if fit is not None else tuple(messages),
                              user=provider_user(self.profile), **request_args)
        turn = Turn(self.store, conversation_id, user_message_id, request, ledger=self.ledger,
                    fit=fit, secrets=secrets, reply_cap=cap)
        if self.quotas is not None:
            self.quotas.note_turn(request.idempotency_key, fanout)
        if self.ledger is not None:
            self.ledger.note_turn(request.idempotency_key, route=effective_route,
                                  profile=self.profile, conversation_id=conversation_id)
        return turn


def _sends_now(effective_route: str, held: bool) -> bool:
    """Does the turn send its request to the cloud now (what the quotas reckon)? Not on the
    local route, nor when it is held for the outbox: the local model answers then."""
    return effective_route != "local" and not held


def _as_sent_by(engine: "Engine", response_format: dict | None):
    """The messages as ``engine`` will send them for ``response_format`` (JSON mode may add an
    instruction and a schema): what the fit counts, and so the quotas' prompt tokens."""
    return lambda messages: engine.messages_as_sent(messages, response_format)
