"""The LCM-LoRA Loader in API-format prompts run by ComfyUI's own validation and executor (the /prompt path),
on the shared harness's random SD1.5-shaped checkpoint (tests/comfyui), with UNet and CLIP LoRA weights.

Proves: a kohya file and diffusers' own file of one UNet + text-encoder LoRA give bit-identical final latents
(ComfyUI LATENT units), equal to ComfyUI's stock LoraLoader on the kohya file, while the stock loader on the
diffusers file gives another image (it skips the attention keys); the same for a UNet LoRA on the harness's
SDXL-family (Segmind-Vega-shaped) checkpoint; each bad input (including names outside the
loras folder and unknown adapters, which this ComfyUI does not check against a V3 combo's options) fails its
prompt with the node's message in the execution error (what the UI and /history show), and the next prompt runs.
"""

from __future__ import annotations

import re

import pytest
import torch

from tests.comfyui_lora.lora_files import (
    ALPHA,
    RANK,
    kohya_tensors,
    pickle_bytes,
    sdxl_kohya_bytes,
)

hosts = pytest.importorskip(
    "tests.comfyui.hosts", reason="the shared ComfyUI test harness (tests/comfyui) is absent"
)
pytestmark = [
    pytest.mark.skipif(bool(hosts.comfyui_problem()), reason=str(hosts.comfyui_problem())),
    pytest.mark.slow,  # ~100 s on 2 cores: two ComfyUI processes, a CLIP-L checkpoint
]

TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
LOADER = "LCMPluginLoraLoader"


def _lora_files(ckpt, folder):
    """(kohya file, diffusers file) of one random UNet + CLIP-L LoRA on ``ckpt``'s own weights."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    from tests.adapters.conftest import LCM_TARGETS

    torch.manual_seed(3)
    unet = ckpt.diffusers_unet()
    cfg = dict(r=RANK, lora_alpha=ALPHA, init_lora_weights=False)
    unet.add_adapter(LoraConfig(target_modules=LCM_TARGETS, **cfg))
    unet_sd = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    te_sd = _text_encoder_lora(ckpt.diffusers_text_encoder())
    te_config = LoraConfig(target_modules=TE_TARGETS, **cfg).to_dict()
    kohya = folder / "lcm_kohya.safetensors"
    kohya_te = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in te_sd.items()}
    save_file(kohya_tensors(unet_sd, ALPHA) | kohya_tensors(kohya_te, ALPHA, prefix="lora_te_"), kohya)
    out = folder / "diffusers_out"
    StableDiffusionPipeline.save_lora_weights(
        out,
        unet_lora_layers=convert_state_dict_to_diffusers(unet_sd),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(te_sd),
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(),
        text_encoder_lora_adapter_metadata=te_config,
    )
    diffusers = folder / "lcm_diffusers.safetensors"
    (out / "pytorch_lora_weights.safetensors").replace(diffusers)
    return kohya, diffusers


def _text_encoder_lora(te) -> dict[str, torch.Tensor]:
    """A random rank-4 LoRA on every CLIP attention projection, under peft's names for this transformers' module
    tree (transformers 5: ``encoder.layers.0.self_attn.q_proj.lora_A.weight``, no ``text_model.`` level).

    Written by hand: this transformers' ``add_adapter`` wants peft >= 0.22 (0.21 is installed)."""
    g = torch.Generator().manual_seed(4)
    out = {}
    for name, module in te.named_modules():
        if name.rsplit(".", 1)[-1] in TE_TARGETS:
            out[f"{name}.lora_A.weight"] = 0.05 * torch.randn(RANK, module.in_features, generator=g)
            out[f"{name}.lora_B.weight"] = 0.05 * torch.randn(module.out_features, RANK, generator=g)
    assert len(out) == 2 * 4 * te.config.num_hidden_layers
    return out


def _prompt(ckpt_name: str, loader: dict | None, capture: str) -> dict:
    from tests.comfyui.comfy_process import capture_latent
    from tests.comfyui.core_prompts import txt2img_prompt

    prompt = txt2img_prompt(ckpt_name, steps=2, cfg=2.0, seed=7)
    if loader is not None:
        prompt["10"] = loader
        prompt["3"]["inputs"]["model"] = ["10", 0]
        if "clip" in loader["inputs"]:
            prompt["6"]["inputs"]["clip"] = prompt["7"]["inputs"]["clip"] = ["10", 1]
    prompt["99"] = capture_latent(["3", 0], capture)
    return prompt


