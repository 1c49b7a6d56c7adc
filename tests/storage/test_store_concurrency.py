"""The window and the CLI may open the same database at the same moment, even a brand-new one."""
from __future__ import annotations

import multiprocessing

from app.storage.store import Store


def _open_and_write(path: str, n: int) -> None:
    store = Store(path)
    for i in range(n):
        store.create_conversation(f"from another process {i}")
    store.close()


def test_processes_opening_a_new_database_together_lose_nothing(tmp_path):
    path = str(tmp_path / "outpost.db")
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_open_and_write, args=(path, 5)) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0] * 6
    store = Store(path)
    assert len(store.list_conversations()) == 30
    assert store.applied_migrations().count("m001_conversations_and_messages") == 1
    assert store.integrity_check() == "ok"
