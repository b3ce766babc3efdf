from __future__ import annotations

import os

import pytest

from tests.training.helpers import save_tiny_pipeline, write_image_folder

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def pipe_dir(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("pipe") / "sd")


@pytest.fixture(scope="session")
def vpred_pipe_dir(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("pipe_v") / "sd", prediction_type="v_prediction")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("data") / "imgs")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The test machine is shared: with 2 intra-op threads on an oversubscribed CPU, tiny convolutions are ~40x slower.
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
