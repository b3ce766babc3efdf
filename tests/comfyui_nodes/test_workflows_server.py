"""The shipped workflows and the pack's bad-input handling, through a real ComfyUI server on loopback.

One server for the session (conftest.py's ``workflow_server``): the repository in custom_nodes, the random test
models under the names the workflows use, a 64 x 64 input image, and the registry's ``lcm-lora-sd15`` mirrored on
a loopback file server. Every API workflow is queued on /prompt, followed on the websocket, and its images are
read back from /history and /view.
"""

from __future__ import annotations

import pytest
import torch

from tests.comfyui.workflow_format import ui_to_api
from tests.comfyui_lora.lora_files import sdxl_kohya_bytes
from tests.comfyui_nodes import workflow_env

NAMES = workflow_env.workflow_names()
PACK_FOLDER = "lcm-plugin"  # the folder name a git clone into custom_nodes/ gets


def _loras(server) -> list[str]:
    return sorted(p.name for p in (server.base_dir / "models" / "loras").iterdir())


def test_every_node_of_every_workflow_is_served_and_ours_have_tooltips(object_info):
    for name in NAMES:
        for node in workflow_env.api_workflow(name).values():
            assert node["class_type"] in object_info, (name, node["class_type"])
    ours = {k: v for k, v in object_info.items() if k.startswith("LCMPlugin")}
    assert set(ours) == {"LCMPluginScheduler", "LCMPluginSampler", "LCMPluginModel", "LCMPluginLoraLoader"}
    for node_id, info in ours.items():
        assert info["category"] == "sampling/lcm_plugin"
        for section in ("required", "optional"):
            for input_name, spec in info["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), (node_id, input_name)


def test_templates_list_every_workflow(workflow_server):
    assert sorted(workflow_server.workflow_templates()[PACK_FOLDER]) == NAMES
    for name in NAMES:  # served as the frontend fetches them
        status, body = workflow_server.request("GET", f"/api/workflow_templates/{PACK_FOLDER}/{name}.json")
        assert status == 200 and b'"nodes"' in body


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_and_its_api_twin_agree(object_info, name):
    assert ui_to_api(workflow_env.ui_workflow(name), object_info) == workflow_env.api_workflow(name)


@pytest.mark.parametrize("name", NAMES)
def test_each_workflow_runs_and_saves_its_images(workflow_server, mirror, name):
    installed = workflow_server.base_dir / "models" / "loras" / f"{workflow_env.REGISTRY_NAME}.safetensors"
    if name == "lcm_lora_download":  # the browser test may have installed it: this run downloads it itself
        installed.unlink(missing_ok=True)
    before = len(mirror.requests)
    done = workflow_server.run(workflow_env.for_cpu_api(workflow_env.api_workflow(name)), timeout=600)
    assert done.status == "success" and done.history["status"]["status_str"] == "success"
    images = [workflow_server.image(ref) for ref in done.images()]
    assert len(images) == (2 if name == "lcm_vs_dpmpp_25_steps" else 1)
    for image in images:
        assert image.size == (64, 64)
        pixels = torch.tensor(list(image.convert("L").tobytes()), dtype=torch.float32)
        assert pixels.std() > 1.0  # a picture, not a flat colour
    if name == "lcm_lora_download":
        assert installed.name in _loras(workflow_server)
        assert len(mirror.requests) > before
        again = workflow_server.run(workflow_env.for_cpu_api(workflow_env.api_workflow(name)), timeout=600)
        assert again.status == "success"
        assert not [r for r in mirror.requests[before:] if r[0] == "GET"][1:]  # one download, then the file
        # deleted from loras after a run: the next run fetches it again (not ComfyUI's cached output)
        installed.unlink()
        third = workflow_server.run(workflow_env.for_cpu_api(workflow_env.api_workflow(name)), timeout=600)
        assert third.status == "success" and installed.is_file()
        assert len([r for r in mirror.requests[before:] if r[0] == "GET"]) == 2


def _bad(name: str, server) -> dict:
    """An API prompt (the txt2img workflow) broken in one way; the LoRA files are written into loras first."""
    api = workflow_env.for_cpu_api(workflow_env.api_workflow("lcm_lora_txt2img"))
    loras = server.base_dir / "models" / "loras"
    if name == "lora_for_sdxl":
        (loras / "sdxl_lora.safetensors").write_bytes(sdxl_kohya_bytes())
        api["2"]["inputs"]["lora_name"] = "sdxl_lora.safetensors"
    elif name == "corrupt_lora":
        (loras / "corrupt.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage" + bytes(64))
        api["2"]["inputs"]["lora_name"] = "corrupt.safetensors"
    elif name == "truncated_lora":
        good = (loras / workflow_env.LORA_FILE).resolve().read_bytes()
        (loras / "truncated.safetensors").write_bytes(good[: len(good) // 2])
        api["2"]["inputs"]["lora_name"] = "truncated.safetensors"
    elif name == "escaping_name":
        api["2"]["inputs"]["lora_name"] = "../../checkpoints/v1-5-pruned-emaonly.safetensors"
    elif name == "unknown_adapter":
        api["2"]["inputs"]["lora_name"] = "[download] lcm-lora-sd9"
    elif name == "steps_above_n":
        api = workflow_env.for_cpu_api(workflow_env.api_workflow("tcd_gamma"))
        api["13"]["inputs"]["steps"] = 60
    elif name == "denoise_0":
        api = workflow_env.for_cpu_api(workflow_env.api_workflow("lcm_img2img"))
        api["13"]["inputs"]["denoise"] = 0.0
    elif name == "ksampler_steps_above_n":
        api["7"]["inputs"]["steps"] = 51
    return api


BAD = {
    "lora_for_sdxl": "is a LoRA for Stable Diffusion XL",
    "corrupt_lora": "is not a safetensors file",
    "truncated_lora": "truncated",
    "escaping_name": "outside",
    "unknown_adapter": "unknown adapter 'lcm-lora-sd9'",
    "steps_above_n": "cannot exceed original_inference_steps (50)",
    "denoise_0": "denoise must be in (0, 1]",
    "ksampler_steps_above_n": "cannot exceed original_inference_steps (50)",
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_fails_the_prompt_with_its_reason_and_the_server_runs_the_next(workflow_server, name):
    loras_before = _loras(workflow_server)
    failed = workflow_server.run(_bad(name, workflow_server), expect_error=True, timeout=300)
    assert failed.status == "error" and failed.history["status"]["status_str"] == "error"
    message = failed.error["exception_message"]
    assert BAD[name].lower() in message.lower(), message
    history_messages = [m for m in failed.history["status"]["messages"] if m[0] == "execution_error"]
    assert history_messages and history_messages[0][1]["exception_message"] == message  # what the UI shows
    assert not [
        n for n in _loras(workflow_server) if n not in loras_before and not n.endswith(".safetensors")
    ]
    ok = workflow_server.run(workflow_env.for_cpu_api(workflow_env.api_workflow("tcd_gamma")), timeout=300)
    assert ok.status == "success"


class _CutEveryTime(dict):
    """``FileServer.cut_once`` that never forgets: every GET of the path is cut (a download failing midway)."""

    def pop(self, key, default=None):
        return self.get(key, default)


def test_a_download_failing_midway_fails_the_prompt_and_leaves_nothing_in_loras(workflow_server, mirror):
    path = f"/{workflow_env.MIRROR_REPO}/resolve/main/{workflow_env.MIRROR_FILE}"
    target = workflow_server.base_dir / "models" / "loras" / f"{workflow_env.REGISTRY_NAME}.safetensors"
    if target.exists():
        target.unlink()  # an earlier test downloaded it
    before = _loras(workflow_server)
    mirror.cut_once = _CutEveryTime({path: 1000})
    try:
        api = workflow_env.for_cpu_api(workflow_env.api_workflow("lcm_lora_download"))
        failed = workflow_server.run(api, expect_error=True, timeout=300)
    finally:
        mirror.cut_once = {}
    assert failed.status == "error"
    assert "nothing was kept" in failed.error["exception_message"]
    assert _loras(workflow_server) == before
    assert workflow_server.run(api, timeout=300).status == "success"  # the next try downloads it whole
    assert f"{workflow_env.REGISTRY_NAME}.safetensors" in _loras(workflow_server)
