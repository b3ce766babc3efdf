"""Start a real headless Forge (API only, CPU, loopback) from a copy of Forge, and stop it again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

PORTS = range(7860, 7900)  # this area's share of the machine's ports


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1} for Forge")


def request(
    base: str, path: str, payload: dict | None = None, timeout: float = 300
) -> tuple[int, dict | list]:
    """GET (payload None) or POST JSON; returns (HTTP status, decoded JSON body), also for error statuses."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


class ForgeServer:
    """``launch.py --nowebui --api --always-cpu`` on 127.0.0.1 in its own process group; ``stop()`` ends it."""

    def __init__(self, python: Path, forge: Path, data: Path, log: Path, checkpoint: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        args = [str(python), "launch.py", "--skip-prepare-environment", "--skip-install", "--skip-version-check",
                "--skip-python-version-check", "--always-cpu", "--nowebui", "--api", "--server-name", "127.0.0.1",
                "--port", str(self.port), "--data-dir", str(data), "--no-download-sd-model", "--ckpt",
                str(data / "models" / "Stable-diffusion" / checkpoint)]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": ""}
        env.pop("VIRTUAL_ENV", None)
        self._log_file = open(log, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(args, cwd=forge, env=env, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True)  # fmt: skip

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Forge exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if request(self.base, "/sdapi/v1/samplers", timeout=5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(1)
        raise RuntimeError(f"Forge did not answer within {timeout} s:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own process group only
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._log_file.close()
