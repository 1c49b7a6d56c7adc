"""Where each profile's limits come from: ``QuotaBook`` reads them from the policy file and the
admin's ``config/quotas.json`` (checked against their schema) and writes the admin's changes;
``Limits`` is what one profile gets. The limits themselves, and how they are enforced, are
described in ``app.storage.quotas`` (``QuotaGuard``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from app.config import paths
from app.config.file_schema import MAX_WHOLE, ConfigFile, write_config
from app.domain.errors import NotAllowed, UsageError
from app.domain.profile_names import name_key

LIMIT_NAMES = ("cloud_tokens_per_day", "cloud_cost_per_month", "requests_per_minute",
               "tokens_per_minute", "allowed_routes", "count_local", "allow_unpriced")
MAX_COUNT = MAX_WHOLE  # tokens or requests: a million million (more cannot be a real limit)
MAX_COST_USD = 1e9  # a monthly budget of at most a billion dollars
PER_MINUTE = ("requests_per_minute", "tokens_per_minute")


@dataclass(frozen=True)
class Limits:
    cloud_tokens_per_day: int | None = None
    cloud_cost_per_month: float | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    allowed_routes: tuple[str, ...] | None = None
    count_local: bool = False
    allow_unpriced: bool = False
    source: str = "none"  # the strongest source of any limit: "policy file", "quota set", "none"
    sources: dict = dataclasses.field(default_factory=dict)  # limit name -> its source

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        if self.allowed_routes is not None:
            data["allowed_routes"] = list(self.allowed_routes)
        return data


def limit_text(value) -> str:
    """A limit's value as ``outpost quota set`` takes it: ``local,auto``, ``true``/``false``,
    ``5`` or ``0.125`` (dollars), ``none`` for no limit; never Python's spelling of it
    (``['local']``, ``True``, ``5.0``)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:.10f}".rstrip("0").rstrip(".")
    return str(value)


def _coerce(name: str, value, file: ConfigFile | None = None, key: str = ""):
    """``value`` as the limit ``name`` keeps it; raises UsageError naming what a valid one is
    (``ConfigFileInvalid`` naming ``file`` and ``key`` when it was read from a file)."""
    def wrong(expected: str) -> UsageError:
        if file is not None:
            return file.wrong(key or name, expected, value)
        shown = limit_text(value) if isinstance(value, (list, tuple, bool)) else repr(value)
        return UsageError(f"{name} must be {expected}, got {shown}.")

    if name in ("cloud_tokens_per_day", *PER_MINUTE):
        whole = isinstance(value, int) and not isinstance(value, bool)
        low = 1 if name in PER_MINUTE else 0
        if not whole or not low <= value <= MAX_COUNT:
            expected = f"a whole number from {low} to {MAX_COUNT:,}"
            if whole and value == 0:  # 0 per minute would refill nothing: say what was meant
                expected += " (0 cannot be a rate: " + (
                    "leave the key out for no limit, or set cloud_tokens_per_day = 0 to keep "
                    "the profile off the cloud)" if file is not None else
                    "use none to remove the limit, or set cloud_tokens_per_day to 0 to keep "
                    "the profile off the cloud)")
            raise wrong(expected)
        return value
    if name == "cloud_cost_per_month":
        # NaN compares false with everything: a budget of NaN would be no budget at all
        finite = isinstance(value, int) or isinstance(value, float) and math.isfinite(value)
        if isinstance(value, bool) or not finite or not 0 <= value <= MAX_COST_USD:
            raise wrong(f"a number of dollars from 0 to {MAX_COST_USD:,.0f}")
        return float(value)
    if name == "allowed_routes":
        if not isinstance(value, list) or not value or \
                any(not isinstance(v, str) or v not in ("auto", "local", "cloud") for v in value):
            raise wrong("a list of auto, local, cloud")
        return tuple(value)
    if name in ("count_local", "allow_unpriced"):
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    unknown = f"unknown limit {name!r} (known: {', '.join(LIMIT_NAMES)})"
    if file is not None:
        raise file.fail(f"{key or name}: {unknown}")
    raise UsageError(f"There is an {unknown}.")


def policy_path() -> Path:
    return Path(os.environ.get("OUTPOST_POLICY") or paths.config_dir() / "policy.toml")


def _limits_from(file: ConfigFile, table, key: str) -> dict:
    file.table(table, key, "limits")
    return {name: _coerce(name, value, file, f"{key}.{name}") for name, value in table.items()}


def _checked(file: ConfigFile, data) -> dict:
    """A policy or quotas file's contents, checked against the schema: ``default`` (limits)
    and ``profiles`` (profile name -> limits), nothing else."""
    file.table(data, "")
    unknown = sorted(set(data) - {"default", "profiles"})
    if unknown:  # a typo such as [defaults] must not silently mean "no limits"
        raise file.fail(f"it has an unknown key {unknown[0]!r} (it may hold only default and "
                        "profiles)")
    _limits_from(file, data.get("default", {}), "default")
    profiles = file.table(data.get("profiles", {}), "profiles", "profile names and limits")
    seen: dict[str, str] = {}
    for profile, table in profiles.items():
        _limits_from(file, table, f"profiles.{profile}")
        first = seen.setdefault(name_key(profile), profile)
        if first != profile:
            raise file.fail(f"profiles.{first} and profiles.{profile} name the same profile "
                            "(profile names do not differ by case alone); keep one")
    return data


