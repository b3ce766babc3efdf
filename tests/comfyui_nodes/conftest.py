"""The node-pack tests share the real-ComfyUI fixtures of tests/comfyui (ComfyUI path, random checkpoints, server)."""

import pytest  # noqa: E402

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
from tests.comfyui_nodes import workflow_env  # noqa: E402


@pytest.fixture(scope="session")
def mirror():
    """A loopback file server standing in for the registry's host (huggingface.co)."""
    from tests.adapters.servers import FileServer

    with FileServer() as files:
        yield files


@pytest.fixture(scope="session")
def workflow_server(comfy_server_factory, tiny_checkpoint, tmp_path_factory, mirror):  # noqa: F811
    """A ComfyUI server in which the shipped workflows run as they are (see workflow_env)."""
    folder = tmp_path_factory.mktemp("workflow_models")
    models = workflow_env.named_models(tiny_checkpoint, folder)
    env = workflow_env.registry_mirror(mirror, tiny_checkpoint, folder)
    started = comfy_server_factory(models=models, env=env)
    workflow_env.write_input_image(started.base_dir)
    return started


@pytest.fixture(scope="session")
def object_info(workflow_server):
    return workflow_server.object_info()
