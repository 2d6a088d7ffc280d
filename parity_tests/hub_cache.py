"""A Hugging Face hub cache written on disk, for tests that resolve ``hf-hub:`` names offline.

``make_hub_cache`` lays out a model repository as ``huggingface_hub``'s ``hf_hub_download``
leaves it after a download (its ``file_download`` docstring; ``test_hub.py`` checks it with
``scan_cache_dir`` and against a download from a local server):

    models--ORG--NAME/blobs/<etag>                  the file's bytes, named by the hub's ETag:
                                                    the SHA-256 of an LFS file (weights), the
                                                    git blob SHA-1 of any other
    models--ORG--NAME/snapshots/<commit>/<file>     a relative symlink to its blob
    models--ORG--NAME/refs/<revision>               the commit hash (no newline), for a branch
                                                    or tag; none for a commit hash

``hub_env`` points ``huggingface_hub`` at such a cache, offline, or online at ``HubServer``: a
local stand-in for the hub's file API as ``hf_hub_download`` calls it (``HEAD``/``GET
/ORG/NAME/resolve/REVISION/FILE``, with the hub's headers and error codes), so that the client's
own download and error paths run, unmocked, without a network. Pure Python and
``huggingface_hub``.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

# What the hub stores with git LFS (a repository's .gitattributes; the hub's defaults): these
# files' ETags are their SHA-256, the others' their git blob SHA-1.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5", ".onnx", ".npz")
_COMMIT = re.compile(r"[0-9a-f]{40}")


def etag(name: str, data: bytes) -> str:
    """The ETag the hub serves for ``data`` as the file ``name``."""
    if name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def repo_folder(cache_dir: Path, repo_id: str) -> Path:
    return Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"


def make_hub_cache(
    cache_dir: str | os.PathLike[str],
    repo_id: str,
    files: Mapping[str, str | os.PathLike[str] | bytes],
    revision: str = "main",
) -> str:
    """Write ``files`` (name -> path or bytes) as the snapshot of ``repo_id`` at ``revision``
    into the hub cache ``cache_dir``; returns the snapshot's commit hash (``revision`` itself
    when it is one, else a hash of the revision and the files, so that distinct contents get
    distinct commits)."""
    repo = repo_folder(Path(cache_dir), repo_id)
    contents = {
        name: data if isinstance(data, bytes) else Path(data).read_bytes()
        for name, data in files.items()
    }
    tags = {name: etag(name, data) for name, data in contents.items()}
    if _COMMIT.fullmatch(revision):
        commit = revision
    else:
        listing = "".join(f"{name}\0{tags[name]}\n" for name in sorted(tags))
        commit = hashlib.sha1(f"{repo_id}\0{revision}\0{listing}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        blob = repo / "blobs" / tags[name]
        if not blob.exists():
            blob.write_bytes(data)
        pointer = snapshot / name
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.unlink(missing_ok=True)
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    if not _COMMIT.fullmatch(revision):
        ref = repo / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
    return commit


def hub_env(
    monkeypatch: Any, cache_dir: str | os.PathLike[str], endpoint: str | None = None
) -> None:
    """Point ``huggingface_hub`` at ``cache_dir`` for one test: offline, or online at
    ``endpoint`` (a ``HubServer``'s).

    ``huggingface_hub`` reads ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` into
    ``huggingface_hub.constants`` when it is first imported, and reads those constants (not the
    environment) when it downloads: an earlier test, or the library itself, may have imported
    it already, so both the environment (for anything imported later) and the constants are
    patched (the endpoint also in the URL template built from it at import)."""
    from huggingface_hub import constants

    offline = endpoint is None

    cache = str(Path(cache_dir).resolve())
    monkeypatch.setenv("HF_HUB_CACHE", cache)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    if endpoint is not None:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


class HubServer:
    """The hub's file API on ``127.0.0.1`` (``endpoint``), serving the repositories ``add``ed.

    It answers as the hub does: a file with its ``ETag`` (as ``etag`` names it),
    ``X-Repo-Commit`` and ``Content-Length``; an unknown repository with 401 and
    ``X-Error-Code: RepoNotFound`` (the hub's answer to an anonymous client, private or
    missing alike), a gated one with 403 ``GatedRepo``, an unknown revision with 404
    ``RevisionNotFound``, a missing file with 404 ``EntryNotFound`` and the commit. With
    ``not_a_hub`` set it answers 200 without the hub's headers, as a captive portal or a
    misconfigured proxy does."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, tuple[str, dict[str, bytes]]]] = {}
        self.gated: set[str] = set()
        self.not_a_hub = False
        self.requests: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self.endpoint = ""

    def add(self, repo_id: str, files: Mapping[str, bytes], revision: str = "main") -> str:
        """Serve ``files`` as ``repo_id`` at ``revision``; the commit, as ``make_hub_cache``
        names it."""
        tags = {name: etag(name, data) for name, data in files.items()}
        listing = "".join(f"{name}\0{tags[name]}\n" for name in sorted(tags))
        commit = hashlib.sha1(f"{repo_id}\0{revision}\0{listing}".encode()).hexdigest()
        self.repos.setdefault(repo_id, {})[revision] = (commit, dict(files))
        return commit

    def __enter__(self) -> HubServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                self._answer()

            def do_GET(self) -> None:
                self._answer()

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, headers: Mapping[str, str], data: bytes = b"") -> None:
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(data))}.items():
                    self.send_header(key, value)
                self.end_headers()
                if data and self.command == "GET":
                    self.wfile.write(data)

            def _answer(self) -> None:
                server.requests.append((self.command, self.path))
                # Split before unquoting: a revision may hold a quoted '/' (refs/pr/1).
                parts = [unquote(p) for p in self.path.split("?")[0].strip("/").split("/")]
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._send(404, {})
                repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                if server.not_a_hub:
                    return self._send(200, {"ETag": '"portal"'}, b"<html>sign in</html>")
                repo = server.repos.get(repo_id)
                if repo is None:
                    return self._send(
                        401,
                        {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
                    )
                if repo_id in server.gated:
                    return self._send(
                        403,
                        {
                            "X-Error-Code": "GatedRepo",
                            "X-Error-Message": "Access to model is restricted",
                        },
                    )
                by_commit = {commit: (commit, files) for commit, files in repo.values()}
                found = repo.get(revision) or by_commit.get(revision)
                if found is None:
                    return self._send(
                        404,
                        {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"},
                    )
                commit, files = found
                if filename not in files:
                    return self._send(
                        404,
                        {
                            "X-Error-Code": "EntryNotFound",
                            "X-Error-Message": "Entry not found",
                            "X-Repo-Commit": commit,
                        },
                    )
                data = files[filename]
                headers = {"ETag": f'"{etag(filename, data)}"', "X-Repo-Commit": commit}
                self._send(200, headers, data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
