"""The node-pack tests share the real-ComfyUI fixtures of tests/comfyui (ComfyUI path, random checkpoints, server)."""

from tests.comfyui.conftest import (  # noqa: F401  (pytest finds fixtures by name)
    _one_thread,
    artifact_dir,
    browser,
    comfy_server,
    comfy_server_factory,
    comfyui,
    pytest_runtest_makereport,
    tiny_checkpoint,
)
