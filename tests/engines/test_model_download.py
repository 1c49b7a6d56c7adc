"""Model downloads against a real HTTP server on loopback serving the bundled GGUF: resume with
Range (and without it), sha256, and the bad inputs: a 404, a redirect loop, HTML instead of GGUF, a
connection cut at 37 %, a server that lies about Content-Length, a wrong hash, no free space, two
downloads of one file at once. No half-written file is ever listed as a model.

The same server plays Hugging Face (``HF_ENDPOINT`` points at it): a resolve route and the tree API
that lists each file's LFS sha256, paged like the real one. And a real full disk: a 40 MB tmpfs
mounted in a private mount namespace (``unshare``), where a download stops with one sentence both
before the first byte (the server said the size) and in the middle (it did not: ENOSPC)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from app import cli
from app.domain.errors import Cancelled, DownloadFailed, UsageError
from engines.model_download import HubFile, Verification, _Lock, download, hub_file
from engines.model_library import ModelLibrary
from tests.conftest import free_port
from tests.support import in_mount_namespace

ROOT = Path(__file__).resolve().parents[2]


class Behaviour:
    def __init__(self):
        self.ranges = True  # honour Range requests
        self.cut_at: float | None = None  # close the connection after this share of the file
        self.lie: int = 0  # announce this many bytes more than sent
        self.body: bytes | None = None  # send this instead of the model (an HTML page)
        self.files: dict[str, bytes] = {}  # a path's own bytes (another model), else the model
        self.no_length = False  # no Content-Length: the body ends when the connection closes
        self.cuts = 0  # how many times the connection was cut (cut_at)
        # the Hugging Face tree API: the sha256 it lists, whether the file is in LFS at all,
        # and how it fails ("500", "cut": the connection closes without an answer, "html")
        self.hub_sha256: str | None = None
        self.hub_lfs = True
        self.hub_fail: str | None = None
        self.requests: list[dict] = []


@pytest.fixture(scope="module")
def model_bytes(bundled_model) -> bytes:
    return bundled_model.read_bytes()


@pytest.fixture(scope="module")
def model_digest(model_bytes) -> str:
    return hashlib.sha256(model_bytes).hexdigest()


@pytest.fixture
def server(model_bytes, model_digest):
    behaviour = Behaviour()
    behaviour.hub_sha256 = model_digest

    def hub_tree(handler: BaseHTTPRequestHandler) -> None:
        """``/api/models/{owner}/{repo}/tree/{revision}/{folder}``: the folder's README on a
        first page (with a Link to the next one, as the Hub pages), then ``tiny.gguf``."""
        if behaviour.hub_fail == "500":
            handler.send_error(500, "Internal Server Error")
            return
        if behaviour.hub_fail == "cut":
            handler.close_connection = True
            return
        path, _, query = handler.path.partition("?")
        folder = unquote(path.split("/tree/", 1)[1].partition("/")[2])
        prefix = f"{folder}/" if folder else ""
        gguf = {"type": "file", "oid": "9" * 40, "size": len(model_bytes),
                "path": f"{prefix}tiny.gguf"}
        if behaviour.hub_lfs:
            gguf["lfs"] = {"oid": behaviour.hub_sha256, "size": len(model_bytes),
                           "pointerSize": 134}
        first = "cursor=2" not in query
        listing = [{"type": "file", "oid": "1" * 40, "size": 12, "path": f"{prefix}README.md"}] \
            if first else [gguf]
        body = b"<html>busy</html>" if behaviour.hub_fail == "html" else \
            json.dumps(listing).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        if first:
            handler.send_header("Link", f'<{behaviour.url}{path}?cursor=2>; rel="next"')
        handler.end_headers()
        handler.wfile.write(body)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 (http.server naming)
            behaviour.requests.append({"path": self.path, "range": self.headers.get("Range")})
            if self.path.startswith("/api/models/"):
                hub_tree(self)
                return
            if self.path == "/missing.gguf":
                self.send_error(404, "Not Found")
                return
            if self.path.startswith("/loop"):
                self.send_response(302)
                self.send_header("Location", "/loop-again.gguf" if self.path == "/loop.gguf"
                                 else "/loop.gguf")
                self.end_headers()
                return
            data = behaviour.body if behaviour.body is not None else \
                behaviour.files.get(self.path, model_bytes)
            start = 0
            wanted = self.headers.get("Range")
            if wanted and behaviour.ranges:
                start = int(wanted.split("=")[1].split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            if behaviour.no_length:
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(len(body) + behaviour.lie))
            self.end_headers()
            try:
                if behaviour.cut_at is not None:
                    body = body[:int(len(data) * behaviour.cut_at) - start]
                    behaviour.cut_at = None  # the next request gets the rest
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    behaviour.cuts += 1
                    return
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client stopped reading (a full disk)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    behaviour.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield behaviour
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def library(tmp_path) -> ModelLibrary:
    return ModelLibrary(tmp_path / "models", include_bundled=False)


def listed(library: ModelLibrary) -> list[str]:
    return [e.name for e in library.entries()]


def test_a_download_cut_at_37_percent_resumes_with_range_and_is_verified(server, library,
                                                                         model_bytes):
    server.cut_at = 0.37
    with pytest.raises(DownloadFailed, match="run the same command again to resume") as cut:
        download(f"{server.url}/tiny.gguf", library)
    kept = int(len(model_bytes) * 0.37)
    # in plain words, not httpx's ("peer closed connection without sending complete message
    # body: received N bytes, expected M")
    assert str(cut.value).startswith(
        f"The download of tiny broke off: the server closed the connection after {kept:,} of "
        f"the {len(model_bytes):,} bytes it announced. {kept:,} bytes are kept in ")
    part = library.models_dir / "tiny.gguf.part"
    assert part.stat().st_size == int(len(model_bytes) * 0.37)
    assert listed(library) == []  # a half-written file is never offered
    seen = []
    entry = download(f"{server.url}/tiny.gguf", library,
                     sha256=hashlib.sha256(model_bytes).hexdigest(), on_progress=seen.append)
    assert server.requests[-1]["range"] == f"bytes={int(len(model_bytes) * 0.37)}-"
    assert seen[0].resumed_from == int(len(model_bytes) * 0.37)
    assert seen[-1].done == seen[-1].total == len(model_bytes)
    assert entry.path.read_bytes() == model_bytes and not part.exists()
    assert listed(library) == ["tiny"]


def test_a_host_that_cannot_be_reached_is_said_in_words_and_offers_no_resume(library):
    """With no DNS, `models download` said "The download stopped after 0 bytes ([Errno -2]
    Name or service not known); run the same command again to resume it.": nothing had
    started. Now the words a provider's failure gets (engines.http_policy), and a resume only
    when bytes were kept."""
    def no_dns(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno -2] Name or service not known", request=request)

    with httpx.Client(transport=httpx.MockTransport(no_dns)) as client:
        with pytest.raises(DownloadFailed) as failed:
            download("http://models.example/x.gguf", library, client=client)
    assert str(failed.value) == ("Could not connect to models.example: the address of "
                                 "http://models.example/x.gguf could not be looked up. "
                                 "Offline, or a typo in the URL? Nothing was downloaded.")

    url = f"http://127.0.0.1:{free_port()}/tiny.gguf"  # nothing listens there
    with pytest.raises(DownloadFailed) as failed:
        download(url, library)
    said = str(failed.value)
    assert said.startswith(f"Could not connect to 127.0.0.1: nothing answered at {url} "
                           "(connection refused).") and said.endswith(" Nothing was downloaded.")
    assert "Errno" not in said and "resume" not in said
    (library.models_dir / "tiny.gguf.part").write_bytes(b"GGUF" + b"\0" * 96)  # an earlier try
    with pytest.raises(DownloadFailed, match=r"\(connection refused\)\..* 100 bytes are kept "
                       r"in tiny\.gguf\.part: run the same command again to resume\.$"):
        download(url, library)
    assert listed(library) == []


def test_a_server_without_range_support_starts_over_and_says_so(server, library, model_bytes):
    server.cut_at, server.ranges = 0.5, False
    with pytest.raises(DownloadFailed):
        download(f"{server.url}/tiny.gguf", library)
    notices = []
    entry = download(f"{server.url}/tiny.gguf", library, on_notice=notices.append)
    assert notices and "does not resume" in notices[0]
    assert entry.path.read_bytes() == model_bytes


def test_a_download_already_in_the_library_is_deleted_and_names_the_model(server, library):
    """A second byte-identical copy landed under the URL's name; `models import` of that file
    is refused ("already in the library, as tiny"), and so is a download of it now."""
    first = download(f"{server.url}/tiny.gguf", library)
    with pytest.raises(UsageError, match="The download of again is already in the library, "
                                         "as tiny: .*the downloaded file was deleted"):
        download(f"{server.url}/tiny.gguf", library, name="again")
    assert listed(library) == ["tiny"] and list(library.models_dir.iterdir()) == [first.path]


def test_a_wrong_hash_deletes_the_file_and_says_so(server, library):
    with pytest.raises(DownloadFailed, match="does not match its sha256.*deleted"):
        download(f"{server.url}/tiny.gguf", library, sha256="0" * 64)
    assert list(library.models_dir.iterdir()) == [] and listed(library) == []


@pytest.mark.parametrize("case, match", [
    ("404", "answered 404 Not Found"),
    ("loop", "redirects in a loop"),
    ("html", "not a GGUF model"),
    ("lie", r"closed the connection after [\d,]+ of the [\d,]+ bytes it announced\. .*run "
            "the same command again to resume"),
])
def test_bad_servers_get_one_clear_sentence_and_nothing_is_listed(server, library, case, match):
    url = {"404": "/missing.gguf", "loop": "/loop.gguf"}.get(case, "/tiny.gguf")
    if case == "html":
        server.body = b"<!doctype html><html><body>Rate limited</body></html>"
    if case == "lie":
        server.lie = 1000
    with pytest.raises(DownloadFailed, match=match):
        download(server.url + url, library)
    assert listed(library) == []
    if case == "html":
        assert not (library.models_dir / "tiny.gguf.part").exists()


def test_no_free_space_is_said_before_anything_is_written(server, library, monkeypatch):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda path: real(path)._replace(free=1000))
    with pytest.raises(DownloadFailed, match="not enough free space"):
        download(f"{server.url}/tiny.gguf", library)
    assert not (library.models_dir / "tiny.gguf.part").exists() or \
        (library.models_dir / "tiny.gguf.part").stat().st_size == 0


def test_two_downloads_of_one_file_at_once_are_refused(server, library):
    library.models_dir.mkdir(parents=True)
    with _Lock(library.models_dir / "tiny.gguf.part"):  # another download holds it
        with pytest.raises(DownloadFailed, match="already being downloaded"):
            download(f"{server.url}/tiny.gguf", library)
    (library.models_dir / "tiny.gguf.part.lock").write_text("999999")  # a dead process's lock
    assert download(f"{server.url}/tiny.gguf", library).name == "tiny"


def test_cancel_keeps_the_part_for_a_resume(server, library, model_bytes):
    cancel = threading.Event()
    progress = []

    def stop_soon(p):
        progress.append(p)
        if len(progress) == 3:
            cancel.set()

    with pytest.raises(Cancelled, match="part is kept"):
        download(f"{server.url}/tiny.gguf", library, on_progress=stop_soon, cancel=cancel)
    assert (library.models_dir / "tiny.gguf.part").stat().st_size > 0
    assert download(f"{server.url}/tiny.gguf", library).path.read_bytes() == model_bytes


def test_the_cli_downloads_with_progress_and_verifies(server, outpost_home, capsys, model_bytes):
    digest = hashlib.sha256(model_bytes).hexdigest()
    code = cli.main(["models", "download", f"{server.url}/tiny.gguf", "--sha256", digest,
                     "--json"])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and out[-1]["event"] == "done" and out[-1]["name"] == "tiny"
    assert any(e["event"] == "progress" for e in out)
    assert cli.main(["models", "verify", "tiny", "--sha256", digest]) == 0
    assert digest in capsys.readouterr().out
    assert cli.main(["models", "verify", "tiny", "--sha256", "1" * 64]) == 3
    assert "does not match" in capsys.readouterr().err
    # not a sha256 at all: refused before the file is hashed (or anything downloaded)
    assert cli.main(["models", "verify", "tiny", "--sha256", "abc"]) == 2
    assert "a sha256 is 64 hex digits, got 'abc'" in capsys.readouterr().err
    assert cli.main(["models", "download", f"{server.url}/tiny.gguf", "--sha256", "g" * 64]) == 2
    assert "a sha256 is 64 hex digits" in capsys.readouterr().err
    assert cli.main(["models", "download", f"{server.url}/missing.gguf"]) == 4
    assert "404" in capsys.readouterr().err


# -- the sha256 from Hugging Face ---------------------------------------------------------------
@pytest.fixture
def hub(server, monkeypatch):
    """The loopback server as the Hugging Face endpoint (with the trailing slash users write),
    and the resolve URL of ``quant/tiny.gguf`` at the revision ``refs/pr/1`` in owner/repo."""
    monkeypatch.setenv("HF_ENDPOINT", server.url + "/")
    server.resolve_url = f"{server.url}/owner/repo/resolve/refs%2Fpr%2F1/quant/tiny.gguf" \
        "?download=true"
    return server


def hub_requests(server) -> list[str]:
    return [r["path"] for r in server.requests if r["path"].startswith("/api/")]


@pytest.mark.parametrize("url, expected", [
    ("https://huggingface.co/bartowski/Qwen-GGUF/resolve/main/Qwen-Q4_K_M.gguf?download=true",
     HubFile("https://huggingface.co", "bartowski/Qwen-GGUF", "main", "Qwen-Q4_K_M.gguf")),
    ("https://huggingface.co/o/r/resolve/refs%2Fpr%2F3/q4/a%20b.gguf",
     HubFile("https://huggingface.co", "o/r", "refs/pr/3", "q4/a b.gguf")),
    ("https://huggingface.co/o/r/blob/main/x.gguf", None),  # the web page, not the file
    ("https://huggingface.co/datasets/o/r/resolve/main/x.gguf", None),  # not a model repo
    ("https://hf.example.org/o/r/resolve/main/x.gguf", None),  # not the endpoint
])
def test_only_resolve_urls_of_the_endpoint_are_hugging_face_files(url, expected, monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert hub_file(url) == expected
    if expected is not None and expected.path == "q4/a b.gguf":
        assert expected.tree_url == \
            "https://huggingface.co/api/models/o/r/tree/refs%2Fpr%2F3/q4"


def test_a_hugging_face_download_is_verified_against_the_hub_sha256(hub, library, model_bytes,
                                                                    model_digest):
    notices, verified = [], []
    entry = download(hub.resolve_url, library, on_notice=notices.append,
                     on_verified=verified.append)
    assert entry.path.read_bytes() == model_bytes and listed(library) == ["tiny"]
    # the revision is quoted whole; the folder listing is paged and the second page followed
    assert hub_requests(hub) == ["/api/models/owner/repo/tree/refs%2Fpr%2F1/quant",
                                 "/api/models/owner/repo/tree/refs%2Fpr%2F1/quant?cursor=2"]
    assert verified == [Verification(model_digest, "huggingface")]
    assert notices == [f"tiny was verified against Hugging Face (sha256 {model_digest})."]


def test_a_wrong_hub_sha256_deletes_the_file_and_names_hugging_face(hub, library):
    hub.hub_sha256 = "ab" * 32
    with pytest.raises(DownloadFailed, match=f"does not match its sha256 from Hugging Face "
                                             f"\\(expected {'ab' * 32}, got .*deleted"):
        download(hub.resolve_url, library)
    assert list(library.models_dir.iterdir()) == [] and listed(library) == []


@pytest.mark.parametrize("fail, why", [
    ("500", "the Hugging Face API answered 500 Internal Server Error"),
    ("cut", "the Hugging Face API could not be reached"),
    ("html", "the Hugging Face API answered something else than a file list"),
])
def test_an_unanswering_hub_api_only_costs_the_check(hub, library, model_bytes, fail, why):
    hub.hub_fail = fail
    notices, verified = [], []
    entry = download(hub.resolve_url, library, on_notice=notices.append,
                     on_verified=verified.append)
    assert entry.path.read_bytes() == model_bytes and verified == []
    assert len(notices) == 1 and notices[0].startswith(
        f"tiny could not be verified against Hugging Face ({why}")
    assert notices[0].endswith("it is downloaded without a sha256 check.")


def test_a_file_kept_in_git_has_no_hub_sha256_and_says_so(hub, library, model_bytes):
    hub.hub_lfs = False
    notices = []
    assert download(hub.resolve_url, library, on_notice=notices.append).path.read_bytes() == \
        model_bytes
    assert notices == [("Hugging Face lists no sha256 for quant/tiny.gguf (it is kept in git, "
                        "not LFS); tiny is downloaded without a sha256 check.")]


def test_a_given_sha256_wins_over_the_hub(hub, library, model_digest):
    hub.hub_sha256 = "ab" * 32  # the Hub would refuse the file
    verified = []
    download(hub.resolve_url, library, sha256=model_digest.upper(), on_verified=verified.append)
    assert verified == [Verification(model_digest, "given")] and hub_requests(hub) == []


def test_the_cli_says_the_download_was_verified_against_hugging_face(hub, outpost_home, capsys,
                                                                     model_digest):
    assert cli.main(["models", "download", hub.resolve_url]) == 0
    assert f"verified against Hugging Face (sha256 {model_digest})" in capsys.readouterr().err


# -- a real full disk ---------------------------------------------------------------------------
TMPFS_SIZE = "40m"  # less than the bundled model (~98 MB)
FULL_DISK_CHILD = """
import json, os, sys
from pathlib import Path
from app.domain.errors import OutpostError
from engines.model_download import download
from engines.model_library import ModelLibrary

