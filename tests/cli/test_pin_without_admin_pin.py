"""A profile's PIN is worth little while the admin has none: anyone can sign in as the admin
and clear it. A privacy trial found `profile add ana --pin` said only "Added the profile ana
with a PIN."; now a warning says so, and how to give the admin a PIN."""
from __future__ import annotations

import json

import pytest

from app import cli

pytestmark = pytest.mark.usefixtures("outpost_home")


def test_a_pin_given_while_the_admin_has_none_is_warned_of(capsys, monkeypatch):
    assert cli.main(["profile", "list", "--json"]) == 0
    [admin] = [row["name"] for row in json.loads(capsys.readouterr().out)]
    monkeypatch.setenv("OUTPOST_NEW_PIN", "2468")

    assert cli.main(["profile", "add", "ana", "--pin"]) == 0
    err = capsys.readouterr().err
    assert f"the admin ({admin}) has no PIN: anyone at this computer can sign in as the admin " \
           "and clear ana's PIN" in err
    assert f"`outpost --as {admin} profile pin`" in err

    assert cli.main(["profile", "pin", "ana"]) == 0  # a new PIN: warned again
    assert "has no PIN" in capsys.readouterr().err
    assert cli.main(["profile", "add", "bo"]) == 0  # no PIN to be cleared: nothing to say
    assert "warning" not in capsys.readouterr().err

    assert cli.main(["profile", "pin"]) == 0  # the admin's own PIN
    assert "warning" not in capsys.readouterr().err
    monkeypatch.setenv("OUTPOST_PIN", "2468")
    assert cli.main(["profile", "add", "cy", "--pin"]) == 0
    assert "warning" not in capsys.readouterr().err
