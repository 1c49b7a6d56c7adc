"""`outpost providers models NAME` lists the models of either wire format's provider, against
the fault-injecting fake provider on loopback (tests/fault_server.py)."""
from __future__ import annotations

import pytest

from app import cli
from tests.fault_server import fault_server

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_providers_models_lists_every_kind(capsys, kind):
    """Anthropic's `GET /v1/models` is listed as OpenAI's is (it was refused: "Listing models
    is available for OpenAI-compatible providers."), every page of it."""
    models = [f"model-{i:02d}" for i in range(5)]
    with fault_server(models) as server:
        server.max_page = 2  # Anthropic's listing then takes three pages
        base = server.url + ("/v1" if kind == "openai" else "")
        assert cli.main(["providers", "add", "p", "--kind", kind, "--base-url", base,
                         "--model", "model-00"]) == 0
        capsys.readouterr()
        assert cli.main(["providers", "models", "p"]) == 0
        pages = len(server.requests)
    assert capsys.readouterr().out.split() == models
    assert pages == (1 if kind == "openai" else 3)