library = ModelLibrary(Path(sys.argv[1]), include_bundled=False)
try:
    download(sys.argv[2], library)
    error = None
except OutpostError as exc:
    error = {"type": type(exc).__name__, "message": str(exc)}
print(json.dumps({"error": error, "files": sorted(os.listdir(library.models_dir)),
                  "listed": [e.name for e in library.entries()]}))
"""
# mount a tmpfs over $1 in a private mount namespace (nothing is left mounted), then run Python
MOUNT_AND_RUN = 'mount -t tmpfs -o size=$0 tmpfs "$1" || exit 97; shift; cd "$1"; shift; ' \
    'exec "$@"'


def run_on_a_small_disk(disk: Path, *command: str) -> subprocess.CompletedProcess:
    """Run ``command`` with a TMPFS_SIZE tmpfs mounted on ``disk``: ``unshare -rm`` (a user and
    mount namespace), else ``unshare -m`` (root). Fails, never skips, when neither can mount:
    CI runs as root on the image where both work."""
    return in_mount_namespace(MOUNT_AND_RUN, TMPFS_SIZE, str(disk), str(ROOT), *command,
                              timeout=120)


@pytest.mark.parametrize("announced", [True, False], ids=["size-announced", "chunked"])
def test_a_real_full_disk_stops_the_download_with_one_sentence(server, tmp_path, announced):
    server.no_length = not announced  # no size: the free-space check cannot catch it before
    disk = tmp_path / "disk"
    disk.mkdir()
    models = disk / "models"
    done = run_on_a_small_disk(disk, sys.executable, "-c", FULL_DISK_CHILD, str(models),
                               f"{server.url}/tiny.gguf")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["error"] is not None and result["error"]["type"] == "DownloadFailed"
    message = result["error"]["message"]
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence
    if announced:
        assert message.startswith(f"There is not enough free space in {models} for tiny: it "
                                  "needs 98,362,432 more bytes")
        assert result["files"] == []  # refused before the first byte
    else:
        assert message.startswith(f"The disk holding {models} is full: tiny stopped after ")
        assert message.endswith("free some space and run the same command again to resume.")
        assert result["files"] == ["tiny.gguf.part"]  # kept for a resume, never listed
    assert result["listed"] == []
    assert os.listdir(disk) == []  # the tmpfs lived in its own mount namespace, now gone
