"""``outpost preset``: sampling presets (built-in and yours) and the knobs each engine honours."""
from __future__ import annotations

import argparse
import json

from app.cli.commands.ask import knob_options
from app.cli.commands.common import emit, emit_list
from app.config.presets import PresetBook
from app.domain.errors import UsageError
from app.config.provider_facts import learnt
from app.domain.sampling import (
    CAPABILITIES,
    KNOB_NAMES,
    KNOBS,
    REASONING_FAMILIES,
    REASONING_REFUSES,
    supports,
)
from engines.gguf import read_lora


# flags `preset save` shares with `ask` that set what a conversation or a turn keeps, not a
# preset (a preset is the sampling knobs and LoRA adapters)
NOT_IN_A_PRESET = (("system", "--system"), ("json_mode", "--json-mode"),
                   ("json_schema", "--json-schema"), ("best_of", "--best-of"),
                   ("scorer", "--scorer"), ("self_consistency", "--self-consistency"),
                   ("extract", "--extract"))


def _refuse_what_a_preset_does_not_hold(args: argparse.Namespace) -> None:
    given = [flag for name, flag in NOT_IN_A_PRESET if getattr(args, name, None)]
    if given:
        raise UsageError(f"A preset holds sampling knobs and LoRA adapters, not {', '.join(given)}"
                         " (those go with a conversation or a message: `outpost ask`); nothing "
                         "was saved.")


def cmd_preset(args: argparse.Namespace) -> int:
    book = PresetBook()
    action = args.preset_command
    if action == "list":
        rows = [{"name": n, "builtin": book.is_builtin(n), "knobs": book.get(n)}
                for n in book.names()]
        if args.json:
            emit_list(rows)
        else:
            for row in rows:
                knobs = ", ".join(f"{k}={v}" for k, v in row["knobs"].items() if v is not None)
                adapters = book.adapters(row["name"])
                if adapters:
                    knobs += ", LoRA " + ", ".join(a.label() for a in adapters)
                print(f"{row['name']:14} {'built in' if row['builtin'] else 'yours':9} {knobs}")
    elif action == "show":
        adapters = book.adapters(args.name)
        emit(dict(book.get(args.name), name=args.name,
                  **({"lora": [a.record() for a in adapters]} if adapters is not None else {})))
    elif action == "save":
        _refuse_what_a_preset_does_not_hold(args)
        if args.preset and not args.from_preset:  # (the ask flag, read as --from here)
            args.from_preset = args.preset
        options = knob_options(args)
        if "seed" in options.unset:  # a preset sets knobs; it cannot unset the chat's seed
            raise UsageError("--seed random goes with a message or a conversation (`outpost "
                             "ask`); a preset without --seed leaves the seed as it is. Nothing "
                             "was saved.")
        for adapter in options.lora or ():  # a file that is no adapter: now, not when used
            read_lora(adapter.path)
        values = {k: getattr(options, k) for k in KNOB_NAMES if getattr(options, k) is not None}
        if args.from_preset:
            values = {**book.get(args.from_preset), **values}
            inherited = book.adapters(args.from_preset)
            if inherited is not None:
                values["lora"] = [a.record() for a in inherited]
        if options.lora is not None:
            values["lora"] = [a.record() for a in options.lora]
        if not values:  # an empty preset would change nothing when chosen
            raise UsageError(f"Nothing to save in {args.name}: give the knobs it sets (e.g. "
                             "--temperature 0.7 --top-p 0.9) or --from PRESET to start from "
                             "one; `outpost preset knobs` lists them.")
        book.save(args.name, values)
        print(f"Saved the preset {args.name}: {json.dumps(values)}")
    elif action == "rename":
        book.rename(args.name, args.new_name)
        print(f"Renamed the preset {args.name} to {args.new_name}.")
    elif action == "delete":
        book.delete(args.name)
        print(f"Deleted the preset {args.name}.")
    elif action == "knobs":
        _show_knobs(args.json)
    return 0


def _show_knobs(as_json: bool) -> None:
    """The capability map: each engine kind's knobs; OpenAI's reasoning models, which get
    some only when given for the message; the knobs a server refused for a model (learnt)."""
    kinds = list(CAPABILITIES)
    refused = {key: facts["refuses"] for key, facts in learnt().items()
               if isinstance(facts.get("refuses"), list) and facts["refuses"]}
    if as_json:
        emit({**{kind: sorted(knobs) for kind, knobs in CAPABILITIES.items()},
              "openai_reasoning_models": {"families": REASONING_FAMILIES,
                                          "sent_only_when_given": sorted(REASONING_REFUSES)},
              "refused": refused})
        return
    columns = [*kinds, "reasoning"]
    print(f"{'knob':18}" + "".join(f"{k:11}" for k in columns))
    for knob in KNOBS:
        said = ["yes" if supports(k, knob.name) else "no" for k in kinds]
        reasoning = "if given" if knob.name in REASONING_REFUSES else said[kinds.index("openai")]
        print(f"{knob.name:18}" + "".join(f"{word:11}" for word in [*said, reasoning]))
    print()
    for kind in kinds:
        missing = [k.name for k in KNOBS if not supports(kind, k.name)]
        if missing:
            print(f"{kind}: {', '.join(missing)} are not sent (its API has no such "
                  "parameter).")
    print(f"reasoning: OpenAI's reasoning models ({REASONING_FAMILIES}) refuse "
          f"{', '.join(sorted(REASONING_REFUSES))}: they are sent only when given for the "
          "message (a flag, a preset), not from the settings or the conversation.")
    for key, names in sorted(refused.items()):
        server, _, model = key.rpartition("|")
        print(f"refused by {server} for {model}, so not sent to it: {', '.join(names)}.")