def _ours(lora_name: str, clip: bool = True) -> dict:
    inputs = {"model": ["4", 0], "lora_name": lora_name, "strength_model": 1.0, "strength_clip": 1.0}
    if clip:
        inputs["clip"] = ["4", 1]
    return {"class_type": LOADER, "inputs": inputs}


def _stock(lora_name: str) -> dict:
    inputs = {"model": ["4", 0], "clip": ["4", 1], "lora_name": lora_name, "strength_model": 1.0}
    return {"class_type": "LoraLoader", "inputs": inputs | {"strength_clip": 1.0}}


def _stock_model_only(lora_name: str) -> dict:
    inputs = {"model": ["4", 0], "lora_name": lora_name, "strength_model": 1.0}
    return {"class_type": "LoraLoaderModelOnly", "inputs": inputs}


FAILURES = {
    "other_arch": ("lcm_sdxl.safetensors", r"lcm_sdxl.safetensors is a LoRA for Stable Diffusion XL .*but the MODEL "
                   r"is Stable Diffusion 1.x \(SD15\)"),
    "corrupt": ("corrupt.safetensors", r"corrupt.safetensors is not a safetensors file"),
    "truncated": ("truncated.safetensors", r"truncated.safetensors is truncated: tensors need \d+ bytes"),
    "pickle": ("evil.pt", r"evil.pt is a zip archive \(torch.save format, i.e. pickle inside\), not safetensors; "
               r"refusing to unpickle it"),
}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tests.comfyui.checkpoints import build_checkpoint
    from tests.comfyui.comfy_process import run_workflows

    folder = tmp_path_factory.mktemp("lora_workflows")
    ckpt = build_checkpoint("sd15", folder)
    kohya, diffusers = _lora_files(ckpt, folder)
    (folder / "lcm_sdxl.safetensors").write_bytes(sdxl_kohya_bytes())
    (folder / "corrupt.safetensors").write_bytes(b"\xff" * 4096)
    (folder / "truncated.safetensors").write_bytes(kohya.read_bytes()[:100000])
    (folder / "evil.pt").write_bytes(pickle_bytes(folder / "p.pt"))
    loras = [kohya, diffusers, *(folder / n for n, _ in FAILURES.values())]
    prompts = {
        "plain": _prompt(ckpt.name, None, "plain"),
        "kohya": _prompt(ckpt.name, _ours(kohya.name), "kohya"),
        "diffusers": _prompt(ckpt.name, _ours(diffusers.name), "diffusers"),
        "stock_kohya": _prompt(ckpt.name, _stock(kohya.name), "stock_kohya"),
        "stock_diffusers": _prompt(ckpt.name, _stock(diffusers.name), "stock_diffusers"),
        "no_clip": _prompt(ckpt.name, _ours(diffusers.name, clip=False), "no_clip"),
        **{k: _prompt(ckpt.name, _ours(name), k) for k, (name, _) in FAILURES.items()},
        "escape": _prompt(ckpt.name, _ours("../../" + kohya.name), "escape"),
        "unknown": _prompt(ckpt.name, _ours("[download] lcm-lora-sd3"), "unknown"),
        "kohya_after_failures": _prompt(ckpt.name, _ours(kohya.name), "kohya_after_failures"),
    }
    results = run_workflows(list(prompts.values()), models={"checkpoints": [ckpt.path], "loras": loras})
    return dict(zip(prompts, results, strict=True))


def _latent(runs, name: str) -> torch.Tensor:
    res = runs[name]
    assert res.success, (res.error, res.validation_error)
    return res.latents[name]


def test_kohya_and_diffusers_files_give_identical_images_equal_to_comfyuis_loader(runs):
    kohya = _latent(runs, "kohya")
    assert torch.equal(_latent(runs, "diffusers"), kohya)
    assert torch.equal(_latent(runs, "stock_kohya"), kohya)
    assert torch.equal(_latent(runs, "kohya_after_failures"), kohya)
    assert (kohya - _latent(runs, "plain")).abs().max() > 1e-2  # the LoRA changes the image


def test_stock_loader_on_the_diffusers_file_gives_another_image(runs):
    assert (_latent(runs, "stock_diffusers") - _latent(runs, "kohya")).abs().max() > 1e-3


def _execution_error(runs, name: str) -> str:
    res = runs[name]
    assert not res.success and res.error is not None, res
    assert res.error["node_type"] == LOADER
    return res.error["exception_message"]


