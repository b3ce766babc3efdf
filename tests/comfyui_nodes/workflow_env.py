"""The example workflows (``workflows/*.json`` UI format, ``workflows/api/*.json`` their API twins) and a ComfyUI
set-up in which they run as shipped: the model files they name are the random test checkpoints under those names.

Names the workflows use (what a user has): ``v1-5-pruned-emaonly.safetensors`` (SD1.5), ``LCM_Dreamshaper_v7_4k``
(a full LCM), ``lcm-lora-sdv1-5.safetensors`` (the LCM-LoRA, as users name the file of latent-consistency/lcm-lora-sdv1-5) and ``[download] lcm-lora-sd15`` (the registry entry,
mirrored here on a loopback server through LCM_PLUGIN_ADAPTERS_FILE + HF_ENDPOINT). Tests shrink the 512 x 512
latents to 64 x 64 (``for_cpu``) so each runs in seconds on two CPU cores.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path

import torch

from tests.comfyui.hosts import REPO_ROOT

WORKFLOWS_DIR = REPO_ROOT / "workflows"
CHECKPOINTS = {"v1-5-pruned-emaonly.safetensors": "sd15", "LCM_Dreamshaper_v7_4k.safetensors": "sd15_lcm"}
LORA_FILE = "lcm-lora-sdv1-5.safetensors"
REGISTRY_NAME = "lcm-lora-sd15"
MIRROR_REPO, MIRROR_FILE = "mirror/lcm-lora-sdv1-5", "pytorch_lora_weights.safetensors"
CPU_SIZE = 64


def workflow_names() -> list[str]:
    """Every shipped workflow, by the stem its UI file and API twin share."""
    return sorted(p.stem for p in (WORKFLOWS_DIR / "api").glob("*.json"))


def api_workflow(name: str) -> dict:
    return json.loads((WORKFLOWS_DIR / "api" / f"{name}.json").read_text())


def ui_workflow(name: str) -> dict:
    return json.loads((WORKFLOWS_DIR / f"{name}.json").read_text())


def for_cpu_api(api: dict) -> dict:
    """The API workflow with its empty latents at 64 x 64 px."""
    api = copy.deepcopy(api)
    for node in api.values():
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=CPU_SIZE, height=CPU_SIZE)
    return api


def for_cpu_ui(ui: dict) -> dict:
    """The UI workflow with its empty latents at 64 x 64 px (EmptyLatentImage widgets: width, height, batch)."""
    ui = copy.deepcopy(ui)
    for node in ui["nodes"]:
        if node["type"] == "EmptyLatentImage":
            node["widgets_values"][:2] = [CPU_SIZE, CPU_SIZE]
    return ui


def lora_tensors(ckpt, seed: int) -> dict[str, torch.Tensor]:
    """A kohya LCM-target LoRA (rank 4) for the UNet of ``ckpt`` (a tests/comfyui TinyCheckpoint)."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from tests.adapters.conftest import LCM_TARGETS
    from tests.comfyui_lora.lora_files import ALPHA, RANK, kohya_tensors

    torch.manual_seed(seed)
    unet = ckpt.diffusers_unet()
    unet.add_adapter(
        LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=LCM_TARGETS, init_lora_weights=False)
    )
    peft_sd = {k: (v.detach() * 0.1).contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    return kohya_tensors(peft_sd, ALPHA)


def named_models(tiny_checkpoint, folder: Path) -> dict[str, list[Path]]:
    """``{"checkpoints": [...], "loras": [...]}``: links named as the workflows name them, and the LoRA file."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    links = []
    for name, kind in CHECKPOINTS.items():
        link = folder / name
        if not link.exists():
            link.symlink_to(tiny_checkpoint(kind).path)
        links.append(link)
    lora = folder / LORA_FILE
    if not lora.exists():
        save_file(lora_tensors(tiny_checkpoint("sd15"), seed=5), str(lora))
    return {"checkpoints": links, "loras": [lora]}


def write_input_image(base_dir: Path, name: str = "example.png") -> Path:
    """A 64 x 64 RGB test image in the server's input folder (the img2img workflow loads example.png)."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    pixels = (torch.rand(CPU_SIZE, CPU_SIZE, 3, generator=generator) * 255).to(torch.uint8).numpy()
    path = base_dir / "input" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def registry_mirror(file_server, tiny_checkpoint, folder: Path) -> dict[str, str]:
    """Serve a LoRA for the test checkpoint as the registry's ``lcm-lora-sd15``; return the server's env."""
    from safetensors.torch import save

    from tests.comfyui_lora.lora_files import registry_file, sha256

    data = save(lora_tensors(tiny_checkpoint("sd15"), seed=6), metadata={"ss_network_dim": "4"})
    file_server.add_hub_file(MIRROR_REPO, MIRROR_FILE, data, etag=sha256(data))
    entry = {"name": REGISTRY_NAME, "repo_id": MIRROR_REPO, "filename": MIRROR_FILE, "arch": "sd15",
             "sha256": sha256(data), "size": len(data)}  # fmt: skip
    adapters = registry_file(folder / "adapters.json", [entry])
    return {"LCM_PLUGIN_ADAPTERS_FILE": str(adapters), "HF_ENDPOINT": file_server.url, "HF_HUB_OFFLINE": ""}


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[tuple]:
    """A started ComfyUI server set up as above, in ``folder``, and its registry mirror: ``(server, mirror)``.

    For scripts (tests use the session fixture ``workflow_server``); the random checkpoints are built in
    ``folder/ckpts``.
    """
    from tests.adapters.servers import FileServer
    from tests.comfyui.checkpoints import build_checkpoint
    from tests.comfyui.server import ComfyServer

    built: dict = {}

    def checkpoint(kind: str):
        if kind not in built:
            built[kind] = build_checkpoint(kind, folder / "ckpts")
        return built[kind]

    models = named_models(checkpoint, folder / "models")
    with FileServer() as mirror:
        env = registry_mirror(mirror, checkpoint, folder)
        with ComfyServer(base_dir=folder / "base", models=models, env=env) as server:
            write_input_image(server.base_dir)
            yield server, mirror
