"""The download queue against the loopback server of test_model_download (the bundled GGUF):
queued while offline it waits and downloads nothing; online it downloads in order, verifies and
leaves the queue, and the model is in the library; the queue file survives a restart, which
resumes a cut download with Range; a failed download keeps its message; a damaged queue file is
set aside with a notice; the file is replaced atomically."""
from __future__ import annotations

import json
import os

import pytest

from app.domain.errors import DownloadFailed, KnownStorageError, UsageError
from engines.download_queue import QUEUE_FILE, DownloadQueue, QueueState
from engines.model_library import ModelLibrary
from tests.engines import test_model_download as downloads

# the loopback server serving the bundled GGUF, and an empty library, as in test_model_download
server, library, model_bytes, model_digest = (downloads.server, downloads.library,
                                              downloads.model_bytes, downloads.model_digest)
listed = downloads.listed

WAITING, QUEUED, FAILED = (QueueState.WAITING_FOR_NETWORK, QueueState.QUEUED,
                           QueueState.FAILED)


def states(queue: DownloadQueue) -> list[tuple[str, QueueState]]:
    return [(item.model_name, item.state) for item in queue.items()]


def test_a_download_queued_offline_waits_and_runs_when_the_network_returns(
        server, library, model_bytes, model_digest):
    queue = DownloadQueue(library)
    item = queue.add(f"{server.url}/tiny.gguf", sha256=model_digest.upper(), online=False)
    assert item.state == WAITING and item.sha256 == model_digest
    assert queue.run_next(online=False) is None and queue.run_pending(online=False) == []
    assert server.requests == [] and states(queue) == [("tiny", WAITING)]
    assert os.listdir(library.models_dir) == [QUEUE_FILE]

    verified = []
    outcomes = queue.run_pending(online=lambda: True, on_verified=verified.append)
    assert [(o.completed, o.entry.name) for o in outcomes] == [(True, "tiny")]
    assert verified[0].sha256 == model_digest and verified[0].source == "given"
    assert queue.items() == [] and listed(library) == ["tiny"]
    assert (library.models_dir / "tiny.gguf").read_bytes() == model_bytes


def test_going_offline_marks_every_queued_download_waiting(server, library):
    queue = DownloadQueue(library)
    queue.add(f"{server.url}/a.gguf")
    queue.add(f"{server.url}/b.gguf", name="bee")
    assert states(queue) == [("a", QUEUED), ("bee", QUEUED)]
    assert queue.run_next(online=False) is None
    assert states(queue) == [("a", WAITING), ("bee", WAITING)] and server.requests == []


def test_the_queue_survives_a_restart_and_resumes_the_cut_download(server, library,
                                                                   model_bytes):
    queue = DownloadQueue(library)
    queue.add(f"{server.url}/tiny.gguf")
    queue.add(f"{server.url}/second.gguf")
    # another model (a byte more): the same bytes twice would be refused as already there
    server.files["/second.gguf"] = model_bytes + b"\0"
    server.cut_at = 0.37  # the connection drops, and with it the network

    outcomes = queue.run_pending(online=lambda: server.cuts == 0)
    assert len(outcomes) == 1 and isinstance(outcomes[0].error, DownloadFailed)
    assert outcomes[0].item.state == WAITING and outcomes[0].item.message is None
    assert states(queue) == [("tiny", WAITING), ("second", QUEUED)]  # second never started
    cut = int(len(model_bytes) * 0.37)
    assert (library.models_dir / "tiny.gguf.part").stat().st_size == cut

    restarted = DownloadQueue(ModelLibrary(library.models_dir, include_bundled=False))
    assert states(restarted) == [("tiny", WAITING), ("second", QUEUED)]
    outcomes = restarted.run_pending(online=True)
    assert [o.entry.name for o in outcomes] == ["tiny", "second"]
    assert {"path": "/tiny.gguf", "range": f"bytes={cut}-"} in server.requests
    assert (library.models_dir / "tiny.gguf").read_bytes() == model_bytes
    assert restarted.items() == [] and listed(library) == ["second", "tiny"]


def test_a_failed_download_keeps_its_message_across_a_restart(server, library):
    queue = DownloadQueue(library)
    queue.add(f"{server.url}/missing.gguf")
    [outcome] = queue.run_pending(online=True)
    assert not outcome.completed and outcome.item.state == FAILED
    assert outcome.item.message == str(outcome.error) and "answered 404" in outcome.item.message

    restarted = DownloadQueue(ModelLibrary(library.models_dir, include_bundled=False))
    [item] = restarted.items()
    assert item.state == FAILED and item.message == outcome.item.message
    asked = len(server.requests)
    assert restarted.pending() == [] and restarted.run_pending(online=True) == []
    assert len(server.requests) == asked  # a failed download is not tried again by itself

    assert restarted.retry(item.url).state == QUEUED and restarted.items()[0].message is None
    assert restarted.mark_failed(item.url, "Stopped by hand.").message == "Stopped by hand."
    assert restarted.add(item.url).state == QUEUED  # adding a failed one again retries it
    assert restarted.remove(item.url).url == item.url and restarted.items() == []