def test_text_encoder_weights_without_a_clip_fail_the_prompt(runs):
    msg = _execution_error(runs, "no_clip")
    assert re.search(
        r"keys of lcm_diffusers.safetensors would not be loaded .*connect the CLIP input", msg
    ), msg


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_bad_file_fails_the_prompt_with_its_message(runs, case):
    msg = _execution_error(runs, case)
    assert re.search(FAILURES[case][1], msg), msg


NAME_FAILURES = {
    "escape": r"LoRA name '../../lcm_kohya.safetensors' points outside the loras folder",
    "unknown": r"unknown adapter 'lcm-lora-sd3'; known adapters: lcm-lora-sd15, lcm-lora-sdxl, lcm-lora-ssd-1b",
}


@pytest.mark.parametrize("case", sorted(NAME_FAILURES))
def test_names_outside_the_list_fail_the_prompt_with_the_nodes_message(runs, case):
    # This ComfyUI does not check a V3 combo value against its options, so the node's own check is what stops
    # a crafted API prompt.
    msg = _execution_error(runs, case)
    assert re.search(NAME_FAILURES[case], msg), msg


def _unet_lora_files(ckpt, folder):
    """(kohya file, diffusers file) of one random UNet LoRA on ``ckpt``'s UNet (no text encoder)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    from tests.adapters.conftest import LCM_TARGETS

    torch.manual_seed(5)
    unet = ckpt.diffusers_unet()
    unet.add_adapter(
        LoraConfig(target_modules=LCM_TARGETS, r=RANK, lora_alpha=ALPHA, init_lora_weights=False)
    )
    sd = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    kohya = folder / "xl_kohya.safetensors"
    save_file(kohya_tensors(sd, ALPHA), kohya)
    StableDiffusionPipeline.save_lora_weights(
        folder / "xl_out",
        unet_lora_layers=convert_state_dict_to_diffusers(sd),
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(),
    )
    diffusers = folder / "xl_diffusers.safetensors"
    (folder / "xl_out" / "pytorch_lora_weights.safetensors").replace(diffusers)
    return kohya, diffusers


def _vega_prompt(ckpt_name: str, loader: dict | None, capture: str) -> dict:
    from tests.comfyui.comfy_process import capture_latent, tensor_conditioning

    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "6": tensor_conditioning("cond", "pooled"),
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 3,
                "steps": 2,
                "cfg": 1.0,
                "sampler_name": "lcm",
                "scheduler": "sgm_uniform",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["6", 0],
                "latent_image": ["5", 0],
            },
        },  # fmt: skip
        "99": capture_latent(["3", 0], capture),
    }
    if loader is not None:
        prompt["10"] = loader
        prompt["3"]["inputs"]["model"] = ["10", 0]
    return prompt


@pytest.fixture(scope="module")
def vega_runs(tmp_path_factory):
    """The SDXL-family case: the harness's Segmind-Vega-shaped checkpoint (no CLIP; conditioning from tensors)."""
    from tests.comfyui.checkpoints import build_checkpoint
    from tests.comfyui.comfy_process import run_workflows

    folder = tmp_path_factory.mktemp("lora_vega")
    ckpt = build_checkpoint("sdxl", folder)
    kohya, diffusers = _unet_lora_files(ckpt, folder)
    g = torch.Generator().manual_seed(0)
    tensors = {"cond": torch.randn(1, 77, 2048, generator=g), "pooled": torch.randn(1, 1280, generator=g)}
    prompts = {
        "plain": _vega_prompt(ckpt.name, None, "plain"),
        "kohya": _vega_prompt(ckpt.name, _ours(kohya.name, clip=False), "kohya"),
        "diffusers": _vega_prompt(ckpt.name, _ours(diffusers.name, clip=False), "diffusers"),
        "stock_kohya": _vega_prompt(ckpt.name, _stock_model_only(kohya.name), "stock_kohya"),
    }
    results = run_workflows(
        list(prompts.values()),
        models={"checkpoints": [ckpt.path], "loras": [kohya, diffusers]},
        tensors=tensors,
    )
    return dict(zip(prompts, results, strict=True))


def test_sdxl_family_kohya_and_diffusers_files_give_identical_images(vega_runs):
    kohya = _latent(vega_runs, "kohya")
    assert torch.equal(_latent(vega_runs, "diffusers"), kohya)
    assert torch.equal(_latent(vega_runs, "stock_kohya"), kohya)
    assert (kohya - _latent(vega_runs, "plain")).abs().max() > 1e-2
