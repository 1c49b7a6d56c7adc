"""What the local engine makes of llama.cpp's output, token by token: text deltas with stop
sequences held back (``TextAssembler``) and each sampled token's log-probability
(``LogprobScorer``, for best-of-n). Pure helpers, apart from llama_cpp's logits-processor list."""
from __future__ import annotations

import codecs


class LogprobScorer:
    """The log-probability of each sampled token under the model's raw distribution (a logits
    processor sees the logits just before each token is sampled)."""

    def __init__(self):
        import llama_cpp  # deferred: llama_cpp loads only with a model

        self._latest = None
        self.logprobs: list[float] = []
        self.processors = llama_cpp.LogitsProcessorList([self._see])

    def _see(self, input_ids, scores):
        import numpy as np  # deferred: numpy (llama_cpp's) only for log-probabilities

        shifted = scores - np.max(scores)
        self._latest = shifted - np.log(np.sum(np.exp(shifted)))
        return scores

    def took(self, token: int) -> None:
        if self._latest is not None:
            self.logprobs.append(float(self._latest[token]))

    def mean(self) -> float | None:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else None


class TextAssembler:
    """Bytes from the detokenizer -> text deltas, with stop sequences held back.

    Multi-byte UTF-8 characters split across tokens are joined by an incremental decoder; text
    that could be the start of a stop sequence is held until it is known not to be one.
    """

    def __init__(self, stops: tuple[str, ...]):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = tuple(s for s in stops if s)
        self._pending = ""

    def feed(self, data: bytes) -> tuple[str, bool]:
        self._pending += self._decoder.decode(data)
        for stop in self._stops:
            index = self._pending.find(stop)
            if index != -1:
                text, self._pending = self._pending[:index], ""
                return text, True
        hold = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(self._pending)), 0, -1):
                if self._pending.endswith(stop[:size]):
                    hold = max(hold, size)
                    break
        cut = len(self._pending) - hold
        text, self._pending = self._pending[:cut], self._pending[cut:]
        return text, False

    def flush(self) -> str:
        """The held-back text. Bytes of a character cut off by max_tokens are dropped, not
        shown as U+FFFD."""
        text, self._pending = self._pending, ""
        self._decoder.reset()
        return text
