"""Model downloads against a real HTTP server on loopback serving the bundled GGUF: resume with
Range (and without it), sha256, and the bad inputs: a 404, a redirect loop, HTML instead of GGUF, a
connection cut at 37 %, a server that lies about Content-Length, a wrong hash, no free space, two
downloads of one file at once. No half-written file is ever listed as a model."""
from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app import cli
from app.domain.errors import Cancelled, DownloadFailed
from engines.model_download import _Lock, download
from engines.model_library import ModelLibrary


class Behaviour:
    def __init__(self):
        self.ranges = True  # honour Range requests
        self.cut_at: float | None = None  # close the connection after this share of the file
        self.lie: int = 0  # announce this many bytes more than sent
        self.body: bytes | None = None  # send this instead of the model (an HTML page)
        self.requests: list[dict] = []


@pytest.fixture(scope="module")
def model_bytes(bundled_model) -> bytes:
    return bundled_model.read_bytes()


@pytest.fixture
def server(model_bytes):
    behaviour = Behaviour()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 (http.server naming)
            behaviour.requests.append({"path": self.path, "range": self.headers.get("Range")})
            if self.path == "/missing.gguf":
                self.send_error(404, "Not Found")
                return
            if self.path.startswith("/loop"):
                self.send_response(302)
                self.send_header("Location", "/loop-again.gguf" if self.path == "/loop.gguf"
                                 else "/loop.gguf")
                self.end_headers()
                return
            data = behaviour.body if behaviour.body is not None else model_bytes
            start = 0
            wanted = self.headers.get("Range")
            if wanted and behaviour.ranges:
                start = int(wanted.split("=")[1].split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body) + behaviour.lie))
            self.end_headers()
            if behaviour.cut_at is not None:
                body = body[:int(len(data) * behaviour.cut_at) - start]
                behaviour.cut_at = None  # the next request gets the rest
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

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
    with pytest.raises(DownloadFailed, match="run the same command again to resume"):
        download(f"{server.url}/tiny.gguf", library)
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


def test_a_server_without_range_support_starts_over_and_says_so(server, library, model_bytes):
    server.cut_at, server.ranges = 0.5, False
    with pytest.raises(DownloadFailed):
        download(f"{server.url}/tiny.gguf", library)
    notices = []
    entry = download(f"{server.url}/tiny.gguf", library, on_notice=notices.append)
    assert notices and "does not resume" in notices[0]
    assert entry.path.read_bytes() == model_bytes


def test_a_wrong_hash_deletes_the_file_and_says_so(server, library):
    with pytest.raises(DownloadFailed, match="does not match its sha256.*deleted"):
        download(f"{server.url}/tiny.gguf", library, sha256="0" * 64)
    assert list(library.models_dir.iterdir()) == [] and listed(library) == []


@pytest.mark.parametrize("case, match", [
    ("404", "answered 404 Not Found"),
    ("loop", "redirects in a loop"),
    ("html", "not a GGUF model"),
    ("lie", r"received \d+ bytes, expected \d+.*run the same command again to resume"),
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
    assert cli.main(["models", "download", f"{server.url}/missing.gguf"]) == 4
    assert "404" in capsys.readouterr().err