def _table_of(data: dict, profile: str) -> dict:
    """``profile``'s table in a policy or quotas file, named in any case; {} when none."""
    key = name_key(profile)
    return next((table for name, table in data.get("profiles", {}).items()
                 if name_key(name) == key), {})


def _without_zero_rates(data):
    """quotas.json as read, less the per-minute limits of 0 that an Outpost before they were
    refused saved (``quota set requests_per_minute 0``): the guard skipped a zero rate, so
    they meant no limit, and they are read as that (the next save leaves them out)."""
    tables = [data.get("default")] if isinstance(data, dict) else []
    profiles = data.get("profiles") if isinstance(data, dict) else None
    tables += list(profiles.values()) if isinstance(profiles, dict) else []
    for table in tables:
        for name in PER_MINUTE:
            if isinstance(table, dict) and type(table.get(name)) is int and table[name] == 0:
                del table[name]
    return data


class QuotaBook:
    """Limits per profile: the policy file over the locally set ones."""

    def __init__(self, policy: Path | None = None, local: Path | None = None):
        self.policy = policy or policy_path()
        self.local = local or paths.config_dir() / "quotas.json"

    def _policy(self) -> dict:
        file = ConfigFile(self.policy, "policy file", "toml")
        try:
            return _checked(file, file.read())
        except FileNotFoundError:
            if os.environ.get("OUTPOST_POLICY") and str(self.policy) == \
                    os.environ["OUTPOST_POLICY"]:
                # a fleet named its policy file: missing must not mean "no limits"
                raise UsageError(f"The policy file {self.policy} (OUTPOST_POLICY) does not "
                                 "exist.") from None
            return {}

    def _local(self) -> dict:
        file = ConfigFile(self.local, "quota file")
        try:
            return _checked(file, _without_zero_rates(file.read()))
        except FileNotFoundError:
            return {}

    def limits(self, profile: str) -> Limits:
        merged: dict = {}
        sources: dict = {}
        source = "none"
        # weakest first: what the admin set, then the policy file; each: default, then profile
        for data, label in ((self._local(), "quota set"), (self._policy(), "policy file")):
            for table in (data.get("default", {}), _table_of(data, profile)):
                if table:
                    merged.update({name: _coerce(name, value) for name, value in table.items()})
                    sources.update({name: label for name in table})
                    source = label
        return Limits(**merged, source=source, sources=sources)

    def policy_names(self, profile: str) -> set[str]:
        """The limits the policy file sets for ``profile`` (nobody changes those in Outpost)."""
        policy = self._policy()
        return set(policy.get("default", {})) | set(_table_of(policy, profile))

    def policy_warnings(self, profiles: Iterable[str]) -> list[str]:
        """One sentence per ``[profiles.NAME]`` table of the policy file that names none of
        ``profiles`` (the machine's): its limits apply to nobody, a typo perhaps."""
        names = sorted(profiles, key=name_key)
        known = {name_key(name) for name in names}
        return [f"The policy file {self.policy} has limits for {table!r} ([profiles.{table}]), "
                "but no profile here has that name, so they apply to nobody (profiles: "
                f"{', '.join(names) or 'none'})."
                for table in self._policy().get("profiles", {}) if name_key(table) not in known]

    def set(self, profile: str, name: str, value, *, by) -> None:
        """``outpost quota set`` / the window's profile editor, as ``by`` (an
        ``app.storage.profiles.Profile``): only the admin may, and never for a limit the policy file
        sets for this profile."""
        if not getattr(by, "is_admin", False):
            raise NotAllowed(f"Only the admin can change quotas; you are signed in as "
                             f"{getattr(by, 'name', by)}.")
        if name in self.policy_names(profile):
            raise UsageError(f"{name} for {profile} is set by the policy file {self.policy} "
                             "and cannot be changed here.")
        local = self._local()
        profiles = local.setdefault("profiles", {})
        key = next((k for k in profiles if name_key(k) == name_key(profile)), profile)
        limits = profiles.setdefault(key, {})
        if value is None:
            limits.pop(name, None)
        else:
            limits[name] = _coerce(name, value) if name != "allowed_routes" \
                else list(_coerce(name, value))
        write_config(self.local, json.dumps(local, indent=2) + "\n")

    def forget(self, profile: str) -> None:
        """A removed profile's limits go with it (``Profiles.remove``, after its admin check):
        a later profile of the same name starts with none. The policy file is the fleet's and
        is left as it is."""
        local = self._local()
        tables = local.get("profiles", {})
        gone = [key for key in tables if name_key(key) == name_key(profile)]
        if gone:
            for key in gone:
                del tables[key]
            write_config(self.local, json.dumps(local, indent=2) + "\n")
