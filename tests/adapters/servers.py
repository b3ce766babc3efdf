"""A loopback HTTP server for download tests: plain files with Range support, one-shot transfer cuts, and
the huggingface_hub file routes (``HEAD/GET /{repo_id}/resolve/{revision}/{filename}``).

Headers for the hub routes follow huggingface_hub's ``file_download.get_hf_file_metadata``: ``X-Repo-Commit``
(the commit hash), ``ETag`` (the blob id; our sha256) and ``Content-Length`` (no redirect, so no
``X-Linked-Size``/``X-Linked-Etag``); GET honours ``Range: bytes=N-`` as hf_hub_download's resume does.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FileServer:
    """Serve ``files`` (URL path -> bytes) on 127.0.0.1; use as a context manager."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}
        self.cut_once: dict[str, int] = {}  # path -> bytes to send before dropping the connection (next GET)
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, path: str, data: bytes, etag: str | None = None) -> str:
        self.files[path] = data
        self.etags[path] = etag or f"{len(data)}-{hash(data) & 0xFFFFFFFF:x}"
        return self.url + path

    def add_hub_file(
        self, repo_id: str, filename: str, data: bytes, etag: str, revision: str = "main"
    ) -> None:
        self.add(f"/{repo_id}/resolve/{revision}/{filename}", data, etag)

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _headers(self, path: str, status: int, length: int, extra: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(length))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{server.etags[path]}"')
                if "/resolve/" in path:
                    self.send_header("X-Repo-Commit", COMMIT)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()

            def _serve(self, head: bool) -> None:
                path = self.path.split("?", 1)[0]
                rng = self.headers.get("Range")
                server.requests.append(("HEAD" if head else "GET", path, rng))
                data = server.files.get(path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.end_headers()
                    return
                start, status, extra = 0, 200, {}
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m:
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status, extra = 206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
                body = data[start:]
                self._headers(path, status, len(body), extra)
                if head:
                    return
                cut = server.cut_once.pop(path, None)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def do_HEAD(self) -> None:  # noqa: N802 (http.server API)
                self._serve(head=True)

            def do_GET(self) -> None:  # noqa: N802
                self._serve(head=False)

        return Handler
