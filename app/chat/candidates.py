"""Test-time compute: best-of-n and self-consistency, as an engine that wraps another.

**Best-of-n** (n = 2..8) samples n candidate replies and keeps the one a scorer likes best:

* ``logprob``: the mean token log-probability under the model (local model only);
* ``length``: the length-normalised log-probability, sum / tokens^0.6 (GNMT's length penalty;
  local model only), which favours complete answers less harshly than the sum;
* ``json``: 1 when the candidate is valid JSON (against the turn's schema, if any), else 0;
  ties go to the higher mean log-probability when known, else to the earlier candidate;
* ``judge``: the model itself is shown the question and the candidates and picks one (as JSON,
  grammar-constrained locally); its tokens are metered with the turn.

**Self-consistency** samples n replies, extracts each one's final answer (``last-line``,
``json:FIELD`` or ``regex:PATTERN``, first group if any), and takes a majority vote. Tie rule:
among the answers with the most votes, the one that appeared first wins. Sampling stops early
once the leader cannot be caught by the samples left. The reply shown is the first candidate
that gave the winning answer.

Candidates run concurrently on a cloud engine and one after another on the local model (which
evaluates the shared prompt once: ``LocalEngine._resume_prompt_end``). Each candidate is its own request attempt with the key
``<turn key>~c<i>`` (the judge: ``~judge``), so providers do not deduplicate them and the ledger
files every one of them under the turn: all n are metered.

The reply's TTFT is the time from the send to the winner being shown (after every candidate
and the judge), not a candidate's own; its tokens/s are the winner's.
"""
from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Iterator

from app.accounting.pricing import Price
from app.domain.errors import UsageError
from app.domain.messages import (
    ChatMessage,
    ChatRequest,
    Finished,
    FinishReason,
    Refit,
    Role,
    StreamEvent,
    TextDelta,
    Usage,
    accumulate,
)
from app.domain.structured import lenient, response_format, validate
from app.domain.test_time import (
    JUDGE_MAX_TOKENS,
    LOCAL_ONLY_SCORERS,
    Candidate,
    Plan,
    Selection,
    check_candidates_differ,
    extractor,
    normalise,
)
from engines.base import Engine, EngineBase, EngineCapabilities, EngineInfo, StreamOutcome


