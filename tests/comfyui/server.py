"""A real ComfyUI server on loopback for tests: start, talk HTTP + websocket, stop without leaving a process behind.

    with ComfyServer(base_dir=tmp, models={"checkpoints": [ckpt.path]}) as srv:
        done = srv.run(txt2img_prompt(ckpt.name))          # /prompt -> websocket -> /history
        image = srv.image(done.images()[0])                # PIL image through /view

The server is ``main.py --cpu --listen 127.0.0.1 --port N --base-directory TMP --database-url sqlite:///:memory:``
with the repository (and, on request, the harness nodes) linked into ``TMP/custom_nodes`` and the model files into
``TMP/models/<folder>``; N is the first free port of 8200-8299 (this harness's range). The process runs in its own
session and dies with its parent (PR_SET_PDEATHSIG), is stopped at interpreter exit, and ``stop`` kills its process
group; stdout+stderr go to ``TMP/server.log`` (``log_tail``), which every error raised here quotes.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.comfyui.comfy_process import child_env, make_base_dir
from tests.comfyui.hosts import REPO_ROOT, comfyui_path
from tests.comfyui.ws_events import EventStream

PORTS = range(8200, 8300)
_RUNNING: list[ComfyServer] = []


class ServerError(RuntimeError):
    """The server failed to start, died, rejected a request or did not finish in time (message has the log tail)."""


class PromptRejected(ServerError):
    """/prompt answered 400: ``error`` and ``node_errors`` are ComfyUI's validation report."""

    def __init__(self, message: str, error: dict, node_errors: dict) -> None:
        super().__init__(message)
        self.error, self.node_errors = error, node_errors


@dataclass
class PromptOutcome:
    """How a queued prompt ended, from the websocket events, plus its /history entry."""

    prompt_id: str
    status: str  # "success", "error" or "interrupted"
    events: list = field(default_factory=list)  # (type, data) websocket messages for this prompt
    error: dict | None = None  # the execution_error message (exception_message, node_type, traceback ...)
    history: dict = field(default_factory=dict)

    @property
    def outputs(self) -> dict:
        return self.history.get("outputs", {})

    def images(self) -> list[dict]:
        """Every image the prompt's output nodes saved: {"filename", "subfolder", "type"}."""
        return [img for out in self.outputs.values() for img in out.get("images", [])]


def running_servers() -> list[ComfyServer]:
    return list(_RUNNING)


