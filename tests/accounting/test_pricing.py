"""Price and context-window tables, model matching and the cost math (app/accounting/pricing.py)."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.accounting.pricing import (
    CONTEXT_WINDOWS_PATH,
    PRICES_PATH,
    ContextTable,
    Cost,
    Price,
    PriceTable,
    cost_of,
    estimate_before_sending,
    format_usd,
)
from app.config.providers import PRESETS
from app.domain.errors import UsageError
from app.domain.messages import Usage


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return PriceTable.load()


@pytest.fixture(scope="module")
def windows() -> ContextTable:
    return ContextTable.load()


def write(tmp_path: Path, data, name: str = "table.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def price_file(*models: dict, **top) -> dict:
    data = {"version": 1, "as_of": "2026-11-24", "currency": "USD", "unit": "per 1M tokens",
            "source": {"openai": "https://platform.openai.com/docs/pricing"},
            "models": list(models)}
    data.update(top)
    return data


def entry(model: str = "gpt-4o", provider: str = "openai", **fields) -> dict:
    item = {"provider": provider, "model": model, "input": 2.5, "cached_input": 1.25,
            "output": 10.0}
    item.update(fields)
    return item


def window_file(*models: dict, **top) -> dict:
    data = {"version": 1, "as_of": "2026-11-24", "models": list(models)}
    data.update(top)
    return data


def window(model: str = "gpt-4o", provider: str = "openai", **fields) -> dict:
    item = {"provider": provider, "model": model, "context_window": 128000, "max_output": 16384}
    item.update(fields)
    return item


# -- the cost math ------------------------------------------------------------------------------
def test_input_cached_and_output_tokens_are_priced_apart():
    price = Price(input=0.15, cached_input=0.075, output=0.60)
    cost = cost_of(Usage(prompt_tokens=1000, completion_tokens=500, cached_prompt_tokens=200),
                   price)
    assert cost.breakdown.input == pytest.approx(0.00012)  # 800 uncached x $0.15 / 1M
    assert cost.breakdown.cached == pytest.approx(0.000015)  # 200 cached x $0.075 / 1M
    assert cost.breakdown.output == pytest.approx(0.0003)  # 500 x $0.60 / 1M
    assert cost.usd == pytest.approx(0.000435)
    assert cost.estimated is False and cost.known and not cost.free


def test_the_sum_is_exact_decimal_not_float_noise():
    cost = cost_of(Usage(3, 0), Price(input=0.1, output=0.2))
    assert cost.usd == 3e-7  # 3 x 0.1 / 1M exactly, where floats would give 3.0000000000000004e-07


def test_cached_tokens_cost_full_input_when_there_is_no_cached_price():
    price = Price(input=5.0, cached_input=None, output=15.0)
    cost = cost_of(Usage(1_000_000, 0, cached_prompt_tokens=400_000), price)
    assert cost.breakdown.cached == pytest.approx(2.0)
    assert cost.usd == pytest.approx(5.0)


def test_a_million_tokens_of_each_cost_the_list_price(prices):
    gpt5 = prices.price_for("openai", "gpt-5")
    assert cost_of(Usage(1_000_000, 1_000_000), gpt5).usd == pytest.approx(1.25 + 10.0)
    sonnet = prices.price_for("anthropic", "claude-sonnet-4-20250514")
    cost = cost_of(Usage(2_000_000, 100_000, cached_prompt_tokens=1_000_000), sonnet)
    assert cost.usd == pytest.approx(3.0 + 0.30 + 1.5)


def test_cached_count_above_the_prompt_is_capped():
    cost = cost_of(Usage(100, 0, cached_prompt_tokens=500), Price(1.0, 2.0, 0.5))
    assert cost.breakdown.input == 0 and cost.breakdown.cached == pytest.approx(0.00005)


def test_negative_token_counts_are_refused():
    with pytest.raises(UsageError, match="negative"):
        cost_of(Usage(-1, 0), Price(1.0, 1.0))
    with pytest.raises(UsageError, match="negative"):
        estimate_before_sending(10, -1, Price(1.0, 1.0))


def test_unknown_price_is_unknown_never_zero(prices):
    assert prices.price_for("openai", "gpt-9-hypothetical") is None
    cost = cost_of(Usage(1000, 1000), None)
    assert cost.usd is None and not cost.known and cost.breakdown is None
    assert format_usd(cost) == "unknown"
    assert format_usd(None) == "unknown"
    assert "$0" not in format_usd(cost)


def test_local_models_are_free_explicitly(prices):
    price = prices.price_for("local", "smollm2-135m-instruct")
    assert price == Price.free("smollm2-135m-instruct") and price.is_free
    cost = cost_of(Usage(5000, 300), price)
    assert cost.usd == 0.0 and cost.free and cost.known
    assert format_usd(cost) == "free"


def test_counted_tokens_make_an_estimated_cost():
    cost = cost_of(Usage(1000, 100, estimated=True), Price(1.0, 2.0))
    assert cost.estimated is True and cost.usd == pytest.approx(0.0012)
    assert format_usd(cost) == "~$0.0012"
    assert cost_of(Usage(1000, 100, estimated=True), None).estimated is True


def test_estimate_before_sending_is_the_upper_bound(prices):
    price = prices.price_for("openai", "gpt-4o-mini")
    cost = estimate_before_sending(prompt_tokens=2000, max_tokens=512, price=price)
    assert cost.estimated is True
    assert cost.usd == pytest.approx(2000 * 0.15 / 1e6 + 512 * 0.60 / 1e6)
    assert cost.breakdown.cached == 0  # no cache assumed: an upper bound
    assert estimate_before_sending(2000, 512, None).usd is None
    assert estimate_before_sending(2000, 512, None).estimated is True
    free = estimate_before_sending(2000, 512, Price.free())
    assert free.usd == 0 and format_usd(free) == "free"


@pytest.mark.parametrize("usd, text", [
    (0.0012, "$0.0012"),
    (0.00043, "$0.00043"),  # two significant digits below a cent, never "$0.0004"
    (0.00045, "$0.00045"),
    (0.000455, "$0.00046"),
    (0.0009, "$0.00090"),
    (0.00004, "$0.000040"),
    (0.0000999, "$0.00010"),  # rounding up to the next power of ten keeps two digits
    (0.000004, "< $0.00001"),  # below what the ledger's totals keep
    (0.0, "$0"),
    (0.5, "$0.5000"),
    (1234.5, "$1,234.50"),
])
def test_format_usd(usd, text):
    assert format_usd(usd) == text
    assert format_usd(Cost(usd)) == text
    assert format_usd(Cost(usd, estimated=True)) == "~" + text


def test_small_costs_shown_add_up_to_their_total_shown():
    """Two profiles' $0.00045 each: the figures shown add up to the total shown (at four
    decimals they read $0.0004 + $0.0004 against a total of $0.0009)."""
    parts = [0.00045, 0.00045]
    shown = [float(format_usd(p).lstrip("$")) for p in parts]
    assert sum(shown) == pytest.approx(float(format_usd(sum(parts)).lstrip("$")))


def test_format_usd_refuses_nonsense():
    with pytest.raises(UsageError):
        format_usd(-0.01)
    with pytest.raises(UsageError):
        format_usd(float("nan"))


# -- model matching -----------------------------------------------------------------------------
@pytest.mark.parametrize("provider, model, known", [
    ("openai", "gpt-4o", "gpt-4o"),
    ("openai", "gpt-4o-2024-08-06", "gpt-4o"),
    ("openai", "gpt-4o-2024-11-20", "gpt-4o"),
    ("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("openai", "GPT-4o-Mini", "gpt-4o-mini"),
    ("openai", "gpt-4.1-2025-04-14", "gpt-4.1"),
    ("openai", "gpt-4.1-nano", "gpt-4.1-nano"),
    ("openai", "o3-mini-2025-01-31", "o3-mini"),
    ("openai", "o4-mini-2025-04-16", "o4-mini"),
    ("openai", "gpt-5-2025-08-07", "gpt-5"),
    ("anthropic", "claude-3-5-haiku-20241022", "claude-3-5-haiku"),
    ("anthropic", "claude-3-5-haiku-latest", "claude-3-5-haiku"),
    ("anthropic", "claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
    ("anthropic", "claude-sonnet-4-20250514", "claude-sonnet-4"),
    ("anthropic", "claude-sonnet-4-0", "claude-sonnet-4"),
    ("anthropic", "claude-opus-4-20250514", "claude-opus-4"),
    ("anthropic", "claude-opus-4-1-20250805", "claude-opus-4-1"),
    ("anthropic", "claude-haiku-4-5-20251001", "claude-haiku-4-5"),
    ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5"),
    # OpenRouter: the vendor prefix names the table, whatever the wire kind or preset.
    ("openai", "openai/gpt-4o-mini", "gpt-4o-mini"),
    ("openrouter", "openai/gpt-4o-mini", "gpt-4o-mini"),
    ("openrouter", "anthropic/claude-3.5-haiku", "claude-3-5-haiku"),
    ("openai", "anthropic/claude-sonnet-4.5", "claude-sonnet-4-5"),
])
def test_known_models_and_their_snapshots(prices, windows, provider, model, known):
    price = prices.price_for(provider, model)
    assert price is not None and price.model == known
    assert windows.limits(provider, model).model == known


def test_gpt_4o_mini_is_never_priced_as_gpt_4o(tmp_path, prices):
    only_4o = PriceTable.load(write(tmp_path, price_file(entry("gpt-4o"))))
    assert only_4o.price_for("openai", "gpt-4o").model == "gpt-4o"
    for model in ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini", "gpt-4o-audio",
                  "gpt-4o-2024", "gpt-4"):
        assert only_4o.price_for("openai", model) is None, model
    # And in the shipped table the two really differ.
    assert prices.price_for("openai", "gpt-4o-mini").input != prices.price_for("openai",
                                                                              "gpt-4o").input


def test_a_snapshot_with_its_own_price_wins_over_the_family(prices):
    first = prices.price_for("openai", "gpt-4o-2024-05-13")
    assert (first.input, first.output, first.cached_input) == (5.0, 15.0, None)
    assert prices.price_for("openai", "gpt-4o-2024-08-06").input == 2.5


@pytest.mark.parametrize("provider, model", [
    ("openai", "claude-3-5-haiku"),  # a model of another vendor, without its prefix
    ("anthropic", "gpt-4o"),
    ("groq", "llama-3.1-8b-instant"),
    ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
    ("ollama", "llama3.2"),
    ("openrouter", "gpt-4o-mini"),  # OpenRouter ids always carry the vendor
    ("openai", "chatgpt-4o-latest"),  # a different model, priced differently
    ("openai", "gpt-5-chat-latest"),
    ("openai", ""),
    ("", "gpt-4o"),
])
def test_models_we_cannot_price_are_unknown(prices, windows, provider, model):
    assert prices.price_for(provider, model) is None
    assert windows.context_window(provider, model) is None


def test_the_ledger_prices_through_the_table(prices):
    from app.storage.ledger import UsageLedger

    ledger = UsageLedger(None, "ana", lambda kind, provider, model: prices.price_for(kind, model))
    usd, estimated = ledger.cost("openai", "openrouter", "openai/gpt-4o-mini", Usage(1000, 500))
    assert usd == pytest.approx(0.00045) and estimated is False
    assert ledger.cost("openai", "groq", "llama-3.1-8b-instant", Usage(10, 10)) == (None, False)


# -- context windows ----------------------------------------------------------------------------
def test_context_windows_of_known_models(windows):
    assert windows.context_window("openai", "gpt-4o-mini") == 128_000
    assert windows.max_output("openai", "gpt-4o-mini") == 16_384
    assert windows.context_window("openai", "gpt-4.1-mini-2025-04-14") == 1_047_576
    assert windows.context_window("anthropic", "claude-3-5-haiku-latest") == 200_000
    assert windows.max_output("anthropic", "claude-3-5-haiku-latest") == 8192
    gpt5 = windows.limits("openai", "gpt-5")
    assert (gpt5.context_window, gpt5.max_output, gpt5.max_input) == (400_000, 128_000, 272_000)
    assert windows.context_window("local", "anything") is None


def test_user_overrides_win(windows, tmp_path):
    assert windows.context_window("openai", "gpt-4o-mini", user_overrides={"gpt-4o-mini": 8000}
                                  ) == 8000
    # The override matches the canonical id too, and the vendor-prefixed form.
    assert windows.context_window("openai", "gpt-4o-mini-2024-07-18",
                                  user_overrides={"gpt-4o-mini": 9000}) == 9000
    assert windows.context_window("openrouter", "openai/gpt-4o-mini",
                                  user_overrides={"openai/gpt-4o-mini": 7000}) == 7000
    # A model the table does not know gets the user's value.
    assert windows.context_window("groq", "llama-3.1-8b-instant",
                                  user_overrides={"llama-3.1-8b-instant": 131072}) == 131072
    # Given at load, for every lookup; one given to the call wins over it.
    table = ContextTable.load(user_overrides={"claude-3-5-haiku": 50_000})
    assert table.context_window("anthropic", "claude-3-5-haiku-latest") == 50_000
    assert table.context_window("anthropic", "claude-3-5-haiku-latest",
                                user_overrides={"claude-3-5-haiku-latest": 60_000}) == 60_000
    with pytest.raises(UsageError, match="gpt-4o.*whole number"):
        windows.context_window("openai", "gpt-4o", user_overrides={"gpt-4o": 0})
    with pytest.raises(UsageError, match="whole number"):
        ContextTable.load(user_overrides={"gpt-4o": "lots"})


# -- the shipped files --------------------------------------------------------------------------
def test_the_shipped_tables_load_and_are_dated(prices, windows):
    assert prices.path == PRICES_PATH and windows.path == CONTEXT_WINDOWS_PATH
    for table in (prices, windows):
        assert isinstance(table.as_of, dt.date)
        assert dt.date(2025, 1, 1) <= table.as_of <= dt.date.today()
    raw = json.loads(PRICES_PATH.read_text(encoding="utf-8"))
    dt.date.fromisoformat(raw["as_of"])  # written YYYY-MM-DD
    assert raw["currency"] == "USD" and raw["unit"] == "per 1M tokens"


def test_every_priced_provider_has_a_source(prices, windows):
    providers = {p.provider for p in prices.prices}
    assert providers >= {"openai", "anthropic"}
    for provider in providers:
        assert prices.source_for(provider).startswith("https://"), provider
        assert windows.sources.get(provider, "").startswith("https://"), provider


def test_shipped_prices_are_sane(prices):
    for price in prices.prices:
        assert price.input > 0 and price.output >= price.input, price
        if price.cached_input is not None:
            assert 0 < price.cached_input < price.input, price


def test_every_priced_model_has_a_context_window(prices, windows):
    raw = json.loads(PRICES_PATH.read_text(encoding="utf-8"))
    missing = [f"{m['provider']}/{name}" for m in raw["models"]
               for name in [m["model"], *m.get("aliases", [])]
               if windows.limits(m["provider"], name) is None]
    assert missing == [], f"priced but without a context window entry: {missing}"


def test_the_presets_default_cloud_models_are_priced(prices, windows):
    for name in ("openai", "anthropic", "openrouter"):
        preset = PRESETS[name]
        assert prices.price_for(name, preset.default_model) is not None, name
        assert prices.price_for(preset.kind, preset.default_model) is not None, name
        assert windows.context_window(preset.kind, preset.default_model) is not None, name


def test_pricing_never_imports_qt():
    code = ("import sys, app.accounting.pricing\n"
            "app.accounting.pricing.PriceTable.load(); app.accounting.pricing.ContextTable.load()\n"
            "print('PySide6' in sys.modules, 'ui' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


# -- bad files ----------------------------------------------------------------------------------
@pytest.mark.parametrize("data, message", [
    (price_file(entry(input=-1)), r"models\[0\] \(openai/gpt-4o\): 'input' must not be negative"),
    (price_file(entry(output=-0.5)), r"models\[0\] \(openai/gpt-4o\): 'output' must not be neg"),
    (price_file(entry(cached_input=-0.1)), r"'cached_input' must not be negative"),
    (price_file(entry(input="2.50")), r"'input' must be a number, got '2.50'"),
    (price_file(entry(input=True)), r"'input' must be a number"),
    (price_file(entry(), {"provider": "openai", "model": "o3", "input": 2.0, "cached_input": 0.5}),
     r"models\[1\] \(openai/o3\): is missing 'output'"),
    (price_file({"provider": "openai", "model": "o3", "input": 2.0, "output": 8.0}),
     r"is missing 'cached_input' \(null when there is none\)"),
    (price_file({"model": "o3", "input": 2.0, "cached_input": None, "output": 8.0}),
     r"models\[0\]: is missing 'provider'"),
    (price_file(entry("gpt-4o"), entry("GPT-4o")),
     r"models\[1\] \(openai/gpt-4o\): 'gpt-4o' is listed twice for provider 'openai'"),
    (price_file(entry("gpt-4o"), entry("gpt-4o-x", aliases=["gpt-4o"])),
     r"'gpt-4o' is listed twice"),
    (price_file(entry("openai/gpt-4o")), r"without a vendor prefix"),
    (price_file(entry(), version=2), r"has version 2; this Outpost reads version 1"),
    (price_file(entry(), version="1"), r"has version '1'"),
    ({k: v for k, v in price_file(entry()).items() if k != "version"}, r"has no 'version'"),
    (price_file(entry(), as_of="24/11/2026"), r"'as_of': must be a date written YYYY-MM-DD"),
    (price_file(entry(), as_of="2026-02-30"), r"'as_of'"),
    (price_file(entry(), currency="EUR"), r"'currency': must be 'USD'"),
    (price_file(entry(), unit="per 1K tokens"), r"'unit': must be 'per 1M tokens'"),
    (price_file(entry(), models={"gpt-4o": {}}), r"'models': must be a list"),
    (price_file("gpt-4o"), r"models\[0\]: must be an object"),
    ([1, 2], r"top level: must be a JSON object"),
    ("{not json", r"is not valid JSON \(line 1"),
])
def test_bad_price_files_give_specific_errors(tmp_path, data, message):
    path = write(tmp_path, data, "prices.json")
    with pytest.raises(UsageError, match=message) as caught:
        PriceTable.load(path)
    assert str(path) in str(caught.value)


def test_a_missing_price_file_says_so(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        PriceTable.load(tmp_path / "nope.json")


@pytest.mark.parametrize("data, message", [
    (window_file(window(context_window=-5)),
     r"models\[0\] \(openai/gpt-4o\): 'context_window' must be a whole number"),
    (window_file(window(max_output=200_000)), r"'max_output' \(200000\) is larger than"),
    (window_file(window(max_input=200_000)), r"'max_input' \(200000\) is larger than"),
    (window_file(window(context_window=1.5)), r"'context_window' must be a whole number"),
    (window_file({"provider": "openai", "model": "o3", "context_window": 200000}),
     r"models\[0\] \(openai/o3\): is missing 'max_output'"),
    (window_file(window(), window()), r"'gpt-4o' is listed twice"),
    (window_file(window(), version=3), r"has version 3"),
    (window_file(window(), as_of=None), r"'as_of'"),
])
def test_bad_context_files_give_specific_errors(tmp_path, data, message):
    path = write(tmp_path, data, "context_windows.json")
    with pytest.raises(UsageError, match=message) as caught:
        ContextTable.load(path)
    assert str(path) in str(caught.value)


def test_a_good_custom_file_loads(tmp_path):
    path = write(tmp_path, price_file(entry("gpt-4o"), entry("o3-mini", cached_input=None)))
    table = PriceTable.load(str(path))
    assert table.price_for("openai", "o3-mini").cached_input is None
    assert table.as_of == dt.date(2026, 11, 24)
