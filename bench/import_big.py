"""Benchmark: importing a big export (``outpost import``), read a conversation at a time,
against parsing the same file whole (what the importer did before), side by side.

    python -m bench.import_big [--mb 100] [--dir PATH]

Writes (once; ``--dir`` keeps them for later runs) two files of about ``--mb`` MB each: Outpost's
own ``export --all`` of a real database (conversations of 24 messages, replies ~2 KB, some
non-ASCII text) and a ChatGPT ``conversations.json`` of the same shape. For each, in a fresh
process each time (so each peak is its own): ``json.loads`` of the whole file, the old
importer's first step; ``importer.load`` (the check pass: every conversation read and checked);
and ``importer.load`` + ``importer.write`` into a new database (the whole import, with its
full-text index). Prints seconds and the peak resident memory of each process (a bare Python
with the same imports is printed too, to subtract), and the ratios. Nothing here runs in the
test suite.
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

WORDS = ("the a to and of is in it you that for on with lighthouse water boil night map granite "
         "émigré naïve 東京 código función").split()
MESSAGES = 24


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def build_outpost(path: Path, megabytes: float) -> int:
    """A real database of enough conversations, exported by ``export_conversations``."""
    from app.storage.store import Store
    from app.storage.transfer.export import export_conversations

    rng = random.Random(7)
    count = int(megabytes * 1024 * 1024 / 46_500) + 1  # ~46 KB of export per conversation
    with tempfile.TemporaryDirectory() as scratch:
        store = Store(Path(scratch) / "source.db")
        with store.transaction() as db:
            for c in range(count):
                cid, stamp = uuid.UUID(int=rng.getrandbits(128)).hex, f"2025-{1 + c % 12:02d}-01"
                db.execute("INSERT INTO conversations (id, title, system_prompt, created_at, "
                           "updated_at, profile, active_leaf_id) VALUES (?, ?, '', ?, ?, ?, ?)",
                           [cid, f"Chat {c}", f"{stamp}T00:00:00.000+00:00",
                            f"{stamp}T01:00:00.000+00:00", "bench", f"{cid}-{MESSAGES - 1}"])
                rows = []
                for m in range(MESSAGES):
                    reply = m % 2 == 1
                    rows.append((f"{cid}-{m}", cid, f"{cid}-{m - 1}" if m else None,
                                 "assistant" if reply else "user",
                                 _text(rng, 330 if reply else 60), "complete",
                                 "local" if reply else None, "SmolLM2" if reply else None,
                                 json.dumps({"temperature": 0.7, "max_tokens": 512})
                                 if reply else None,
                                 f"{stamp}T00:{m:02d}:00.000+00:00",
                                 f"{stamp}T00:{m:02d}:00.000+00:00"))
                db.conn.executemany(
                    "INSERT INTO messages (id, conversation_id, parent_id, role, content, "
                    "status, engine, model, params, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        ids = [c.id for c in store.list_conversations()]
        path.write_text(export_conversations(store, ids, "json"), encoding="utf-8")
        store.close()
    return count


def build_chatgpt(path: Path, megabytes: float) -> int:
    """A ChatGPT ``conversations.json``, written a conversation at a time."""
    rng = random.Random(11)
    count, size = 0, 1
    with path.open("w", encoding="utf-8") as out:
        out.write("[")
        while size < megabytes * 1024 * 1024:
            start = 1.6e9 + count * 3600
            mapping: dict = {"root": {"id": "root", "message": None, "parent": None,
                                      "children": []}}
            parent = "root"
            for m in range(MESSAGES):
                key, role = f"n{count}-{m}", "assistant" if m % 2 else "user"
                mapping[parent]["children"].append(key)
                mapping[key] = {"id": key, "parent": parent, "children": [], "message": {
                    "id": key, "author": {"role": role, "name": None, "metadata": {}},
                    "create_time": start + m * 10, "update_time": None,
                    "content": {"content_type": "text",
                                "parts": [_text(rng, 330 if role == "assistant" else 60)]},
                    "status": "finished_successfully", "end_turn": True, "weight": 1.0,
                    "metadata": {"model_slug": "gpt-4o", "finish_details": {"type": "stop"}}
                    if role == "assistant" else {}, "recipient": "all"}}
                parent = key
            conversation_id = str(uuid.UUID(int=rng.getrandbits(128)))
            item = {"title": f"Chat {count}", "create_time": start, "update_time": start + 300,
                    "mapping": mapping, "current_node": parent, "id": conversation_id,
                    "conversation_id": conversation_id, "default_model_slug": "gpt-4o"}
            chunk = ("," if count else "") + json.dumps(item, ensure_ascii=False)
            out.write(chunk)
            size += len(chunk.encode("utf-8"))
            count += 1
        out.write("]")
    return count


# -- one measurement per process -----------------------------------------------------------------
def _child(how: str, path: Path, db: Path) -> dict:
    from app.storage.store import Store
    from app.storage.transfer import importer

    started = time.perf_counter()
    result: dict = {}
    if how == "whole":
        with path.open("rb") as handle:
            result["items"] = len(json.loads(handle.read().decode("utf-8-sig")) or ())
    elif how == "check":
        result["items"] = importer.load(path).conversations
    elif how == "import":
        loaded = importer.load(path)
        result["check_s"] = time.perf_counter() - started
        store = Store(db)
        summary = importer.write(store, loaded, "bench")
        store.close()
        result["items"] = len(summary.imported)
    result["seconds"] = time.perf_counter() - started
    result["peak_mb"] = _peak_mb()
    return result


def _peak_mb() -> float:
    """This process's peak resident memory. (``ru_maxrss`` would not do: on Linux a child
    keeps its parent's, and the parent built the files.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # (kB on Linux)


