"""``outpost profile``: the people who share this machine (see ``app.storage.profiles``)."""
from __future__ import annotations

import argparse
import sys

from app.cli.commands.common import emit_list, open_core, read_new_pin
from app.domain.errors import UsageError
from app.domain.wording import counted
from app.storage.backup_erasure import backups_hold, erase_from_backups, held_in_backups


def cmd_profile(args: argparse.Namespace) -> int:
    core = open_core(args)
    profiles, me = core.profiles, core.profile
    try:
        action = args.profile_command
        if action == "whoami":
            role = "admin" if me.is_admin else "not admin"
            print(f"{me.name} ({role}; {'PIN set' if me.has_pin else 'no PIN'})")
        elif action == "list":
            # another profile's count is the admin's to see (null for anyone else), as its
            # limits are (``quota show --profile``) and as the window's Profiles dialog shows it
            rows = [{"name": p.name, "admin": p.is_admin, "pin": p.has_pin,
                     "conversations": profiles.conversation_count(p.name)
                     if me.is_admin or p.name == me.name else None,
                     "signed_in": p.name == me.name} for p in profiles.list()]
            if args.json:
                emit_list(rows)
            else:
                for r in rows:
                    flags = ", ".join(f for f, on in (("admin", r["admin"]), ("PIN", r["pin"]),
                                                      ("you", r["signed_in"])) if on)
                    count = "" if r["conversations"] is None else \
                        counted(r["conversations"], "conversation")
                    print(f"{r['name']:24} {count:>17}" + (f"  [{flags}]" if flags else ""))
        elif action == "add":
            pin = read_new_pin(args.name) if args.pin else None
            added = profiles.add(args.name, me, pin)
            print(f"Added the profile {added.name}" + (" with a PIN." if pin else "."))
            _warn_if_the_admin_has_no_pin(profiles, added.name)
        elif action == "remove":
            if args.from_backups and not args.delete_conversations:
                raise UsageError("--from-backups deletes a profile's conversations from the "
                                 "backups: it goes with --delete-conversations.")
            # by the profile's own name: it is given in any case (Bob for bob)
            doomed = [c.id for c in core.store.list_conversations(profiles.get(args.name).name)] \
                if args.delete_conversations else []
            gone = profiles.remove(args.name, me, args.delete_conversations)
            print(f"Removed the profile {args.name}" +
                  (f" and its {counted(gone, 'conversation')}." if gone else "."))
            if gone and args.from_backups:
                print(erase_from_backups(core.store.path, conversations=doomed)
                      .describe("them"))
            elif gone and held_in_backups(core.store.path, conversations=doomed):
                print(f"{backups_hold('them')} (--from-backups deletes them there too.)")
        elif action == "pin":
            target = profiles.get(args.name or me.name)
            if target.name != me.name and not me.is_admin:
                profiles.set_pin(target.name, None, me)  # raises NotAllowed, changes nothing
            pin = None if args.clear else read_new_pin(target.name)
            profiles.set_pin(target.name, pin, me)
            print(f"{'Cleared' if pin is None else 'Set'} the PIN of {target.name}.")
            _warn_if_the_admin_has_no_pin(profiles, target.name)
        elif action == "admin":
            new = profiles.make_admin(args.name, me)
            print(f"{new.name} is now the admin.")
        return 0
    finally:
        core.store.close()


def _warn_if_the_admin_has_no_pin(profiles, name: str) -> None:
    """A PIN is worth little while the admin has none (stderr, after what was done)."""
    admin = profiles.admin_without_pin(name)
    if admin is not None:
        print(f"outpost: warning: the admin ({admin.name}) has no PIN: anyone at this computer "
              f"can sign in as the admin and clear {name}'s PIN; set one with `outpost --as "
              f"{admin.name} profile pin`.", file=sys.stderr)
