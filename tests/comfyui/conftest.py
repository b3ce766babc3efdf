"""Fixtures for tests against a real ComfyUI (../shared/comfyui/ComfyUI or LCM_PLUGIN_COMFYUI_PATH).

- ``comfyui``: the checkout's path; every test using it (or the fixtures below) skips with the reason when ComfyUI
  or its requirements are missing.
- ``tiny_checkpoint(kind)``: random checkpoints built once per session (checkpoints.SPECS: sd15, sd15_lcm, sdxl).
- ``comfy_server``: one ComfyUI server per session (the repository and the harness nodes in custom_nodes, the sd15
  and sd15_lcm checkpoints in models/checkpoints); ``comfy_server_factory(**ComfyServer kwargs)`` for others.
- ``browser``: a headless chromium (Playwright) per session; skips when Playwright or chromium is missing.
- ``artifact_dir(name)``: tests/comfyui/artifacts/<name>/ (or $LCM_PLUGIN_TEST_ARTIFACTS/<name>) for screenshots.

When a test that used a server fails, the tail of the server's log is added to the report.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.comfyui.hosts import browser_problem, comfyui_path, comfyui_problem

ARTIFACTS = Path(os.environ.get("LCM_PLUGIN_TEST_ARTIFACTS") or Path(__file__).resolve().parent / "artifacts")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The machine is shared: one intra-op thread in the pytest process (children get OMP_NUM_THREADS=1).
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def comfyui() -> Path:
    problem = comfyui_problem()
    if problem:
        pytest.skip(problem)
    return comfyui_path()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, comfyui):
    """``tiny_checkpoint(kind) -> TinyCheckpoint``, each kind built once per session."""
    from tests.comfyui.checkpoints import build_checkpoint

    directory = tmp_path_factory.mktemp("comfy_checkpoints")
    built = {}

    def get(kind: str):
        if kind not in built:
            built[kind] = build_checkpoint(kind, directory)
        return built[kind]

    return get


@pytest.fixture(scope="session")
def comfy_server_factory(tmp_path_factory, comfyui):
    """``comfy_server_factory(**kwargs) -> ComfyServer`` (started); every server is stopped at session end."""
    from tests.comfyui.server import ComfyServer

    servers = []

    def start(**kwargs):
        kwargs.setdefault("base_dir", tmp_path_factory.mktemp("comfy_server"))
        server = ComfyServer(**kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def comfy_server(comfy_server_factory, tiny_checkpoint):
    """The shared server: repository + harness nodes, sd15 and sd15_lcm in models/checkpoints."""
    return comfy_server_factory(
        models={"checkpoints": [tiny_checkpoint("sd15").path, tiny_checkpoint("sd15_lcm").path]},
        harness_nodes=True,
    )


@pytest.fixture(scope="session")
def browser(comfyui):
    problem = browser_problem()
    if problem:
        pytest.skip(problem)
    from tests.comfyui.browser import shared_browser

    # one per process, shared with tests/comfyui_nodes (Playwright's sync API allows one)
    return shared_browser()


@pytest.fixture
def artifact_dir():
    def get(name: str) -> Path:
        path = ARTIFACTS / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    return get


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for name in ("comfy_server", "comfy_server_factory"):
        if name in item.fixturenames:
            from tests.comfyui.server import running_servers

            for server in running_servers():
                report.sections.append((f"ComfyUI server log (port {server.port}, tail)", server.log_tail()))
            break
