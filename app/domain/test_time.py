"""Test-time compute as data: the plan (best-of-n or self-consistency), each candidate, and the
selection a reply stores (``messages.candidates``). The engine that samples and chooses is
``app.chat.candidates.CandidatesEngine``; this module is pure data and answer extraction.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from app.domain.context import Fanout
from app.domain.errors import UsageError
from app.domain.messages import Finished, Usage
from app.domain.structured import lenient

SCORERS = ("logprob", "length", "json", "judge")
# how a reply's footer and details say which scorer picked it ("best of 3 by valid JSON")
SCORER_LABELS = {"logprob": "mean log-probability", "length": "length-normalised probability",
                 "json": "valid JSON", "judge": "a judge model"}
LOCAL_ONLY_SCORERS = ("logprob", "length")
MIN_N, MAX_N = 2, 8
# the judge's request: its reply's max_tokens, and what its wording (the instructions, the
# labels around the question and each answer, the schema) adds to the prompt, at most
JUDGE_MAX_TOKENS = 20
JUDGE_WORDING_TOKENS = 80 + 4 * MAX_N
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

    def fanout(self) -> Fanout:
        """The requests this plan can send, for the quotas: n candidates, each the prompt and
        a reply; a judge sees the prompt and every candidate and answers in a few tokens."""
        if self.mode == "best_of" and self.scorer == "judge":
            return Fanout(self.n + 1, self.n + 1, 2 * self.n,
                          JUDGE_WORDING_TOKENS + JUDGE_MAX_TOKENS, f"best of {self.n} and a judge")
        what = f"best of {self.n}" if self.mode == "best_of" else \
            f"self-consistency over {self.n}"
        return Fanout(self.n, self.n, self.n, 0, what)


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


# "Answer: 4", "**Final answer:** 4", "The answer is 4", "So the answer is: 4" all say 4
_ANSWER_LABEL = re.compile(
    r"^(?:so,?\s+)?(?:the\s+)?(?:final\s+)?answer\b(?:\s+is\b)?\s*(?:[:=]|-(?=\s))?\s*", re.IGNORECASE)


def normalise(answer: str) -> str:
    """Answers that differ only in case, spacing, quotes, bold, a final period or a label
    before them ("Answer:", "The final answer is") are one."""
    def bare(text: str) -> str:
        return text.strip().strip("*`\"'").rstrip(".!").strip()

    text = bare(" ".join(answer.split()))
    unlabelled = bare(_ANSWER_LABEL.sub("", text, count=1))
    return (unlabelled or text).casefold()


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


def check_candidates_differ(temperature: float) -> None:
    """Sampling n candidates needs randomness: at temperature 0 every one is the same reply."""
    if temperature == 0:
        raise UsageError("With temperature 0 every candidate is the same reply; raise the "
                         "temperature for best-of-n or self-consistency.")
