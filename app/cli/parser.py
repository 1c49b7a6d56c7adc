"""The ``outpost`` command line's grammar: every subcommand, its flags and their help
(``build_parser``), and the exit codes ``--help`` lists. What each command does is in
``app.cli.commands``; ``app.cli.main`` parses, dispatches and reports.
"""
from __future__ import annotations

import argparse

from app.cli.commands.metering import LIMITS_HELP
from app.domain.sampling import BY_NAME
from engines.model_load import KEYS as LOAD_KEYS

EXIT_CODES = """exit codes:
  0    success
  1    unexpected error (a bug: please report it)
  2    bad usage: invalid flag value, unknown conversation id, empty prompt, or no secure
       keychain for a key (see `outpost keys set --help`)
  3    the model file is missing, not GGUF, truncated or could not be loaded
  4    the engine or provider failed: auth, rate limit, unavailable, timeout, connection
       (a partial answer is saved, marked interrupted)
  5    the database could not be read or written (disk full, locked, read-only), or it
       is damaged (see `outpost backup restore`)
  130  the reply was stopped (Ctrl+C, SIGTERM or SIGHUP); the partial answer is saved
  141  the reader of the output went away (e.g. `| head`)

environment:
  OUTPOST_HOME     keep data and config under this folder instead of the user dirs
  OUTPOST_PROFILE  act as this profile (like --as)
  OUTPOST_PIN      the PIN of that profile, for scripts (else it is asked at the terminal)
  OUTPOST_NEW_PIN  the new PIN for `profile add --pin` / `profile pin`
  OUTPOST_POLICY   the quota policy file (default: <config dir>/policy.toml)
"""


