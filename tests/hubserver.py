"""A local server that speaks the part of the Hugging Face Hub protocol the real clients use.

`huggingface_hub` (snapshot_download, hf_hub_download, HfFileSystem), `datasets` (load_dataset,
streaming included) and sae-lens are pointed at it through HF_ENDPOINT, in subprocesses, so
`repro fetch` runs its real code against it. Only loopback: it binds 127.0.0.1 on a free port.

Routes (the ones the clients were recorded calling, see docs/fetch.md); anything else is a
404 that the request log shows:
    GET  /api/{models|datasets}/{repo}/revision/{rev}     repository info (sha, siblings)
    GET  /api/{models|datasets}/{repo}/tree/{rev}[/{dir}]  file listing (recursive=1)
    HEAD|GET /[datasets/]{repo}/resolve/{rev}/{file}       file metadata and content
    HEAD|GET /_lfs/{sha256}                                LFS content (the CDN's part)
    GET  /api/agent-harnesses                              huggingface_hub's daily telemetry
An LFS file (LFS_SUFFIXES) answers `resolve` with a 302 to /_lfs/ on a second listener (the
CDN: another origin, so clients neither follow it on HEAD nor send it the token), carrying
X-Linked-Etag (its sha256) and X-Linked-Size as the Hub does; other files are served
directly with their git blob id as ETag. Range requests are honoured.

Access follows the Hub: a missing repository is 401 RepoNotFound without a token and 404 with
one; an unknown token is 401 "Invalid credentials"; a gated repository lists its files to
anyone, but its content is 401 GatedRepo without a token and 403 GatedRepo with a token that
was not granted it.

Faults for the tests, by the end of a repository file's path: `drop` (close the connection
after n bytes, for the next k requests), `stall` (send n bytes, then nothing, holding the
connection until the server stops or MAX_STALL_SECONDS pass), `corrupt` (serve other bytes of
the same length). Every request is logged (method, path, status, bytes sent, range);
tokens are never logged.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_SUFFIXES = (".safetensors", ".npz", ".parquet", ".gz", ".pth", ".model")
"""Files the Hub repositories the study reads keep in LFS (their .gitattributes)."""
CHUNK = 64 * 1024
MAX_STALL_SECONDS = 120
"""No stalled response lasts longer than this: a request of the server always ends."""


@dataclass
class Repo:
    """One repository: its files at one commit, reachable as 'main' and by the commit's sha."""

    kind: str
    """'models' or 'datasets'."""
    repo_id: str
    files: dict[str, bytes]
    gated: bool = False
    sha: str = ""
    oids: dict[str, str] = field(default_factory=dict)
    """Git blob id of every file."""
    digests: dict[str, str] = field(default_factory=dict)
    """sha256 of every LFS file (what the Hub sends as X-Linked-Etag)."""

    def __post_init__(self) -> None:
        self.oids = {p: blob_oid(b) for p, b in self.files.items()}
        self.digests = {p: sha256(b) for p, b in self.files.items() if self.is_lfs(p)}
        listing = "".join(f"{p}:{oid}\n" for p, oid in sorted(self.oids.items()))
        self.sha = self.sha or hashlib.sha1(listing.encode()).hexdigest()

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    def entry(self, path: str) -> dict:
        """The tree / paths-info entry of a file, as the Hub writes it."""
        size = len(self.files[path])
        out = {"type": "file", "oid": self.oids[path], "size": size, "path": path}
        if path in self.digests:
            out["lfs"] = {"oid": self.digests[path], "size": size, "pointerSize": 134}
        return out


def blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Logged:
    method: str
    path: str
    status: int
    sent: int = 0
    range: str = ""
    auth: bool = False
    """Whether the request carried an Authorization header (its value is never kept)."""
    file: str = ""
    """The repository file whose content was served (LFS content is asked for by hash)."""


@dataclass
class Faults:
    """Misbehaviour per file path suffix; set by a test between client runs."""

    drop: dict[str, list[int]] = field(default_factory=dict)
    """suffix -> [bytes sent before the connection is closed, how many more requests]."""
    stall: dict[str, list[int]] = field(default_factory=dict)
    """suffix -> [bytes sent before the response stalls, how many more requests]."""
    corrupt: set[str] = field(default_factory=set)

    def take(self, table: dict[str, list[int]], path: str) -> int | None:
        """The byte count of the first fault of `table` for this path that has turns left."""
        for suffix, fault in table.items():
            if path.endswith(suffix) and fault[1] > 0:
                fault[1] -= 1
                return fault[0]
        return None