class CandidatesEngine(EngineBase):
    """The Engine contract around another engine: n candidates, one reply."""

    def __init__(self, engine: Engine, plan: Plan,
                 clock: Callable[[], float] = time.monotonic):
        self.engine = engine
        self.plan = plan
        self.clock = clock  # the TTFT: from the send to the winner's reply being shown
        self.selection: Selection | None = None
        self._judge_usage: Usage | None = None
        # each candidate's outcome, taken on the thread that streamed it (a router's is its
        # own stream's there), and the candidate whose reply (or failure) the turn shows
        self._outcomes: dict[int, StreamOutcome] = {}
        self._shown: int | None = None
        kind = engine.capabilities.knob_kind or "local"
        if plan.mode == "best_of" and plan.scorer in LOCAL_ONLY_SCORERS and kind != "local":
            raise UsageError(f"The {plan.scorer} scorer needs the local model (cloud providers "
                             "give no token probabilities here); use json, judge, or the local "
                             "model.")
        self.concurrent = kind != "local"

    # -- the Engine contract: what is not about candidates is the wrapped engine's ------------
    @property
    def info(self) -> EngineInfo:
        return self.engine.info

    @property
    def capabilities(self) -> EngineCapabilities:  # type: ignore[override]
        return self.engine.capabilities

    @property
    def ready(self) -> bool:
        return self.engine.ready

    def wait_ready(self, timeout: float | None = None) -> None:
        self.engine.wait_ready(timeout)

    @property
    def context_window(self) -> int | None:
        return self.engine.context_window

    def count_prompt(self, messages) -> tuple[int, bool]:
        return self.engine.count_prompt(messages)

    def messages_as_sent(self, messages, response_format):
        return self.engine.messages_as_sent(messages, response_format)

    @property
    def more_room(self) -> str | None:
        return getattr(self.engine, "more_room", None)

    def estimate_cost(self, prompt_tokens: int, max_tokens: int) -> str | None:
        return self.engine.estimate_cost(prompt_tokens, max_tokens)

    @property
    def price_known(self) -> bool:
        return self.engine.price_known

    @property
    def price(self) -> Price | None:
        return self.engine.price

    def outcome(self) -> StreamOutcome:
        """Who answered the candidate shown (the winner; the failure or the longest part
        when there is none), with the plan and how the winner was chosen. Candidates stream
        at once through one router on Auto: one that failed over to the local model says
        nothing of another the cloud answered."""
        shown = self._outcomes.get(self._shown) if self._shown is not None else None
        return dataclasses.replace(shown or self.engine.outcome(), test_time=self.plan,
                                   selection=self.selection)

    def repair_engine(self) -> Engine:
        """A structured-output repair asks for one reply, not n candidates again."""
        return self.engine

    def close(self) -> None:
        self.engine.close()

    def stream(self, request: ChatRequest, cancel: threading.Event) -> Iterator[StreamEvent]:
        plan = self.plan
        sent = self.clock()
        check_candidates_differ(request.temperature)
        selection = Selection(plan.mode, plan.n,
                              scorer=plan.scorer if plan.mode == "best_of" else None,
                              extract=plan.extract if plan.mode != "best_of" else None)
        self.selection = selection
        self._judge_usage = None
        self._outcomes, self._shown = {}, None
        self._refit: Refit | None = None  # the local model's fit of the candidates' request
        wants_logprobs = plan.mode == "best_of" and plan.scorer in ("logprob", "length", "json")
        wants_logprobs = wants_logprobs and not self.concurrent  # the local model
        requests = [self._candidate_request(request, i, wants_logprobs) for i in range(plan.n)]
        extract = extractor(plan.extract) if plan.mode == "self_consistency" else None
        done: list[Candidate] = []

        def decided() -> bool:
            if extract is None:
                return False
            counts = Counter(c.answer for c in done if c.answer is not None)
            ranked = counts.most_common(2) + [(None, 0), (None, 0)]
            left = plan.n - len(done)
            return ranked[0][1] > ranked[1][1] + left

        if self.concurrent:
            stop = threading.Event()
            # best-of needs all n; a vote may be decided by a majority: send that many first
            # and the rest only when it is not
            first = plan.n if extract is None else plan.n // 2 + 1
            waves = [requests[:first], requests[first:]]
            with ThreadPoolExecutor(max_workers=plan.n,
                                    thread_name_prefix="outpost-candidate") as pool:
                offset = 0
                for wave in waves:
                    if not wave or stop.is_set() or cancel.is_set():
                        break
                    futures = [pool.submit(self._run_one, r, offset + i, cancel, stop)
                               for i, r in enumerate(wave)]
                    offset += len(wave)
                    for future in as_completed(futures):
                        candidate = future.result()
                        if extract is not None and candidate.text:
                            candidate.answer = _extract(extract, candidate.text)
                        done.append(candidate)
                        if decided():
                            stop.set()
                            selection.stopped_early = len(done) < plan.n
        else:
            for i, r in enumerate(requests):
                if cancel.is_set():
                    break
                candidate = self._run_one(r, i, cancel, None)
                if extract is not None and candidate.text:
                    candidate.answer = _extract(extract, candidate.text)
                done.append(candidate)
                if decided():
                    selection.stopped_early = len(done) < plan.n
                    break
        done.sort(key=lambda c: c.index)
        selection.candidates = [c for c in done if c.text or c.finish]
        usage = _sum_usage([c.usage for c in done] + [self._judge_usage])
        if cancel.is_set():
            winner = max(done, key=lambda c: len(c.text), default=None)
            self._shown = winner.index if winner is not None else None
            if winner is not None and winner.text:
                yield TextDelta(winner.text)
            yield usage
            yield Finished(FinishReason.CANCELLED)
            return
        usable = [c for c in done if c.text.strip() and c.finish is not None and
                  c.finish.reason in (FinishReason.STOP, FinishReason.LENGTH)]
        if not usable:
            failed = next((c for c in done if c.finish and c.finish.error), None)
            failure = failed.finish if failed is not None else None
            self._shown = failed.index if failed is not None else None
            yield usage
            yield Finished(FinishReason.ERROR, error=failure.error if failure else UsageError(
                "None of the candidates produced a reply."))
            return
        if plan.mode == "best_of":
            winner = self._best(usable, request)
        else:
            winner = self._vote(usable, selection)
        usage = _sum_usage([c.usage for c in done] + [self._judge_usage])
        selection.winner = self._shown = winner.index
        if self._refit is not None:  # the turn says what the local model's window left out
            yield self._refit
        # the reply appears once every candidate is in and the winner chosen: that wait is its
        # time to first token (a candidate's own, the fastest's, is not what anyone waited)
        shown = self.clock()
        yield TextDelta(winner.text)
        yield usage
        yield Finished(winner.finish.reason, ttft_ms=(shown - sent) * 1000,
                       tokens_per_s=winner.finish.tokens_per_s)

    # -- candidates ----------------------------------------------------------------------------
    def _candidate_request(self, request: ChatRequest, i: int, logprobs: bool) -> ChatRequest:
        seed = request.seed + i if request.seed is not None else random.randrange(2 ** 31 - 8)
        return dataclasses.replace(request, seed=seed, logprobs=logprobs,
                                   idempotency_key=f"{request.idempotency_key}~c{i}")

    def _run_one(self, request: ChatRequest, index: int, cancel: threading.Event,
                 stop: threading.Event | None) -> Candidate:
        candidate = Candidate(index, seed=request.seed)
        mine = threading.Event()
        if stop is not None and stop.is_set():
            return candidate

        def watch():  # the user's stop, or the vote decided without this candidate
            while not mine.is_set():
                if cancel.is_set() or (stop is not None and stop.is_set()):
                    mine.set()
                    return
                if cancel.wait(0.05):
                    mine.set()
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        def noting_refit(events):
            for event in events:
                if isinstance(event, Refit):
                    self._refit = self._refit or event  # the same request: the same fit
                else:
                    yield event

        try:
            reply = accumulate(noting_refit(self.engine.stream(request, mine)))
        except Exception as exc:  # noqa: BLE001 - one candidate failing is not the turn failing
            reply = accumulate([Finished(FinishReason.ERROR, error=exc)])
        finally:
            mine.set()
            watcher.join()
        self._outcomes[index] = self.engine.outcome()  # (this thread's stream's)
        finished = reply.finish
        candidate.text, candidate.usage, candidate.finish = reply.text, reply.usage, finished
        candidate.mean_logprob = finished.mean_logprob if finished else None
        return candidate

    def _best(self, usable: list[Candidate], request: ChatRequest) -> Candidate:
        scorer = self.plan.scorer
        for c in usable:
            if scorer == "logprob":
                c.score = c.mean_logprob
            elif scorer == "length":
                tokens = (c.usage.completion_tokens if c.usage else 0) or 1
                c.score = None if c.mean_logprob is None else \
                    c.mean_logprob * tokens / tokens ** 0.6
            elif scorer == "json":
                schema = (request.response_format or {}).get("schema")
                c.score = 1.0 if validate(c.text, schema).valid else 0.0
        if scorer == "judge":
            return self._judge(usable, request)
        if any(c.score is None for c in usable):
            raise UsageError(f"The {scorer} scorer got no score from this engine.")

        def key(c: Candidate):
            tie = c.mean_logprob if c.mean_logprob is not None else float("-inf")
            return (c.score, tie, -c.index)

        return max(usable, key=key)

    def _judge(self, usable: list[Candidate], request: ChatRequest) -> Candidate:
        # the conversation as the candidates saw it (the system prompt aside), newest last
        turns = [m for m in request.messages if m.role is not Role.SYSTEM]
        transcript = "\n\n".join(f"{m.role.value.title()}: {m.content.strip()}"
                                   for m in turns[:-1][-6:])
        question = (f"Conversation so far:\n{transcript}\n\nLast message:\n"
                    if transcript else "") + (turns[-1].content if turns else "")
        listing = "\n\n".join(f"[{i + 1}]\n{c.text.strip()}" for i, c in enumerate(usable))
        schema = {"type": "object", "properties": {"best": {
            "type": "integer", "minimum": 1, "maximum": len(usable)}}, "required": ["best"]}
        judge = judge_request(request, (
            ChatMessage(Role.SYSTEM, "You judge answers. Pick the most correct, helpful and "
                                     "complete one."),
            ChatMessage(Role.USER, f"Question:\n{question}\n\nAnswers:\n\n{listing}\n\n"
                                   "Which answer is best? Reply as JSON: {\"best\": <number>}")),
            schema)
        reply = accumulate(self.engine.stream(judge, threading.Event()))
        self._judge_usage = reply.usage
        verdict = lenient(reply.text, schema)
        for c in usable:
            c.score = 0.0
        if not verdict.valid:
            self.selection.note = (f"The judge's answer was not usable ({verdict.error}); the "
                                   "first candidate was kept.")
            usable[0].score = None
            return usable[0]
        chosen = usable[verdict.value["best"] - 1]
        chosen.score = 1.0
        return chosen

    def _vote(self, usable: list[Candidate], selection: Selection) -> Candidate:
        counts: Counter = Counter()
        first_seen: dict[str, int] = {}
        for c in usable:
            if c.answer is None:
                continue
            counts[c.answer] += 1
            first_seen.setdefault(c.answer, c.index)
        selection.votes = {a: n for a, n in counts.most_common()}
        if not counts:
            selection.note = "No candidate stated an answer the extractor could find; the " \
                             "first candidate was kept."
            return usable[0]
        top = max(counts.values())
        if top == 1 and len(counts) > 1:
            selection.note = "No consensus: no two samples gave the same answer; the first " \
                             "was kept."
        tied = [a for a, n in counts.items() if n == top]
        winner_answer = min(tied, key=lambda a: first_seen[a])  # the tie rule
        for c in usable:
            c.score = float(counts.get(c.answer, 0)) if c.answer is not None else 0.0
        return next(c for c in usable if c.answer == winner_answer)


