"""A local stand-in for the Hugging Face Hub: one model repository served on 127.0.0.1 over HTTP.

It answers what ``huggingface_hub`` 2.4 sends (read in its ``file_download.py``, ``hf_api.py``,
``_commit_api.py`` and ``lfs.py``):

- ``HEAD``/``GET /{repo}/resolve/{revision}/{path}``: the file, with ``X-Repo-Commit`` (the commit the
  revision names) and an ``ETag``; an LFS file (``*.safetensors`` or over 1 MB, as the Hub stores it)
  also carries ``X-Linked-Etag`` = its sha256 and ``X-Linked-Size``. Unknown revision or file: 404 with
  the Hub's ``X-Error-Code`` (``RevisionNotFound``, ``EntryNotFound``).
- ``GET /api/models/{repo}[/revision/{revision}]``: ``id``, ``sha`` and ``siblings``.
- Uploads: ``POST /api/repos/create``; ``POST /api/models/{repo}/preupload/{revision}`` (upload mode per
  file); ``POST /{repo}.git/info/lfs/objects/batch`` (basic transfer, a ``PUT`` URL per object not yet
  stored); ``PUT /lfs-objects/{oid}`` (refused unless the body's sha256 and size are the oid's); and
  ``POST /api/models/{repo}/commit/{revision}`` (NDJSON: ``header``, ``file``, ``lfsFile``), which makes a
  new commit on that branch. Xet uploads are not spoken: clients must run with ``HF_HUB_DISABLE_XET=1``.

``corrupt`` names files whose body is served with one byte changed while the headers still give the
true sha256, as a broken mirror or a tampered blob would.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_THRESHOLD = 1_000_000


def is_lfs(path: str, data: bytes) -> bool:
    """Whether the Hub keeps this file in LFS storage (its sha256 is then the ETag)."""
    return path.endswith(".safetensors") or len(data) >= LFS_THRESHOLD


class HubStandIn:
    """One repository ``repo`` with branches and tags, each commit a ``{path: bytes}`` tree."""

    def __init__(self, repo: str, folder: Path | None = None, tag: str | None = None) -> None:
        self.repo = repo
        self.commits: dict[str, dict[str, bytes]] = {}
        self.refs: dict[str, str] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.corrupt: set[str] = set()
        self.requests: list[str] = []
        self.commit("main", {} if folder is None else {
            path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()
        })
        if tag is not None:
            self.refs[tag] = self.refs["main"]
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HubStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def commit(self, branch: str, changes: dict[str, bytes]) -> str:
        """A new commit on ``branch`` with ``changes`` over its current tree; returns the commit sha."""
        parent = self.refs.get(branch)
        tree = {**self.commits.get(parent, {}), **changes}
        listing = json.dumps([parent, {path: hashlib.sha256(data).hexdigest() for path, data in sorted(tree.items())}])
        sha = hashlib.sha1(listing.encode()).hexdigest()
        self.commits[sha], self.refs[branch] = tree, sha
        return sha

    def sha_of(self, revision: str) -> str | None:
        return revision if revision in self.commits else self.refs.get(revision)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, with_body: bool = True) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def _json(self, payload: object, status: int = 200) -> None:
                self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

            def _error(self, status: int, code: str, headers: dict[str, str] | None = None, with_body: bool = True) -> None:
                self._send(status, json.dumps({"error": code}).encode(), {"X-Error-Code": code, **(headers or {})}, with_body)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def _route(self) -> list[str]:
                path = unquote(urlsplit(self.path).path)
                hub.requests.append(f"{self.command} {path}")
                return path

            def _resolve(self, with_body: bool) -> None:
                path = self._route()
                prefix = f"/{hub.repo}/resolve/"
                if not path.startswith(prefix):
                    return self._error(404, "RepoNotFound", with_body=with_body)
                revision, _, filename = path[len(prefix):].partition("/")
                sha = hub.sha_of(revision)
                if sha is None:
                    return self._error(404, "RevisionNotFound", with_body=with_body)
                data = hub.commits[sha].get(filename)
                if data is None:
                    return self._error(404, "EntryNotFound", {"X-Repo-Commit": sha}, with_body)
                headers = {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}
                if is_lfs(filename, data):
                    digest = hashlib.sha256(data).hexdigest()
                    headers.update({"ETag": f'"{digest}"', "X-Linked-Etag": f'"{digest}"', "X-Linked-Size": str(len(data))})
                if filename in hub.corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                self._send(200, data, headers, with_body)

            def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
                self._resolve(with_body=False)

            def do_GET(self) -> None:  # noqa: N802
                if not urlsplit(self.path).path.startswith("/api/models/"):
                    return self._resolve(with_body=True)
                path = self._route()
                rest = path[len(f"/api/models/{hub.repo}"):]
                revision = rest[len("/revision/"):] if rest.startswith("/revision/") else "main"
                sha = hub.sha_of(revision)
                if not path.startswith(f"/api/models/{hub.repo}") or sha is None:
                    return self._error(404, "RevisionNotFound")
                self._json({"id": hub.repo, "sha": sha, "private": False,
                            "siblings": [{"rfilename": name} for name in sorted(hub.commits[sha])]})

            def do_PUT(self) -> None:  # noqa: N802
                path, body = self._route(), self._body()
                oid = path.rsplit("/", 1)[-1]
                if not path.startswith("/lfs-objects/") or hashlib.sha256(body).hexdigest() != oid:
                    return self._error(400, "BadLfsObject")
                hub.lfs_objects[oid] = body
                self._send(200)

            def do_POST(self) -> None:  # noqa: N802
                path, body = self._route(), self._body()
                if path == "/api/repos/create":
                    return self._json({"url": f"{hub.endpoint}/{hub.repo}", "name": hub.repo})
                if path == f"/{hub.repo}.git/info/lfs/objects/batch":
                    objects = json.loads(body)["objects"]
                    return self._json({"transfer": "basic", "objects": [
                        {"oid": o["oid"], "size": o["size"]} | ({} if o["oid"] in hub.lfs_objects else
                            {"actions": {"upload": {"href": f"{hub.endpoint}/lfs-objects/{o['oid']}"}}})
                        for o in objects
                    ]})
                if path.startswith(f"/api/models/{hub.repo}/preupload/"):
                    files = json.loads(body)["files"]
                    return self._json({"files": [
                        {"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(".safetensors") or f["size"] >= LFS_THRESHOLD
                         else "regular", "shouldIgnore": False, "oid": None} for f in files
                    ]})
                if path.startswith(f"/api/models/{hub.repo}/commit/"):
                    return self._commit(path.rsplit("/", 1)[-1], body)
                self._error(404, "RepoNotFound")

            def _commit(self, branch: str, body: bytes) -> None:
                changes = {}
                for line in body.splitlines():
                    item = json.loads(line)
                    value = item["value"]
                    if item["key"] == "file":
                        changes[value["path"]] = base64.b64decode(value["content"])
                    elif item["key"] == "lfsFile":
                        if value["oid"] not in hub.lfs_objects:
                            return self._error(422, "LfsObjectMissing")
                        changes[value["path"]] = hub.lfs_objects[value["oid"]]
                sha = hub.commit(branch, changes)
                self._json({"commitUrl": f"{hub.endpoint}/{hub.repo}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None})

        return Handler
