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
reuses the shared prompt's KV cache). Each candidate is its own request attempt with the key
``<turn key>~c<i>`` (the judge: ``~judge``), so providers do not deduplicate them and the ledger
files every one of them under the turn: all n are metered.
"""
from __future__ import annotations

import dataclasses
import json
import random
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Iterator

from app.domain import (ChatMessage, ChatRequest, Finished, FinishReason, Role, StreamEvent,
                        TextDelta, Usage, accumulate)
from app.errors import UsageError

SCORERS = ("logprob", "length", "json", "judge")
LOCAL_ONLY_SCORERS = ("logprob", "length")
MIN_N, MAX_N = 2, 8
TIE_RULE = "among the answers with the most votes, the one that appeared first wins"


@dataclass(frozen=True)
class Plan:
    mode: str  # "best_of" or "self_consistency"
    n: int
    scorer: str = "logprob"  # best_of
    extract: str = "last-line"  # self_consistency

    def __post_init__(self):
        if self.mode not in ("best_of", "self_consistency"):
            raise UsageError(f"Unknown test-time mode {self.mode!r}.")
        if not isinstance(self.n, int) or not MIN_N <= self.n <= MAX_N:
            what = "best-of" if self.mode == "best_of" else "self-consistency"
            raise UsageError(f"The {what} n (--{what.replace('_', '-')}) must be between "
                             f"{MIN_N} and {MAX_N}, got {self.n!r}.")
        if self.mode == "best_of" and self.scorer not in SCORERS:
            raise UsageError(f"Unknown scorer {self.scorer!r}; choose one of "
                             f"{', '.join(SCORERS)}.")
        if self.mode == "self_consistency":
            extractor(self.extract)  # raises for a bad one


def extractor(spec: str):
    """``last-line``, ``json:FIELD`` or ``regex:PATTERN`` -> a function text -> answer | None."""
    if spec == "last-line":
        def last_line(text: str) -> str | None:
            lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
            return lines[-1] if lines else None
        return last_line
    if spec.startswith("json:") and spec[5:]:
        name = spec[5:]

        def json_field(text: str) -> str | None:
            from app.structured import lenient

            verdict = lenient(text, None)
            if verdict.valid and isinstance(verdict.value, dict) and name in verdict.value:
                return json.dumps(verdict.value[name], sort_keys=True)
            return None
        return json_field
    if spec.startswith("regex:") and spec[6:]:
        try:
            pattern = re.compile(spec[6:])
        except re.error as exc:
            raise UsageError(f"The answer pattern {spec[6:]!r} is not a valid regular "
                             f"expression: {exc}.") from None

        def by_regex(text: str) -> str | None:
            matches = list(pattern.finditer(text))
            if not matches:
                return None
            last = matches[-1]  # the final answer is the last one stated
            return last.group(1) if pattern.groups else last.group(0)
        return by_regex
    raise UsageError(f"Unknown answer extractor {spec!r}: use last-line, json:FIELD or "
                     "regex:PATTERN.")


def normalise(answer: str) -> str:
    """Answers that differ only in case, spacing, quotes, bold or a final period are one."""
    text = " ".join(answer.split()).strip().strip("*`\"'").rstrip(".!").strip()
    return text.casefold()


@dataclass
class Candidate:
    index: int
    text: str = ""
    usage: Usage | None = None
    finish: Finished | None = None
    seed: int | None = None
    mean_logprob: float | None = None
    score: float | None = None
    answer: str | None = None

    def record(self) -> dict:
        return {"index": self.index, "text": self.text, "score": self.score,
                "answer": self.answer, "seed": self.seed, "mean_logprob": self.mean_logprob,
                "completion_tokens": self.usage.completion_tokens if self.usage else None,
                "finish": self.finish.reason.value if self.finish else None}


@dataclass
class Selection:
    """What the reply stores (``messages.candidates``): every candidate and how one won."""

    mode: str
    n: int
    candidates: list[Candidate] = field(default_factory=list)
    winner: int | None = None
    scorer: str | None = None
    extract: str | None = None
    votes: dict | None = None
    stopped_early: bool = False
    note: str | None = None

    def record(self) -> dict:
        data = {"mode": self.mode, "n": self.n, "winner": self.winner,
                "candidates": [c.record() for c in self.candidates]}
        if self.mode == "best_of":
            data["scorer"] = self.scorer
        else:
            data.update(extract=self.extract, votes=self.votes, tie_rule=TIE_RULE,
                        stopped_early=self.stopped_early)
        if self.note:
            data["note"] = self.note
        return data


class CandidatesEngine:
    """The Engine contract around another engine: n candidates, one reply."""

    def __init__(self, engine, plan: Plan):
        self.engine = engine
        self.plan = plan
        self.selection: Selection | None = None
        kind = getattr(engine, "knob_kind", "local")
        if plan.mode == "best_of" and plan.scorer in LOCAL_ONLY_SCORERS and kind != "local":
            raise UsageError(f"The {plan.scorer} scorer needs the local model (cloud providers "
                             "give no token probabilities here); use json, judge, or the local "
                             "model.")
        self.concurrent = kind != "local"

    # -- the Engine contract: delegate what is not about candidates ----------------------------
    @property
    def info(self):
        return self.engine.info

    @property
    def repair_engine(self):
        """A structured-output repair asks for one reply, not n candidates again."""
        return self.engine

    def __getattr__(self, name):  # knob_kind, answered, reason, count_prompt, wait_ready, …
        if name == "engine":
            raise AttributeError(name)
        return getattr(self.engine, name)

    def close(self) -> None:
        self.engine.close()

    def stream(self, request: ChatRequest, cancel: threading.Event) -> Iterator[StreamEvent]:
        plan = self.plan
        if request.temperature == 0:
            raise UsageError("With temperature 0 every candidate is the same reply; raise the "
                             "temperature for best-of-n or self-consistency.")
        selection = Selection(plan.mode, plan.n,
                              scorer=plan.scorer if plan.mode == "best_of" else None,
                              extract=plan.extract if plan.mode != "best_of" else None)
        self.selection = selection
        wants_logprobs = plan.mode == "best_of" and plan.scorer in ("logprob", "length", "json")
        wants_logprobs = wants_logprobs and getattr(self.engine, "knob_kind", "local") == "local"
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
        usage = _sum_usage([c.usage for c in done] + [getattr(self, "_judge_usage", None)])
        if cancel.is_set():
            winner = max(done, key=lambda c: len(c.text), default=None)
            if winner is not None and winner.text:
                yield TextDelta(winner.text)
            yield usage
            yield Finished(FinishReason.CANCELLED)
            return
        usable = [c for c in done if c.text.strip() and c.finish is not None and
                  c.finish.reason in (FinishReason.STOP, FinishReason.LENGTH)]
        if not usable:
            failure = next((c.finish for c in done if c.finish and c.finish.error), None)
            yield usage
            yield Finished(FinishReason.ERROR, error=failure.error if failure else UsageError(
                "None of the candidates produced a reply."))
            return
        if plan.mode == "best_of":
            winner = self._best(usable, request)
        else:
            winner = self._vote(usable, selection)
        usage = _sum_usage([c.usage for c in done] + [getattr(self, "_judge_usage", None)])
        selection.winner = winner.index
        yield TextDelta(winner.text)
        yield usage
        first = min((c.finish.ttft_ms for c in usable if c.finish.ttft_ms), default=None)
        yield Finished(winner.finish.reason, ttft_ms=first,
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
        try:
            reply = accumulate(self.engine.stream(request, mine))
        except Exception as exc:  # noqa: BLE001 - one candidate failing is not the turn failing
            reply = accumulate([Finished(FinishReason.ERROR, error=exc)])
        finally:
            mine.set()
            watcher.join()
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
                from app.structured import validate

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
        from app.structured import lenient, response_format

        # the conversation as the candidates saw it (the system prompt aside), newest last
        turns = [m for m in request.messages if m.role is not Role.SYSTEM]
        transcript = "\n\n".join(f"{m.role.value.title()}: {m.content.strip()}"
                                   for m in turns[:-1][-6:])
        question = (f"Conversation so far:\n{transcript}\n\nLast message:\n"
                    if transcript else "") + (turns[-1].content if turns else "")
        listing = "\n\n".join(f"[{i + 1}]\n{c.text.strip()}" for i, c in enumerate(usable))
        schema = {"type": "object", "properties": {"best": {
            "type": "integer", "minimum": 1, "maximum": len(usable)}}, "required": ["best"]}
        judge_request = dataclasses.replace(
            request, messages=(ChatMessage(Role.SYSTEM, "You judge answers. Pick the most "
                                                        "correct, helpful and complete one."),
                               ChatMessage(Role.USER, f"Question:\n{question}\n\nAnswers:\n\n"
                                                      f"{listing}\n\nWhich answer is best? "
                                                      "Reply as JSON: {\"best\": <number>}")),
            temperature=0.0, seed=0, max_tokens=20, logprobs=False, stop=(),
            response_format=response_format(schema),
            idempotency_key=f"{request.idempotency_key}~judge")
        reply = accumulate(self.engine.stream(judge_request, threading.Event()))
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


def _sum_usage(usages) -> Usage:
    present = [u for u in usages if u is not None]
    return Usage(sum(u.prompt_tokens for u in present),
                 sum(u.completion_tokens for u in present),
                 estimated=any(u.estimated for u in present),
                 cached_prompt_tokens=sum(u.cached_prompt_tokens for u in present))