def test_a_cut_download_keeps_how_to_resume_it_for_each_front_end(server, library,
                                                                  model_bytes):
    """The command line's words stay the message ("…: run the same command again to
    resume."); the window, which has a Retry button and no command, says its own way, from
    the failure's parts kept in the queue file (also after a restart), not by rewriting text."""
    server.cut_at = 0.37  # the connection drops, the network stays up: failed
    queue = DownloadQueue(library)
    queue.add(f"{server.url}/tiny.gguf")
    [outcome] = queue.run_pending(online=True)
    error = outcome.error
    assert isinstance(error, DownloadFailed) and error.resumable
    kept = f"{int(len(model_bytes) * 0.37):,} bytes are kept in tiny.gguf.part"
    assert str(error) == outcome.item.message == \
        f"{error.what}: run the same command again to resume."
    assert error.what.endswith(kept)
    in_window = f"{error.what}. Press Retry to resume it."
    assert error.saying("press Retry to resume it") == in_window

    restarted = DownloadQueue(ModelLibrary(library.models_dir, include_bundled=False))
    [item] = restarted.items()
    assert item.message == str(error)
    assert item.failure_words("press Retry to resume it") == in_window
    assert restarted.retry(item.url).failure_words("press Retry") is None  # (reset)
    [outcome] = restarted.run_pending(online=True)  # and it does resume
    assert outcome.completed and server.requests[-1]["range"] == \
        f"bytes={int(len(model_bytes) * 0.37)}-"


def test_a_failure_that_cannot_be_resumed_reads_the_same_everywhere(server, library):
    queue = DownloadQueue(library)
    queue.add(f"{server.url}/missing.gguf")
    [outcome] = queue.run_pending(online=True)
    assert not outcome.error.resumable
    assert outcome.item.failure_words("press Retry to resume it") == str(outcome.error) == \
        outcome.error.saying("press Retry to resume it")


@pytest.mark.parametrize("content", [
    b"{not json", b"\xff\xfe\x00garbage", b"[]", b'{"version": 1, "downloads": {}}',
    b'{"version": 9, "downloads": []}',
    b'{"version": 1, "downloads": [{"url": "https://x/a.gguf", "state": "paused"}]}',
    b'{"version": 1, "downloads": [{"url": "https://x/readme", "state": "queued"}]}',
])
def test_a_damaged_queue_file_is_set_aside_with_a_notice(server, library, content):
    library.models_dir.mkdir(parents=True)
    (library.models_dir / QUEUE_FILE).write_bytes(content)
    notices = []
    queue = DownloadQueue(library, on_notice=notices.append)
    assert queue.items() == []
    [notice] = notices
    [aside] = [p for p in library.models_dir.iterdir() if p.name != QUEUE_FILE]
    assert notice.startswith(f"The download queue {queue.path} could not be read (")
    assert notice.endswith(f"it was set aside as {aside.name} and the queue starts empty.")
    assert aside.name.startswith(f"{QUEUE_FILE}.corrupt-") and aside.read_bytes() == content
    queue.add(f"{server.url}/tiny.gguf")  # and the queue works again
    assert json.loads(queue.path.read_text())["downloads"][0]["url"] == f"{server.url}/tiny.gguf"
    assert len(notices) == 1


def test_the_queue_file_is_replaced_whole_or_not_at_all(server, library, monkeypatch):
    queue = DownloadQueue(library)
    queue.add(f"{server.url}/tiny.gguf")
    before = queue.path.read_bytes()

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(KnownStorageError, match="could not be written \\(No space left on "
                                                "device\\)"):
        queue.add(f"{server.url}/other.gguf")
    assert queue.path.read_bytes() == before
    assert sorted(os.listdir(library.models_dir)) == [QUEUE_FILE]  # no temporary file left


@pytest.mark.parametrize("args, match", [
    (("ftp://x/a.gguf",), "is not an http"),
    (("http://x/readme",),
     "does not end in a .gguf file's name: use the file's own download link"),
    (("http://x/a.gguf", None, "abc"), "64 hexadecimal digits"),
    (("http://x/a.gguf",), "already in the download queue \\(queued\\)"),
    (("http://y/b.gguf", "a"), "A download called a is already queued"),
])
def test_what_add_refuses(library, args, match):
    queue = DownloadQueue(library)
    queue.add("http://x/a.gguf")
    with pytest.raises(UsageError, match=match):
        queue.add(*args)
    assert [i.url for i in queue.items()] == ["http://x/a.gguf"]


def test_a_model_already_in_the_library_is_refused_at_once(server, library):
    queue = DownloadQueue(library)
    queue.add(f"{server.url}/tiny.gguf")
    queue.run_pending()
    with pytest.raises(UsageError, match="already in the library"):
        queue.add(f"{server.url}/tiny.gguf")


def test_remove_can_discard_the_part(server, library):
    queue = DownloadQueue(library)
    queue.add(f"{server.url}/tiny.gguf")
    server.cut_at = 0.2
    queue.run_pending()
    part = library.models_dir / "tiny.gguf.part"
    assert part.exists()
    queue.remove(f"{server.url}/tiny.gguf", discard_part=True)
    assert not part.exists() and queue.items() == []
    with pytest.raises(UsageError, match="is not in the download queue"):
        queue.remove(f"{server.url}/tiny.gguf")