def _measure(how: str, path: Path, db: Path) -> dict:
    db.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    out = subprocess.run([sys.executable, "-m", "bench.import_big", "--child", how, str(path),
                          str(db)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=100)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        how, path, db = args.child
        print(json.dumps(_child(how, Path(path), Path(db))))
        return
    folder = args.dir or Path(tempfile.mkdtemp(prefix="outpost-import-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    files = {"outpost": folder / f"outpost-{args.mb:g}mb.json",
             "chatgpt": folder / f"conversations-{args.mb:g}mb.json"}
    for kind, path in files.items():
        if not path.exists():
            count = (build_outpost if kind == "outpost" else build_chatgpt)(path, args.mb)
            print(f"wrote {path} ({count} conversations)")
    base = _measure("none", files["outpost"], folder / "bench.db")
    print(f"a bare process with the same imports: {base['peak_mb']:.0f} MB")
    print(f"{'file':<8} {'size':>7} {'step':<34} {'seconds':>8} {'peak MB':>8}  ratio")
    for kind, path in files.items():
        size_mb = path.stat().st_size / 2 ** 20
        whole = _measure("whole", path, folder / "bench.db")
        check = _measure("check", path, folder / "bench.db")
        full = _measure("import", path, folder / "bench.db")
        rows = [("json.loads of the whole file (old)", whole),
                ("load: read and check, streamed", check),
                ("load + write (the whole import)", full)]
        for label, result in rows:
            ratio = (result["peak_mb"] - base["peak_mb"]) / max(
                1.0, whole["peak_mb"] - base["peak_mb"])
            print(f"{kind:<8} {size_mb:>5.0f}MB {label:<34} {result['seconds']:>8.2f} "
                  f"{result['peak_mb']:>8.0f}  {ratio:.2f}× the old peak (above bare)")
        print(f"{'':<17}({full['items']} conversations; write alone "
              f"{full['seconds'] - full['check_s']:.2f} s)")


if __name__ == "__main__":
    main()