class HubServer:
    """The server and its state: repositories, granted tokens, faults, and the request log."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.tokens: dict[str, set[str]] = {}
        """token -> ids of the gated repositories it was granted."""
        self.faults = Faults()
        self.log: list[Logged] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        handler = type("Handler", (_Handler,), {"hub": self})
        # two listeners: the Hub, and the "CDN" its LFS redirects point to (another origin, so
        # the clients neither follow the redirect on HEAD nor send the token there)
        self.servers = [ThreadingHTTPServer(("127.0.0.1", 0), handler) for _ in range(2)]
        self.threads = []
        for httpd in self.servers:
            httpd.daemon_threads = True
            self.threads.append(threading.Thread(target=httpd.serve_forever, args=(0.05,),
                                                 daemon=True))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.servers[0].server_address[1]}"

    @property
    def cdn(self) -> str:
        return f"http://127.0.0.1:{self.servers[1].server_address[1]}"

    def add(self, repo: Repo) -> Repo:
        self.repos[(repo.kind, repo.repo_id)] = repo
        return repo

    def lfs_blob(self, digest: str) -> tuple[Repo, str] | None:
        for repo in self.repos.values():
            for path, known in repo.digests.items():
                if known == digest:
                    return repo, path
        return None

    def start(self) -> HubServer:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for httpd, thread in zip(self.servers, self.threads, strict=True):
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=10)

    def content_requests(self) -> list[Logged]:
        """The GETs that carried file content (what counts as downloading)."""
        with self.lock:
            return [e for e in self.log if e.method == "GET" and e.file and e.sent > 0]

    def clear(self) -> None:
        with self.lock:
            self.log.clear()


API = re.compile(r"^/api/(models|datasets)/([^/]+/[^/]+)/(revision|tree)/([^/]+)(/.*)?$")
RESOLVE = re.compile(r"^/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer

    def log_message(self, *args) -> None:  # the request log replaces stderr lines
        pass

    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_POST(self) -> None:  # no client posts here; logged and answered 404
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._route("POST")

    # ---- dispatch --------------------------------------------------------------------------

    def _route(self, method: str) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(parsed.path)
        self.entry = Logged(method, path, 0, range=self.headers.get("Range", ""),
                            auth="Authorization" in self.headers)
        with self.hub.lock:
            self.hub.log.append(self.entry)
        try:
            if (m := API.match(path)) and method == "GET":
                self._api(m, urllib.parse.parse_qs(parsed.query))
            elif (m := RESOLVE.match(path)) and method in ("GET", "HEAD"):
                kind = "datasets" if m.group(1) else "models"
                self._resolve(kind, m.group(2), m.group(3), m.group(4), method)
            elif path == "/api/agent-harnesses" and method == "GET":  # client telemetry
                self._json({"standardEnvVars": [], "harnesses": {}})
            elif path.startswith("/_lfs/") and method in ("GET", "HEAD"):
                self._lfs(path.removeprefix("/_lfs/"), method)
            else:
                self._error(404, "", "Not a route of this server")
        except (BrokenPipeError, ConnectionResetError):  # the client went away (or was killed)
            self.close_connection = True

    def _repo(self, kind: str, repo_id: str, revision: str) -> Repo | None:
        """The repository if the caller may see it, else None after answering the error."""
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        if token and token not in self.hub.tokens:
            self._error(401, "", "Invalid credentials in Authorization header")
            return None
        repo = self.hub.repos.get((kind, repo_id))
        if repo is None:
            self._error(404 if token else 401, "RepoNotFound", "Repository not found")
            return None
        if revision not in ("main", repo.sha):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return repo

    def _gate(self, repo: Repo) -> bool:
        """Whether the caller may read the repository's files (answers the refusal if not)."""
        if not repo.gated:
            return True
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        what = f"Access to model {repo.repo_id} is restricted"
        if not token:
            self._error(401, "GatedRepo", f"{what}. You must be authenticated to access it.")
            return False
        if repo.repo_id not in self.hub.tokens[token]:
            self._error(403, "GatedRepo", f"{what} and you are not in the authorized list.")
            return False
        return True

    # ---- API --------------------------------------------------------------------------------

    def _api(self, m: re.Match, query: dict) -> None:
        kind, repo_id, what, revision, sub = m.groups()
        repo = self._repo(kind, repo_id, revision)
        if repo is None:
            return
        if what == "revision":
            self._json({"id": repo_id, "sha": repo.sha, "private": False,
                        "gated": "manual" if repo.gated else False, "disabled": False,
                        "siblings": [{"rfilename": p} for p in sorted(repo.files)],
                        "lastModified": "2024-01-01T00:00:00.000Z"})
        else:
            folder = (sub or "").strip("/")
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            self._json(_tree(repo, folder, recursive))

    # ---- content ----------------------------------------------------------------------------

    def _resolve(self, kind: str, repo_id: str, revision: str, path: str, method: str) -> None:
        repo = self._repo(kind, repo_id, revision)
        if repo is None or not self._gate(repo):
            return
        if path not in repo.files:
            self._error(404, "EntryNotFound", f"{path} does not exist", {"X-Repo-Commit": repo.sha})
            return
        data = repo.files[path]
        common = {"X-Repo-Commit": repo.sha, "ETag": f'"{repo.oids[path]}"'}
        if path in repo.digests:
            digest = repo.digests[path]
            self._send(302, b"", {**common, "Location": f"{self.hub.cdn}/_lfs/{digest}",
                                  "X-Linked-Etag": f'"{digest}"', "X-Linked-Size": str(len(data))})
            return
        self._content(path, data, common, method)

    def _lfs(self, digest: str, method: str) -> None:
        found = self.hub.lfs_blob(digest)
        if found is None:
            self._error(404, "", "No such object")
            return
        repo, path = found
        self._content(path, repo.files[path], {"ETag": f'"{digest}"'}, method)

    def _content(self, path: str, data: bytes, headers: dict, method: str) -> None:
        self.entry.file = path
        faults = self.hub.faults
        if any(path.endswith(s) for s in faults.corrupt):
            data = bytes(b ^ 0x5A for b in data)
        start, end = 0, len(data)
        ranged = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
        if ranged:
            start = int(ranged.group(1))
            end = min(len(data), int(ranged.group(2)) + 1) if ranged.group(2) else len(data)
            if start >= len(data):
                self._error(416, "", "Range not satisfiable",
                            {"Content-Range": f"bytes */{len(data)}"})
                return
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        headers.update({"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"})
        status = 206 if ranged else 200
        if method == "HEAD":
            self._send(status, b"", {**headers, "Content-Length": str(end - start)})
            return
        self._stream(status, data[start:end], headers, path)

    def _stream(self, status: int, body: bytes, headers: dict, path: str) -> None:
        """Send the body in chunks, cut short or stalled where a fault says so."""
        faults = self.hub.faults
        with self.hub.lock:
            drop, stall = faults.take(faults.drop, path), faults.take(faults.stall, path)
        limit = drop if drop is not None else stall
        self.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(k, v)
        self.end_headers()
        self.entry.status = status
        for i in range(0, len(body), CHUNK):
            piece = body[i:i + CHUNK]
            if limit is not None and self.entry.sent + len(piece) > limit:
                self.wfile.write(piece[:max(0, limit - self.entry.sent)])
                self.entry.sent = limit
                self.wfile.flush()
                if drop is None:  # stalled: wait for the client to give up or be killed
                    self.hub.stopping.wait(MAX_STALL_SECONDS)
                self.close_connection = True  # the client sees the body end early
                return
            self.wfile.write(piece)
            self.entry.sent += len(piece)

    # ---- answers ----------------------------------------------------------------------------

    def _json(self, payload: object) -> None:
        self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def _error(self, status: int, code: str, message: str, extra: dict | None = None) -> None:
        headers = {"X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(),
                   {**headers, "Content-Type": "application/json"})

    def _send(self, status: int, body: bytes, headers: dict) -> None:
        self.send_response(status)
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
            self.entry.sent += len(body)
        self.entry.status = status


def _tree(repo: Repo, folder: str, recursive: bool) -> list[dict]:
    """Files (and, when not recursive, the folders) directly or wholly under `folder`."""
    prefix = f"{folder}/" if folder else ""
    out, dirs = [], set()
    for path in sorted(repo.files):
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix):]
        parts = rest.split("/")
        for depth in range(1, len(parts)):
            if recursive or depth == 1:
                dirs.add(prefix + "/".join(parts[:depth]))
        if recursive or len(parts) == 1:
            out.append(repo.entry(path))
    folders = [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0,
                "path": d} for d in sorted(dirs)]
    return folders + out