class ComfyServer:
    """One ComfyUI server process; see the module docstring."""

    def __init__(
        self,
        *,
        base_dir: str | Path,
        custom_nodes: tuple[Path, ...] | list[Path] = (REPO_ROOT,),
        harness_nodes: bool = False,
        models: dict[str, list[Path]] | None = None,
        comfy_args: tuple[str, ...] | list[str] = (),
        ports: range = PORTS,
        startup_timeout: float = 180.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.base_dir = make_base_dir(
            Path(base_dir), custom_nodes=custom_nodes, harness_nodes=harness_nodes, models=models
        )
        self.comfy_args = list(comfy_args)
        self.env = dict(env or {})  # applied last: may undo child_env's settings (e.g. HF_HUB_OFFLINE="")
        self.ports = ports
        self.startup_timeout = startup_timeout
        self.log_path = self.base_dir / "server.log"
        self.port: int | None = None
        self.client_id = uuid.uuid4().hex
        self._proc: subprocess.Popen | None = None
        self._events: EventStream | None = None

    # -- life cycle -----------------------------------------------------------------------------------------
    def __enter__(self) -> ComfyServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> ComfyServer:
        """Start the server on the first free port of ``ports`` and wait until it answers; returns self."""
        if self._proc is not None:
            return self
        candidates = list(self.ports)
        offset = random.randrange(
            len(candidates)
        )  # several sessions share the range: do not all try 8200 first
        for port in candidates[offset:] + candidates[:offset]:
            if not _port_free(port):
                continue
            if self._launch(port):
                _RUNNING.append(self)
                self._events = EventStream(f"ws://127.0.0.1:{port}/ws?clientId={self.client_id}")
                return self
        raise ServerError(
            f"no free port in {self.ports.start}-{self.ports.stop - 1} for ComfyUI\n{self.log_tail()}"
        )

    def _launch(self, port: int) -> bool:
        root = comfyui_path()
        cmd = [sys.executable, str(root / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--base-directory", str(self.base_dir), "--database-url", "sqlite:///:memory:", *self.comfy_args]  # fmt: skip
        with open(self.log_path, "ab") as log:
            log.write(f"\n$ {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                cwd=str(self.base_dir),
                env=child_env(self.base_dir, self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.port = port
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                in_use = "address already in use" in self.log_tail(20).lower()
                self._proc = None
                if in_use:  # another process took the port between the check and the bind
                    return False
                raise ServerError(f"ComfyUI exited during start-up\n{self.log_tail()}")
            try:
                stats = self.get_json("/system_stats", timeout=2)
            except (OSError, ServerError):
                time.sleep(0.25)
                continue
            if str(self.base_dir) not in stats.get("system", {}).get("argv", []):
                self.stop()
                return False  # someone else's server answers on this port
            return True
        self.stop()
        raise ServerError(f"ComfyUI did not answer within {self.startup_timeout:.0f} s\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server (SIGINT, then SIGKILL of its whole process group after 10 s); safe to call twice."""
        if self._events is not None:
            self._events.close()
            self._events = None
        proc, self._proc = self._proc, None
        if self in _RUNNING:
            _RUNNING.remove(self)
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # anything the server started in its session goes with it
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""
        return "--- ComfyUI server log tail ---\n" + "\n".join(text.splitlines()[-lines:])

    # -- HTTP -------------------------------------------------------------------------------------------------
    def request(
        self, method: str, path: str, body: dict | None = None, timeout: float = 30.0
    ) -> tuple[int, bytes]:
        """(status, body bytes) of one HTTP request; ServerError when the server does not answer."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            raise ServerError(f"{method} {path}: {err}") from err

    def get_json(self, path: str, timeout: float = 30.0):
        status, body = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise ServerError(f"GET {path} -> {status}: {body[:500]!r}\n{self.log_tail(30)}")
        return json.loads(body)

    def object_info(self, node_class: str | None = None) -> dict:
        """/object_info (every node type) or /object_info/<class> -> {class: info}."""
        return self.get_json("/object_info" + (f"/{urllib.parse.quote(node_class)}" if node_class else ""))

    def workflow_templates(self) -> dict:
        """/api/workflow_templates: custom-node pack name -> template names (workflow files without .json)."""
        return self.get_json("/api/workflow_templates")

    def queue(self, prompt: dict, *, extra_data: dict | None = None) -> str:
        """POST an API-format prompt to /prompt (events go to this harness's websocket); returns its prompt_id."""
        body = {"prompt": prompt, "client_id": self.client_id, "extra_data": extra_data or {}}
        status, raw = self.request("POST", "/prompt", body)
        answer = json.loads(raw or b"{}")
        if status != 200:
            error = answer.get("error", {})
            raise PromptRejected(
                f"/prompt rejected the prompt ({status}): {error.get('message')}: {error.get('details')}; "
                f"node_errors={json.dumps(answer.get('node_errors', {}))[:1500]}",
                error,
                answer.get("node_errors", {}),
            )
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 180.0) -> PromptOutcome:
        """Wait on the websocket until ``prompt_id`` has finished (``executing`` with node None); add /history."""

        def done(event):
            kind, data = event
            return kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id

        if self._events is None:
            raise ServerError("the server is not running")
        if self._events.wait_for(done, timeout) is None:
            why = "the websocket closed" if self._events.closed else f"no end within {timeout:.0f} s"
            raise ServerError(f"prompt {prompt_id}: {why}\n{self.log_tail()}")
        events = [e for e in self._events.snapshot() if e[1].get("prompt_id") == prompt_id]
        kinds = {k: d for k, d in events}
        status = "error" if "execution_error" in kinds else "interrupted" if "execution_interrupted" in kinds else (
            "success" if "execution_success" in kinds else "unknown")  # fmt: skip
        return PromptOutcome(prompt_id, status, events, kinds.get("execution_error"), self.history(prompt_id))

    def run(self, prompt: dict, *, timeout: float = 180.0, expect_error: bool = False) -> PromptOutcome:
        """queue + wait; raises ServerError (with the ComfyUI error and log tail) unless it succeeded/expect_error."""
        outcome = self.wait(self.queue(prompt), timeout)
        if outcome.status != "success" and not expect_error:
            err = outcome.error or {}
            raise ServerError(
                f"prompt {outcome.prompt_id} ended with {outcome.status}: {err.get('node_type')}: "
                f"{err.get('exception_message')}\n{self.log_tail()}"
            )
        return outcome

    def history(self, prompt_id: str) -> dict:
        """The /history entry of ``prompt_id`` ({} while it has none)."""
        return self.get_json(f"/history/{prompt_id}").get(prompt_id, {})

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        """The bytes of an output/input/temp file through /view."""
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type})
        status, body = self.request("GET", f"/view?{query}")
        if status != 200:
            raise ServerError(f"/view {filename} -> {status}\n{self.log_tail(30)}")
        return body

    def image(self, ref: dict):
        """A PIL image from an output reference ({"filename", "subfolder", "type"})."""
        import io

        from PIL import Image

        return Image.open(
            io.BytesIO(self.view(ref["filename"], ref.get("subfolder", ""), ref.get("type", "output")))
        )

    def rss(self) -> int:
        """Resident memory of the server process in bytes (psutil)."""
        import psutil

        if self._proc is None:
            raise ServerError("the server is not running")
        return psutil.Process(self._proc.pid).memory_info().rss

    def add_input_image(self, name: str, image) -> str:
        """Put a PIL image into the server's input folder (for LoadImage); returns the name LoadImage lists."""
        if Path(name).name != name or not name.endswith(".png"):
            raise ValueError(f"input image name {name!r}: give a plain file name ending in .png")
        path = self.base_dir / "input" / name
        image.save(path.with_suffix(".tmp.png"))
        os.replace(path.with_suffix(".tmp.png"), path)
        return name

    # -- harness tensors -------------------------------------------------------------------------------------
    def set_tensors(self, tensors: dict) -> None:
        """Tensors for the harness nodes (HarnessConditioning/HarnessLatent) of later prompts."""
        from lcm_plugin.adapters.safetensors_io import save_atomic

        save_atomic(tensors, self.base_dir / "harness" / "inputs.safetensors")

    def captured_latents(self, clear: bool = True) -> dict:
        """Latents the HarnessCaptureLatent nodes wrote since the last call (name -> tensor)."""
        from safetensors.torch import load_file

        out = {}
        for f in sorted((self.base_dir / "harness" / "capture").glob("*.safetensors")):
            out.update(load_file(str(f)))
            if clear:
                f.unlink()
        return out


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the parent (pytest) dies, so no server outlives a killed run."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux/glibc: atexit and stop() still apply
        pass


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop()
