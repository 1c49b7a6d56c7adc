"""Prices and context windows of known cloud models, and the cost math (Qt-free).

Two versioned tables ship in ``resources/``:

* ``prices.json``: USD per 1M tokens (input, cached input, output) per provider and model, with
  the date the figures were checked (``as_of``) and a source URL per provider.
* ``context_windows.json``: the context window and the most output tokens per model.

A model is found by its exact id first, then with a dated-snapshot or ``-latest`` suffix taken off
(``gpt-4o-2024-08-06`` -> ``gpt-4o``, ``claude-3-5-haiku-20241022`` / ``claude-3-5-haiku-latest``
-> ``claude-3-5-haiku``), then by the aliases an entry lists. A vendor prefix as OpenRouter writes
it (``openai/gpt-4o-mini``, ``anthropic/claude-3.5-haiku``) names the vendor's table. There is no
looser prefix match: ``gpt-4o-mini`` is never priced as ``gpt-4o``, and a model the table does not
know has no price (``None``), which is shown as *unknown*, never as zero. A snapshot priced
differently from its family (``gpt-4o-2024-05-13``) has an entry of its own, which wins.

Local models cost nothing, explicitly (``Price.free()``). Costs are reckoned in ``Decimal`` so
that ``1,000 tokens at $0.15 per 1M`` is exactly $0.00015.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Iterable, Mapping

from app.config.file_schema import MAX_NESTING, MAX_WHOLE, ConfigFile, depth_of, is_text
from app.config.paths import resource
from app.domain.errors import UsageError
from app.domain.messages import Usage

SUPPORTED_VERSION = 1
PRICES_PATH = resource("prices.json")
CONTEXT_WINDOWS_PATH = resource("context_windows.json")
LOCAL = "local"
CURRENCY = "USD"
PRICE_UNIT = "per 1M tokens"
_PER = Decimal(1_000_000)
MAX_TABLE_BYTES = 4 * 1024 * 1024  # the shipped tables are a few KB; a bigger one is not a table

# A dated snapshot (OpenAI -YYYY-MM-DD, Anthropic -YYYYMMDD) or a moving alias (-latest).
_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")
_VERSION_DOT = re.compile(r"(?<=\d)\.(?=\d)")  # claude-3.5-haiku (OpenRouter) -> claude-3-5-haiku


# -- prices and costs ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Price:
    """USD per 1M tokens. ``cached_input`` is None when the provider has no cached-input price
    (cached prompt tokens are then billed as ordinary input)."""

    input: float
    output: float
    cached_input: float | None = None
    provider: str = ""
    model: str = ""
    is_free: bool = False

    @classmethod
    def free(cls, model: str = "") -> "Price":
        """The price of a local model: zero, on purpose (not unknown)."""
        return cls(0.0, 0.0, 0.0, LOCAL, model, True)

    @property
    def cached_rate(self) -> float:
        return self.input if self.cached_input is None else self.cached_input


@dataclass(frozen=True)
class CostBreakdown:
    """USD for each kind of token: uncached prompt, cached prompt, completion."""

    input: float
    cached: float
    output: float


@dataclass(frozen=True)
class Cost:
    """``usd`` None means unknown (no price for the model): never show it as zero."""

    usd: float | None
    estimated: bool = False
    breakdown: CostBreakdown | None = None
    free: bool = False

    @property
    def known(self) -> bool:
        return self.usd is not None


def _dec(value: float) -> Decimal:
    return Decimal(repr(float(value)))


def cost_of(usage: Usage, price: Price | None) -> Cost:
    """What ``usage`` costs at ``price``.

    ``usage.prompt_tokens`` includes the cached ones (as both engines report it); the cached
    prompt tokens are billed at ``cached_input`` (at ``input`` where that is null), the rest of
    the prompt at ``input``, the completion at ``output``. An unknown price gives ``usd`` None;
    counted (not reported) tokens make the cost ``estimated``. Anthropic cache writes are billed
    as plain input here (Outpost does not ask for them).
    """
    if usage.prompt_tokens < 0 or usage.completion_tokens < 0 or usage.cached_prompt_tokens < 0:
        raise UsageError(f"Token counts cannot be negative (got {usage.prompt_tokens} prompt, "
                         f"{usage.cached_prompt_tokens} cached, {usage.completion_tokens} "
                         "completion).")
    if price is None:
        return Cost(None, usage.estimated)
    if price.is_free:
        return Cost(0.0, usage.estimated, CostBreakdown(0.0, 0.0, 0.0), free=True)
    cached = min(usage.cached_prompt_tokens, usage.prompt_tokens)
    fresh = usage.prompt_tokens - cached
    input_usd = Decimal(fresh) * _dec(price.input) / _PER
    cached_usd = Decimal(cached) * _dec(price.cached_rate) / _PER
    output_usd = Decimal(usage.completion_tokens) * _dec(price.output) / _PER
    return Cost(float(input_usd + cached_usd + output_usd), usage.estimated,
                CostBreakdown(float(input_usd), float(cached_usd), float(output_usd)))


def estimate_before_sending(prompt_tokens: int, max_tokens: int, price: Price | None) -> Cost:
    """The most a request can cost: the whole prompt uncached, and ``max_tokens`` of output.
    Always ``estimated``."""
    if prompt_tokens < 0 or max_tokens < 0:
        raise UsageError(f"Token counts cannot be negative (got {prompt_tokens} prompt, "
                         f"{max_tokens} max tokens).")
    return cost_of(Usage(prompt_tokens, max_tokens, estimated=True), price)


def affordable_output_tokens(usd: float, prompt_tokens: int, price: Price) -> int | None:
    """The most output tokens ``usd`` buys at ``price`` once a prompt of ``prompt_tokens`` is
    paid for, the whole prompt at the uncached input rate (the most it can cost). Negative
    when not even the prompt is affordable; None when output costs nothing (the dollars set
    no limit on the reply)."""
    left = _dec(max(usd, 0.0)) - Decimal(prompt_tokens) * _dec(price.input) / _PER
    if left < 0:
        return -1
    if price.output <= 0:
        return None
    return int(left * _PER // _dec(price.output))


SMALLEST_SHOWN_USD = 0.00001  # the ledger's totals keep six decimals: less is not shown


def format_usd(cost: "Cost | float | None") -> str:
    """``$0.00045`` (two significant digits below a cent, so small amounts keep their size
    and add up: ``$0.00045`` + ``$0.00045`` = ``$0.00090``), ``$0.0123`` (below a dollar),
    ``$1.25``, ``< $0.00001``, ``$0`` (a known zero), ``free`` (a local model), ``unknown`` (no
    price: never ``$0.00``). An estimated cost is marked with a leading ``~``."""
    approx = False
    if isinstance(cost, Cost):
        if cost.free:
            return "free"
        usd, approx = cost.usd, cost.estimated
    else:
        usd = cost
    if usd is None:
        return "unknown"
    if isinstance(usd, bool) or not isinstance(usd, (int, float)) or not math.isfinite(usd):
        raise UsageError(f"A cost must be a finite number of dollars, got {usd!r}.")
    if usd < 0:
        raise UsageError(f"A cost cannot be negative, got {usd!r}.")
    small = _two_significant(usd) if 0 < usd < 0.01 else None
    if usd == 0:
        text = "$0"
    elif usd < SMALLEST_SHOWN_USD:
        text = f"< ${SMALLEST_SHOWN_USD:.5f}"
    elif small is not None and small < Decimal("0.01"):
        text = f"${small:f}"
    elif usd < 1:
        text = f"${usd:.4f}"
    else:
        text = f"${usd:,.2f}"
    return f"~{text}" if approx else text


def _two_significant(usd: float) -> Decimal:
    """``usd`` rounded (half up) to two significant digits: 0.000454 -> 0.00045."""
    exact = _dec(usd)
    rounded = exact.quantize(Decimal(1).scaleb(exact.adjusted() - 1), ROUND_HALF_UP)
    if rounded.adjusted() != exact.adjusted():  # 0.0000999 -> 0.00010: one digit too many
        rounded = rounded.quantize(Decimal(1).scaleb(rounded.adjusted() - 1), ROUND_HALF_UP)
    return rounded


# -- loading and validating the tables ----------------------------------------------------------
class _Invalid(Exception):
    """One problem in one place of a table file; turned into a UsageError naming the file."""


def _problem(path: Path, what: str, where: str, problem: str) -> UsageError:
    return UsageError(f"The {what} {path} is invalid: {where}: {problem}.")


def _read(path: Path, what: str) -> dict:
    try:
        data = ConfigFile(path, what, max_bytes=MAX_TABLE_BYTES).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"The {what} {path} does not exist.") from None
    try:
        raw = json.loads(data.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"The {what} {path} is not valid JSON (line {exc.lineno}, column "
                         f"{exc.colno}: {exc.msg}).") from None
    except UnicodeDecodeError:
        raise UsageError(f"The {what} {path} could not be read (it is not UTF-8 text)."
                         ) from None
    except RecursionError:
        raise _problem(path, what, "top level", f"nests more than {MAX_NESTING} levels deep"
                       ) from None
    except ValueError:  # an integer thousands of digits long
        raise _problem(path, what, "top level", "holds a number thousands of digits long"
                       ) from None
    if depth_of(raw) > MAX_NESTING:
        raise _problem(path, what, "top level", f"nests more than {MAX_NESTING} levels deep")
    if not isinstance(raw, dict):
        raise _problem(path, what, "top level", "must be a JSON object")
    if "version" not in raw:
        raise _problem(path, what, "top level", "has no 'version'")
    version = raw["version"]
    if isinstance(version, bool) or version != SUPPORTED_VERSION:
        raise UsageError(f"The {what} {path} has version {version!r}; this Outpost reads "
                         f"version {SUPPORTED_VERSION} only.")
    as_of = raw.get("as_of")
    try:
        if not isinstance(as_of, str):
            raise ValueError
        dt.date.fromisoformat(as_of)
    except ValueError:
        raise _problem(path, what, "'as_of'", f"must be a date written YYYY-MM-DD, got {as_of!r}"
                       ) from None
    source = raw.get("source")
    if source is not None and not isinstance(source, str) and not (
            isinstance(source, dict) and all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in source.items())):
        raise _problem(path, what, "'source'", "must be a URL or an object of provider -> URL")
    if not isinstance(raw.get("models"), list):
        raise _problem(path, what, "'models'", "must be a list of model entries")
    return raw


def _text(entry: dict, key: str) -> str:
    if key not in entry:
        raise _Invalid(f"is missing '{key}'")
    value = entry[key]
    if not is_text(value) or not value.strip():
        raise _Invalid(f"'{key}' must be a non-empty string, got {value!r}")
    return value.strip().lower()


def _number(entry: dict, key: str, nullable: bool = False) -> float | None:
    if key not in entry:
        raise _Invalid(f"is missing '{key}'" + (" (null when there is none)" if nullable else ""))
    value = entry[key]
    if value is None and nullable:
        return None
    finite = isinstance(value, int) and abs(value) <= MAX_WHOLE or \
        isinstance(value, float) and math.isfinite(value)
    if isinstance(value, bool) or not finite:
        raise _Invalid(f"'{key}' must be a number, got {value!r}")
    if value < 0:
        raise _Invalid(f"'{key}' must not be negative, got {value!r}")
    return float(value)


def _count(entry: dict, key: str, required: bool = True) -> int | None:
    if key not in entry:
        if required:
            raise _Invalid(f"is missing '{key}'")
        return None
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WHOLE:
        raise _Invalid(f"'{key}' must be a whole number of tokens above 0, got {value!r}")
    return value


def _aliases(entry: dict) -> list[str]:
    value = entry.get("aliases", [])
    if not isinstance(value, list) or not all(is_text(a) and a.strip() for a in value):
        raise _Invalid(f"'aliases' must be a list of model ids, got {value!r}")
    return [a.strip().lower() for a in value]


def _sources(raw: dict) -> dict[str, str]:
    source = raw.get("source")
    if isinstance(source, dict):
        return {k.lower(): v for k, v in source.items()}
    if isinstance(source, str):
        return {"*": source}
    return {}


class _ModelIndex:
    """Entries of one table keyed by (vendor, id), with the matching rules of this module."""

    def __init__(self, path: Path, what: str, models: list, parse) -> None:
        self.by_vendor: dict[str, dict[str, Any]] = {}
        self.entries: list[Any] = []
        for index, entry in enumerate(models):
            where = f"models[{index}]"
            try:
                if not isinstance(entry, dict):
                    raise _Invalid("must be an object")
                vendor, model = _text(entry, "provider"), _text(entry, "model")
                where = f"models[{index}] ({vendor}/{model})"
                if "/" in model:
                    raise _Invalid("'model' must be the id without a vendor prefix")
                item = parse(entry, vendor, model)
                names = [model] + _aliases(entry)
            except _Invalid as exc:
                raise _problem(path, what, where, str(exc)) from None
            known = self.by_vendor.setdefault(vendor, {})
            for name in names:
                if name in known:
                    raise _problem(path, what, where,
                                   f"'{name}' is listed twice for provider '{vendor}'")
                known[name] = item
            self.entries.append(item)

    def find(self, provider: str, model: str) -> tuple[str, Any] | None:
        """(vendor, entry) for a provider kind or name and a model id; None when unknown."""
        if not model or not model.strip():
            return None
        name = model.strip().lower()
        vendor = (provider or "").strip().lower()
        if "/" in name:
            vendor, _, name = name.partition("/")
        known = self.by_vendor.get(vendor)
        if not known:
            return None
        for candidate in _candidates(name):
            if candidate in known:
                return vendor, known[candidate]
        return None


def _candidates(name: str) -> Iterable[str]:
    """The exact id, then the id without a snapshot/-latest suffix, then both with version dots
    written as hyphens (OpenRouter's ``claude-3.5-haiku``). Never a shorter prefix."""
    names = [name]
    stripped = _SUFFIX.sub("", name)
    if stripped != name:
        names.append(stripped)
    for item in list(names):
        hyphenated = _VERSION_DOT.sub("-", item)
        if hyphenated != item:
            names.append(hyphenated)
    return names


@dataclass
class PriceTable:
    """The shipped price table (``PriceTable.load()``)."""

    path: Path
    as_of: dt.date
    sources: dict[str, str]
    prices: list[Price]
    _index: _ModelIndex = field(repr=False, default=None)  # type: ignore[assignment]

    @classmethod
    def load(cls, path: Path | str | None = None) -> "PriceTable":
        path = Path(path) if path is not None else PRICES_PATH
        what = "price table"
        raw = _read(path, what)
        if raw.get("currency") != CURRENCY:
            raise _problem(path, what, "'currency'",
                           f"must be {CURRENCY!r}, got {raw.get('currency')!r}")
        if raw.get("unit") != PRICE_UNIT:
            raise _problem(path, what, "'unit'", f"must be {PRICE_UNIT!r}, got {raw.get('unit')!r}")

        def parse(entry: dict, vendor: str, model: str) -> Price:
            input_, output = _number(entry, "input"), _number(entry, "output")
            cached = _number(entry, "cached_input", nullable=True)
            return Price(input_, output, cached, vendor, model)  # type: ignore[arg-type]

        index = _ModelIndex(path, what, raw["models"], parse)
        return cls(path, dt.date.fromisoformat(raw["as_of"]), _sources(raw), index.entries, index)

    def price_for(self, provider: str, model: str) -> Price | None:
        """The price of ``model`` at ``provider``: a wire kind (``openai``, ``anthropic``) or a
        preset name (see ``app.config.providers.PRESETS``; ``openrouter`` and the other hosts are
        found through the vendor prefix of their model ids). ``local`` is free; unknown is None."""
        if (provider or "").strip().lower() == LOCAL:
            return Price.free(model)
        found = self._index.find(provider, model)
        return found[1] if found else None

    def source_for(self, provider: str) -> str | None:
        return self.sources.get((provider or "").lower()) or self.sources.get("*")


@dataclass(frozen=True)
class ModelLimits:
    """Tokens: the whole window (prompt + output), the most output, and the most prompt where
    the provider caps it below the window (GPT-5: 272K of a 400K window)."""

    context_window: int
    max_output: int
    max_input: int | None = None
    provider: str = ""
    model: str = ""


@dataclass
class ContextTable:
    """The shipped context-window table (``ContextTable.load()``). ``user_overrides`` (model id
    -> tokens, a setting) win over the table, for known and unknown models alike."""

    path: Path
    as_of: dt.date
    sources: dict[str, str]
    limits_list: list[ModelLimits]
    user_overrides: dict[str, int] = field(default_factory=dict)
    _index: _ModelIndex = field(repr=False, default=None)  # type: ignore[assignment]

    @classmethod
    def load(cls, path: Path | str | None = None,
             user_overrides: Mapping[str, int] | None = None) -> "ContextTable":
        path = Path(path) if path is not None else CONTEXT_WINDOWS_PATH
        what = "context-window table"
        raw = _read(path, what)

        def parse(entry: dict, vendor: str, model: str) -> ModelLimits:
            window = _count(entry, "context_window")
            max_output = _count(entry, "max_output")
            max_input = _count(entry, "max_input", required=False)
            if max_output > window:  # type: ignore[operator]
                raise _Invalid(f"'max_output' ({max_output}) is larger than 'context_window' "
                               f"({window})")
            if max_input is not None and max_input > window:  # type: ignore[operator]
                raise _Invalid(f"'max_input' ({max_input}) is larger than 'context_window' "
                               f"({window})")
            return ModelLimits(window, max_output, max_input, vendor, model)  # type: ignore[arg-type]

        index = _ModelIndex(path, what, raw["models"], parse)
        table = cls(path, dt.date.fromisoformat(raw["as_of"]), _sources(raw), index.entries,
                    _check_overrides(user_overrides or {}), index)
        return table

    def limits(self, provider: str, model: str) -> ModelLimits | None:
        if (provider or "").strip().lower() == LOCAL:
            return None  # the local engine knows its own n_ctx
        found = self._index.find(provider, model)
        return found[1] if found else None

    def context_window(self, provider: str, model: str,
                       user_overrides: Mapping[str, int] | None = None) -> int | None:
        """The model's window in tokens; a user override (given here or to ``load``) wins;
        None when unknown."""
        overrides = dict(self.user_overrides)
        overrides.update(_check_overrides(user_overrides or {}))
        if overrides:
            keys = {k.strip().lower(): v for k, v in overrides.items()}
            for name in self._override_names(provider, model):
                if name in keys:
                    return keys[name]
        limits = self.limits(provider, model)
        return limits.context_window if limits else None

    def max_output(self, provider: str, model: str) -> int | None:
        limits = self.limits(provider, model)
        return limits.max_output if limits else None

    def _override_names(self, provider: str, model: str) -> list[str]:
        name = (model or "").strip().lower()
        names = [name]
        if "/" in name:
            names.append(name.partition("/")[2])
        found = self._index.find(provider, model) if (provider or "").lower() != LOCAL else None
        if found:
            vendor, limits = found
            names += [limits.model, f"{vendor}/{limits.model}"]
        return names


def _check_overrides(overrides: Mapping[str, int]) -> dict[str, int]:
    checked = {}
    for key, value in overrides.items():
        if not is_text(key) or not key.strip():
            raise UsageError(f"A context-window override needs a model id, got {key!r}.")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WHOLE:
            raise UsageError(f"The context-window override for {key!r} must be a whole number "
                             f"of tokens above 0, got {value!r}.")
        checked[key] = value
    return checked