class BadArguments(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser, self.message = parser, message


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors come back to ``main`` (with the parser of the command
    that was mistyped) instead of exiting on the spot."""

    def error(self, message: str):  # type: ignore[override]
        raise BadArguments(self, message)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="outpost",
        description="Outpost: chat with LLMs, online or offline. Without a command, opens the window.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--as", dest="as_profile", metavar="PROFILE",
                        help="act as this profile (default: $OUTPOST_PROFILE, else this "
                             "machine's default profile, the OS user); see `outpost profile`")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ask = sub.add_parser("ask", help="send one message and stream the reply to stdout",
                         epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ask.add_argument("prompt", metavar="PROMPT", help="the message to send ('-' reads stdin)")
    where = ask.add_mutually_exclusive_group()
    where.add_argument("--new", action="store_true", help="start a new conversation (default)")
    where.add_argument("--conversation", metavar="ID", help="continue this conversation")
    ask.add_argument("--reply-to", metavar="MSG", dest="reply_to",
                     help="with --conversation: follow message MSG instead of the end of the "
                          "active path (a new branch; the model sees the path to MSG); 'root': "
                          "start the conversation over, beside its first message")
    ask.add_argument("--provider", metavar="NAME",
                     help="answer with this cloud provider (see `outpost providers list`); "
                          "default: the local model")
    ask.add_argument("--route", choices=["auto", "local", "cloud"],
                     help="local: only the local model, nothing leaves the machine; cloud: only "
                          "the provider (unreachable: queued in the outbox); auto: the provider, "
                          "with the local model hedging a slow first token, answering when the "
                          "provider cannot be reached and continuing a reply that broke off "
                          "(default: the conversation's route, else the default_route setting; "
                          "without --provider the local model answers). Saved on a new "
                          "conversation.")
    ask.add_argument("--offline", action="store_true",
                     help="offline mode for this message: the local model answers, no socket "
                          "is opened (the offline_mode setting does it for every message)")
    ask.add_argument("--send-when-online", action="store_true", dest="send_when_online",
                     help="route auto: if the provider cannot be reached, the local model "
                          "answers now and the message is also queued in the outbox for the "
                          "provider (route cloud queues it always); in Offline mode it is "
                          "queued too, and waits there until Offline mode is off")
    ask.add_argument("--model", metavar="M", help="with --provider: the provider's model name; "
                     "otherwise a GGUF model file (default: the setting, else the bundled "
                     "SmolLM2-135M-Instruct)")
    _knob_flags(ask)
    ask.add_argument("--json", action="store_true",
                     help="print one JSON object per line, each with an \"event\" key")

    regen = sub.add_parser("regenerate", help="answer a reply's question again: a new version "
                           "beside reply MSG, with the engine and knobs given now",
                           epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    regen.add_argument("message", metavar="MSG", help="the reply to answer again (its id: "
                       "`outpost history show ID --json`)")
    regen.add_argument("--provider", metavar="NAME", help="answer with this cloud provider")
    regen.add_argument("--route", choices=["auto", "local", "cloud"],
                       help="this answer's route (default: the conversation's)")
    regen.add_argument("--offline", action="store_true",
                       help="the local model answers, no socket is opened")
    regen.add_argument("--model", metavar="M", help="with --provider: the provider's model; "
                       "otherwise a GGUF model file")
    _knob_flags(regen)
    regen.add_argument("--json", action="store_true",
                       help="one JSON object per line, as `outpost ask --json`")

    models = sub.add_parser("models", help="the local model library")  # + its actions, below
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    mlist = msub.add_parser("list", help="every model: the models folder, references, shared "
                            "folders, the bundled one")
    mlist.add_argument("--json", action="store_true")
    minfo = msub.add_parser("info", help="what a model's GGUF header says, and the memory it "
                            "needs at the context_cap setting")
    minfo.add_argument("model", metavar="MODEL", help="a name from `models list`, or a path")
    minfo.add_argument("--json", action="store_true")
    mimport = msub.add_parser("import", help="add a GGUF file (copied by default)")
    mimport.add_argument("file", metavar="FILE")
    how = mimport.add_mutually_exclusive_group()
    how.add_argument("--link", action="store_true",
                     help="hard-link it into the models folder (same disk, no second copy)")
    how.add_argument("--reference", action="store_true",
                     help="leave it where it is and remember where")
    mimport.add_argument("--name", metavar="NAME", help="the name to list it under")
    mimport.add_argument("--json", action="store_true")
    mdown = msub.add_parser("download", help="download a GGUF (any https URL, e.g. a Hugging "
                            "Face resolve URL) into the models folder; resumes, verifies")
    mdown.add_argument("url", metavar="URL")
    mdown.add_argument("--sha256", metavar="HEX", type=_sha256,
                       help="the file's sha256: a mismatch deletes it")
    mdown.add_argument("--name", metavar="NAME", help="the name to list it under (default: "
                       "the URL's file name)")
    mdown.add_argument("--json", action="store_true",
                       help="progress and the result as JSON lines (event: progress / done)")
    mverify = msub.add_parser("verify", help="check a model: its GGUF header, and its sha256 "
                              "against --sha256 (printed either way)")
    mverify.add_argument("model", metavar="MODEL")
    mverify.add_argument("--sha256", metavar="HEX", type=_sha256)
    mverify.add_argument("--json", action="store_true")
    mset = msub.add_parser("set", help="a load setting of a model, remembered: "
                           + ", ".join(LOAD_KEYS) + " (VALUE auto: Outpost chooses)")
    mset.add_argument("model", metavar="MODEL")
    mset.add_argument("key", metavar="KEY")
    mset.add_argument("value", metavar="VALUE", help="a number, on/off, f16/q8_0/q4_0 "
                      "(kv_type) or auto")
    mset.add_argument("--json", action="store_true")
    mrename = msub.add_parser("rename", help="rename a model of the models folder or a "
                              "reference (its name only: the file stays as it is)")
    mrename.add_argument("model", metavar="MODEL")
    mrename.add_argument("new_name", metavar="NEW_NAME")
    mrename.add_argument("--json", action="store_true")
    mremove = msub.add_parser("remove", help="delete a model of the models folder (a "
                              "reference: forget it); shared and bundled models are refused")
    mremove.add_argument("model", metavar="MODEL")
    mremove.add_argument("--yes", action="store_true", help="do not ask first")
    mremove.add_argument("--json", action="store_true")
    _list_actions(sub, "models", msub)

    providers = sub.add_parser("providers", help="configure cloud providers")
    psub = providers.add_subparsers(dest="providers_command", metavar="ACTION", required=True)
    padd = psub.add_parser("add", help="add (or with --replace, change) a provider")
    padd.add_argument("name", metavar="NAME")
    padd.add_argument("--kind", choices=["openai", "anthropic"],
                      help="wire format (default: the preset's, else openai)")
    padd.add_argument("--base-url", dest="base_url", metavar="URL",
                      help="API base URL (default: the preset's)")
    padd.add_argument("--model", metavar="M", help="default model")
    padd.add_argument("--preset", metavar="P", help="start from a preset: " + ", ".join(
        sorted(__import__("app.config.providers", fromlist=["PRESETS"]).PRESETS)))
    padd.add_argument("--replace", action="store_true", help="overwrite an existing provider")
    plist = psub.add_parser("list", help="configured providers and whether a key is stored")
    plist.add_argument("--json", action="store_true")
    psub.add_parser("presets", help="the built-in presets")
    premove = psub.add_parser("remove", help="remove a provider (and its stored key)")
    premove.add_argument("name", metavar="NAME")
    pmodels = psub.add_parser("models", help="list the provider's models (GET /models)")
    pmodels.add_argument("name", metavar="NAME")

    keys = sub.add_parser("keys", help="API keys, kept in the OS keychain")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    kset = ksub.add_parser("set", help="store a provider's key (read from stdin, not echoed)")
    kset.add_argument("name", metavar="NAME")
    # a key typed after the name: caught to be refused without echoing it (argparse would
    # print it back as an "unrecognized argument")
    kset.add_argument("typed_key", nargs="*", help=argparse.SUPPRESS)
    where = kset.add_mutually_exclusive_group()
    where.add_argument("--insecure-file", action="store_true",
                       help="no secure keychain here: store it in a file only you can read (0600)")
    kdel = ksub.add_parser("delete", help="forget a provider's key")
    kdel.add_argument("name", metavar="NAME")

    outbox = sub.add_parser("outbox", help="messages waiting for a cloud provider to be "
                            "reachable again")
    osub = outbox.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    olist = osub.add_parser("list", help="queued (and failed) items, oldest first")
    olist.add_argument("--all", action="store_true", help="sent and cancelled items too")
    olist.add_argument("--json", action="store_true")
    osend = osub.add_parser("send", help="send queued items now, in order, each once; exit 4 "
                            "when some could not be sent (items another Outpost process is "
                            "sending are left to it)")
    osend.add_argument("id", metavar="ID", nargs="?", type=int, help="only this item")
    osend.add_argument("--json", action="store_true")
    ocancel = osub.add_parser("cancel", help="cancel a queued item (its message stays)")
    ocancel.add_argument("id", metavar="ID", type=int)
    oretry = osub.add_parser("retry", help="put a failed or cancelled item back in the queue "
                             "(say its key was wrong and is fixed now)")
    oretry.add_argument("id", metavar="ID", type=int)

    usage = sub.add_parser("usage", help="tokens, requests and cost today, this month or any "
                           "period, from the usage ledger; --csv for a spreadsheet")
    usage.add_argument("--profile", metavar="P", help="whose usage (default: yours; 'all': "
                       "everyone on this machine)")
    usage.add_argument("--month", action="store_true", help="this calendar month, not today")
    usage.add_argument("--since", metavar="DAY", help="from this day on (local days, included): "
                       "YYYY-MM-DD, today, yesterday, or Nd for N days ago (30d)")
    usage.add_argument("--until", metavar="DAY", help="up to this day, included (default: "
                       "today); needs --since")
    usage.add_argument("--csv", action="store_true", help="one line per day, profile, provider "
                       "and model, with a header line, to standard output (an unknown cost is "
                       "an empty field); the period: today unless --month or --since")
    usage.add_argument("--json", action="store_true", help="one JSON object for the period "
                       "(first_day, last_day): requests, prompt/completion/cloud/local tokens, "
                       "cost_usd, unknown_cost_requests (no known price), local_seconds, and "
                       "by_model, a row per provider and model")

    quota = sub.add_parser("quota", help="per-profile quotas and rate limits (set: admin only; "
                           "the policy file wins over these)")
    qsub = quota.add_subparsers(dest="quota_command", metavar="ACTION", required=True)
    qshow = qsub.add_parser("show", help="a profile's limits and where they come from")
    qshow.add_argument("--profile", metavar="P")
    qshow.add_argument("--json", action="store_true")
    qset = qsub.add_parser("set", help=f"set a limit: {LIMITS_HELP}; 'none' removes it")
    qset.add_argument("name", metavar="NAME", help=f"one of: {LIMITS_HELP}")
    qset.add_argument("value", metavar="VALUE", help="the limit, or none to remove it")
    qset.add_argument("--profile", metavar="P", help="whose limit (default: yours)")

    prof = sub.add_parser("profile", help="profiles: the people who share this machine, each "
                          "with their own conversations, usage and quotas")
    psub = prof.add_subparsers(dest="profile_command", metavar="ACTION", required=True)
    psub.add_parser("whoami", help="the profile you act as")
    plist = psub.add_parser("list", help="every profile, with the admin marked")
    plist.add_argument("--json", action="store_true")
    padd = psub.add_parser("add", help="add a profile (admin only)")
    padd.add_argument("name", metavar="NAME")
    padd.add_argument("--pin", action="store_true",
                      help="give it a PIN ($OUTPOST_NEW_PIN, else typed twice)")
    prm = psub.add_parser("remove", help="remove a profile (admin only; not the admin)")
    prm.add_argument("name", metavar="NAME")
    prm.add_argument("--delete-conversations", action="store_true",
                     help="also delete its conversations (refused without this when it has any)")
    prm.add_argument("--from-backups", action="store_true",
                     help="and delete them from the backups too (a daily backup keeps them for up "
                          "to 7 days, a copy kept before an update or a restore until deleted)")
    ppin = psub.add_parser("pin", help="set or clear a PIN: yours, or anyone's as the admin "
                           "(new PIN from $OUTPOST_NEW_PIN, else typed twice)")
    ppin.add_argument("name", metavar="NAME", nargs="?")
    ppin.add_argument("--clear", action="store_true", help="remove the PIN")
    padmin = psub.add_parser("admin", help="hand the admin role to another profile (admin only)")
    padmin.add_argument("name", metavar="NAME")

    preset = sub.add_parser("preset", help="sampling presets (Precise, Balanced, Creative and "
                            "yours) and which knobs each engine honours")
    prsub = preset.add_subparsers(dest="preset_command", metavar="ACTION", required=True)
    prlist = prsub.add_parser("list", help="every preset and its knobs")
    prlist.add_argument("--json", action="store_true")
    prshow = prsub.add_parser("show", help="one preset's knobs, as JSON")
    prshow.add_argument("name", metavar="NAME")
    prsave = prsub.add_parser("save", help="save (or overwrite) a preset of yours from knob "
                              "flags")
    prsave.add_argument("name", metavar="NAME")
    prsave.add_argument("--from", dest="from_preset", metavar="PRESET",
                        help="start from this preset's knobs")
    _knob_flags(prsave)
    prren = prsub.add_parser("rename", help="rename a preset of yours")
    prren.add_argument("name", metavar="NAME")
    prren.add_argument("new_name", metavar="NEW")
    prdel = prsub.add_parser("delete", help="delete a preset of yours")
    prdel.add_argument("name", metavar="NAME")
    prknobs = prsub.add_parser("knobs", help="the capability map: which knobs each engine "
                               "kind sends")
    prknobs.add_argument("--json", action="store_true")

    offline = sub.add_parser("offline", help="Offline mode: every message answered on this "
                             "computer, nothing sent beyond it (the window's Offline mode "
                             "switch)",
                             description="Offline mode: every conversation answers on the local "
                             "model and Outpost opens no connection (model lists, downloads, "
                             "probes and outbox sends are refused), except to a provider on "
                             "this computer (localhost, 127.0.0.1, ::1), which still answers "
                             "its conversations and gets its outbox items. It is the "
                             "offline_mode setting, shared with the window.")
    offline.add_argument("switch", choices=["on", "off", "status"], nargs="?", default="status",
                         metavar="on|off|status",
                         help="on: turn Offline mode on (remembered); off: turn it off "
                              "(conversations follow their routes again); status: say whether "
                              "it is on, and change nothing (the default: `outpost offline` "
                              "alone)")

    history = sub.add_parser("history", help="stored conversations: list, show, search, fork, "
                             "switch branch, delete")
    hsub = history.add_subparsers(dest="history_command", metavar="ACTION", required=True)
    hlist = hsub.add_parser("list", help="conversations, newest first")
    hlist.add_argument("--json", action="store_true")
    hshow = hsub.add_parser("show", help="the active path of one conversation (‹2/3›: a message "
                            "with other versions beside it)")
    hshow.add_argument("id", metavar="ID")
    hshow.add_argument("--tree", action="store_true",
                       help="every branch, the active path marked with *")
    hshow.add_argument("--json", action="store_true")
    hfork = hsub.add_parser("fork", help="a new conversation holding the path up to message "
                            "MSG (the original is unchanged)")
    hfork.add_argument("message", metavar="MSG")
    hfork.add_argument("--json", action="store_true")
    hswitch = hsub.add_parser("switch", help="make the path through message MSG the active one "
                              "(what the window shows and the next turn sees)")
    hswitch.add_argument("message", metavar="MSG")
    hswitch.add_argument("--json", action="store_true")
    hdelete = hsub.add_parser("delete", help="delete a conversation with all its messages, or "
                              "with --message one message and everything below it (its "
                              "replies, their follow-ups, their other versions), as the window "
                              "does: the words leave the database file. Asks first on a "
                              "terminal; refused while a reply in it is being written")
    hdelete.add_argument("id", metavar="ID", nargs="?",
                         help="the conversation (from `outpost history list`; any unique "
                              "start of 4+ characters will do)")
    hdelete.add_argument("--message", metavar="MSG",
                         help="delete this message and everything below it instead (ids from "
                              "`outpost history show`)")
    hdelete.add_argument("--yes", action="store_true",
                         help="delete without asking (needed where there is no terminal)")
    hdelete.add_argument("--from-backups", action="store_true",
                         help="and delete it from the backups too (a daily backup keeps it for "
                              "up to 7 days, a copy kept before an update or a restore until "
                              "deleted)")
    hsearch = hsub.add_parser("search", help="full-text search over all messages")
    hsearch.add_argument("query", metavar="QUERY",
                         help="words, each matched at the start of a word (lighthouse finds "
                              "lighthouses), all of them in the message; or SQLite FTS5 syntax "
                              "when it has quotes, *, parentheses or AND/OR/NOT/NEAR")
    hsearch.add_argument("--limit", type=_counting(1), default=50, metavar="N",
                         help="at most N hits, the newest (default 50)")
    hsearch.add_argument("--offset", type=_counting(0), default=0, metavar="N",
                         help="leave out the N newest hits: the next page (--offset 50 after "
                              "the first 50)")
    hsearch.add_argument("--json", action="store_true",
                         help="the page's hits as a JSON list (when more match, stderr "
                              "says so and names the next --offset)")

    backup = sub.add_parser("backup", help="the database's backups (one a day, kept 7 days; "
                            "and before each migration): list them, put one back, or bring "
                            "back what a kept copy holds")
    bsub = backup.add_subparsers(dest="backup_command", metavar="ACTION", required=True)
    blist = bsub.add_parser("list", help="every backup, newest first")
    blist.add_argument("--json", action="store_true")
    brestore = bsub.add_parser("restore", help="put a backup in place of the database (it is "
                               "checked first); the file it replaces is kept in the backups "
                               "folder. Over a healthy database (a rollback) it says what is "
                               "set aside and asks first. Refused while the window or a "
                               "command has it open; the admin's only, unless the database is "
                               "damaged")
    brestore.add_argument("name", metavar="BACKUP", nargs="?",
                          help="its file name from `outpost backup list` (default: the newest "
                               "one that passes its check)")
    brestore.add_argument("--yes", action="store_true",
                          help="roll a healthy database back without the question (needed "
                               "without a terminal)")
    bsalvage = bsub.add_parser("salvage", help="bring into the database what another copy of "
                               "it holds that it lacks or has older (conversations, messages, "
                               "the outbox, profiles): a damaged file a restore kept, read as "
                               "far as it can be. The admin's only")
    bsalvage.add_argument("file", metavar="FILE", help="the copy (e.g. a …-replaced.db from "
                          "the backups folder)")
    bsub.add_parser("start-over", help="a damaged database with no good backup: keep it in "
                    "the backups folder and start a new one, bringing into it what the damaged "
                    "file still holds. Refused for a database that passes its check, where a "
                    "good backup exists (`backup restore` keeps more), and while the window or "
                    "a command has it open")

    export = sub.add_parser("export", help="write conversations to a file: JSON (every field, "
                            "every branch; `outpost import` reads it back), Markdown or HTML",
                            epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("ids", metavar="ID", nargs="*",
                        help="the conversations to export (ids from `outpost history list`)")
    export.add_argument("--all", action="store_true",
                        help="every conversation of your profile, oldest first")
    export.add_argument("--since", metavar="DAY",
                        help="your profile's conversations last changed on DAY or later (local "
                             "days): YYYY-MM-DD, today, yesterday, or Nd for N days ago (30d); "
                             "with --until, a part of a big history")
    export.add_argument("--until", metavar="DAY",
                        help="your profile's conversations last changed on DAY or before "
                             "(included)")
    export.add_argument("--format", choices=["json", "md", "html"],
                        help="json: lossless, every message of every branch with its params, "
                             "usage, timings, cost and state; md / html: the active path to read "
                             "(other branches counted), html one self-contained page for light "
                             "and dark (default: from the -o file's extension, else json)")
    export.add_argument("-o", "--output", metavar="FILE", default="-",
                        help="write to FILE, whole or not at all, readable by you only "
                             "('-': stdout, the default)")

    imp = sub.add_parser("import", help="add conversations from an Outpost JSON export or "
                         "ChatGPT's conversations.json (the format is detected); a conversation "
                         "already here gets only its messages written since (a newer export), "
                         "nothing here is overwritten; the database is backed up first when "
                         "anything is added (`outpost backup restore` undoes the import)",
                         epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("file", metavar="FILE", help="the file (at most 2 GB, read a "
                     "conversation at a time); it is checked whole first, and nothing is "
                     "imported if any of it is refused")
    imp.add_argument("--json", action="store_true",
                     help="print one summary object: imported conversations, those continued "
                          "(new messages added) and skipped ones, with the reasons")
    _describe_json_flags(parser)
    return parser


def _list_actions(sub: argparse._SubParsersAction, command: str,
                  actions: argparse._SubParsersAction) -> None:
    """End ``command``'s line in ``outpost --help`` with its actions, as defined: a list kept
    by hand there missed the ones added later."""
    for line in sub._choices_actions:  # (argparse keeps each command's help line here)
        if line.dest == command:
            line.help = f"{line.help}: {', '.join(actions.choices)}"


JSON_HELP = "print the result as JSON instead of text (for scripts)"


def _describe_json_flags(parser: argparse.ArgumentParser) -> None:
    """Every ``--json`` flag of every command has a line in its ``--help``: those given none
    get ``JSON_HELP``."""
    for action in parser._actions:
        if "--json" in action.option_strings and not action.help:
            action.help = JSON_HELP
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                _describe_json_flags(command)


def _knob_flags(parser: argparse.ArgumentParser) -> None:
    """The sampling knobs as flags (``app.domain.sampling`` has each one's range and meaning)."""
    knobs = parser.add_argument_group(
        "sampling knobs", "Unset flags take the preset's, else the conversation's, else the "
        "settings' value. Knobs the engine does not support are not sent (see `outpost "
        "preset knobs`); the reply stores what was sent.")
    for name, flag, kind, metavar in (
            ("temperature", "--temperature", float, "F"), ("top_p", "--top-p", float, "F"),
            ("top_k", "--top-k", int, "K"), ("min_p", "--min-p", float, "F"),
            ("max_tokens", "--max-tokens", int, "N"),
            ("presence_penalty", "--presence-penalty", float, "F"),
            ("frequency_penalty", "--frequency-penalty", float, "F"),
            ("repeat_penalty", "--repeat-penalty", float, "F"),
            ("seed", "--seed", str, "N|random")):  # (ask.knob_options reads "random")
        knob = BY_NAME[name]
        span = knob.span()  # what ``check`` accepts, as its error says it
        knobs.add_argument(flag, dest=name, type=kind, metavar=metavar,
                           help=f"{span[0].upper()}{span[1:]}. {knob.tip}")
    knobs.add_argument("--stop", action="append", default=None, metavar="S",
                       help="stop sequence (repeatable). " + BY_NAME["stop"].tip)
    knobs.add_argument("--preset", metavar="NAME",
                       help="start from a preset: Precise, Balanced, Creative or one of yours "
                            "(`outpost preset list`)")
    knobs.add_argument("--system", metavar="TEXT",
                       help="the system prompt (saved with the conversation)")
    knobs.add_argument("--json-mode", action="store_true", dest="json_mode",
                       help="the reply must be JSON (local: grammar-constrained; OpenAI: "
                            "json_object; Anthropic: a forced tool call); checked, repaired "
                            "once, printed once valid")
    knobs.add_argument("--lora", action="append", default=None, metavar="FILE[:SCALE]",
                       help="apply this LoRA adapter (a GGUF LoRA for the local model's "
                            "architecture) at SCALE (default 1; 0: no effect); repeatable. "
                            "Local model only; the base model is not reloaded; the reply "
                            "stores the adapters it used. Default: the conversation's")
    knobs.add_argument("--no-lora", action="store_true", dest="no_lora",
                       help="no LoRA adapter: detach the conversation's (with ask, it keeps "
                            "none from then on; with regenerate, for this reply only; with "
                            "preset save, the preset detaches them)")
    ttc = parser.add_argument_group(
        "test-time compute", "Several candidates, one reply; every candidate is metered.")
    ttc.add_argument("--best-of", type=int, metavar="N", dest="best_of",
                     help="sample N (2-8) candidates and keep the best by --scorer")
    ttc.add_argument("--scorer", choices=["logprob", "length", "json", "judge"],
                     help="logprob: mean token log-probability (local model); length: "
                          "length-normalised log-probability (local model); json: valid JSON "
                          "first; judge: the model picks one (its tokens are metered too). "
                          "Default: logprob")
    ttc.add_argument("--self-consistency", type=int, metavar="N", dest="self_consistency",
                     help="sample up to N (2-8) replies and keep the majority answer (stops "
                          "early once decided; ties: the answer given first wins)")
    ttc.add_argument("--extract", metavar="SPEC",
                     help="how self-consistency finds each final answer: last-line, "
                          "json:FIELD or regex:PATTERN (default last-line)")
    knobs.add_argument("--json-schema", metavar="FILE", dest="json_schema",
                       help="the reply must be JSON matching this JSON Schema (implies "
                            "--json-mode); the schema itself is checked first")


def _counting(least: int):
    """A whole number of at least ``least`` (--limit, --offset)."""
    def number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"a whole number of {least} or more, got {text!r}")
        return value
    return number


def _sha256(text: str) -> str:
    """--sha256: 64 hex digits (checked before a file is hashed or downloaded)."""
    digest = text.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise argparse.ArgumentTypeError(f"a sha256 is 64 hex digits, got {text!r}")
    return digest