def _extract(extract, text: str) -> str | None:
    answer = extract(text)
    return normalise(answer) if answer else None


def judge_request(request: ChatRequest, messages: tuple[ChatMessage, ...],
                  schema: dict) -> ChatRequest:
    """The judge's request: deterministic, whatever the user's sampling knobs were for the
    candidates (which wanted variety). Temperature 0 with no top_p (a provider's own default,
    off; Anthropic would get a narrowed top_p in place of the temperature), top_k, min_p or
    penalties, a fixed seed, and as many tokens as the verdict needs (``JUDGE_MAX_TOKENS``),
    not the user's max tokens.
    None of them counts as given for the turn (``chosen``), so an OpenAI reasoning model,
    which refuses a temperature other than its default, gets none: its lowest."""
    return dataclasses.replace(
        request, messages=messages, temperature=0.0, top_p=None, top_k=None, min_p=None,
        presence_penalty=None, frequency_penalty=None, repeat_penalty=None, seed=0,
        max_tokens=JUDGE_MAX_TOKENS, stop=(), chosen=(), logprobs=False,
        response_format=response_format(schema),
        idempotency_key=f"{request.idempotency_key}~judge")


def _sum_usage(usages) -> Usage:
    present = [u for u in usages if u is not None]
    return Usage(sum(u.prompt_tokens for u in present),
                 sum(u.completion_tokens for u in present),
                 estimated=any(u.estimated for u in present),
                 cached_prompt_tokens=sum(u.cached_prompt_tokens for u in present))
