"""The random test checkpoints: ComfyUI detects each as its family, loads every UNet key, and its UNet computes what
the diffusers twin computes (fp32, same inputs), so exactness tests may compare ComfyUI runs with diffusers runs."""

from __future__ import annotations

import pytest
import torch

from tests.comfyui.checkpoints import DEFAULT_KINDS, LCM_COND_PROJ_KEY
from tests.comfyui.comfy_process import run_in_comfyui, run_workflows
from tests.comfyui.core_prompts import txt2img_prompt

KINDS = DEFAULT_KINDS


def _unet_inputs(ckpt, generator: torch.Generator) -> dict[str, torch.Tensor]:
    cfg = ckpt.spec.unet
    x = torch.randn(2, 4, 8, 8, generator=generator)
    t = torch.tensor([999.0, 259.0])
    context = torch.randn(2, 77, cfg["cross_attention_dim"], generator=generator)
    out = {"x": x, "t": t, "context": context}
    if cfg.get("addition_embed_type") == "text_time":
        out["text_embeds"] = torch.randn(2, 1280, generator=generator)
        out["time_ids"] = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * 2)
    return out


def _diffusers_out(
    unet, inputs: dict[str, torch.Tensor], timestep_cond=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(UNet output, SDXL ADM vector y as ComfyUI's diffusion_model takes it, or an empty tensor)."""
    added, y = None, torch.empty(0)
    if "text_embeds" in inputs:
        added = {"text_embeds": inputs["text_embeds"], "time_ids": inputs["time_ids"]}
        time_embeds = unet.add_time_proj(inputs["time_ids"].flatten()).reshape(inputs["x"].shape[0], -1)
        y = torch.cat([inputs["text_embeds"], time_embeds], dim=-1)
    with torch.no_grad():
        out = unet(
            inputs["x"],
            inputs["t"],
            encoder_hidden_states=inputs["context"],
            added_cond_kwargs=added,
            timestep_cond=timestep_cond,
        ).sample
    return out, y


@pytest.fixture(scope="module")
def comfy_loads(tiny_checkpoint):
    """Every kind loaded by ComfyUI in one child process, with the diffusers outputs for the same inputs."""
    generator = torch.Generator().manual_seed(0)
    tensors, expected, ckpts = {}, {}, {kind: tiny_checkpoint(kind) for kind in KINDS}
    for kind, ckpt in ckpts.items():
        inputs = _unet_inputs(ckpt, generator)
        out, y = _diffusers_out(ckpt.diffusers_unet(), inputs)
        expected[kind] = out
        tensors.update({f"{ckpt.name}/{k}": inputs[k] for k in ("x", "t", "context")})
        if y.numel():
            tensors[f"{ckpt.name}/y"] = y
    run = run_in_comfyui(
        "load_checkpoints.py",
        *(c.name for c in ckpts.values()),
        custom_nodes=(),
        models={"checkpoints": [c.path for c in ckpts.values()]},
        tensors=tensors,
        nodes="none",
    )
    return ckpts, run, expected


@pytest.mark.parametrize("kind", KINDS)
def test_comfyui_detects_the_family_and_loads_every_unet_key(comfy_loads, kind):
    ckpts, run, _ = comfy_loads
    spec = ckpts[kind].spec
    report = run.data[ckpts[kind].name]
    assert report["model_config"] == spec.comfy_model_class
    assert report["model_base"] == spec.comfy_model_base
    assert report["model_type"] == "EPS"
    assert report["unet_dtype"] == "torch.float32"
    assert report["missing_unet_keys"] == []
    assert report["unexpected_unet_keys"] == list(spec.expected_unexpected_unet_keys)
    assert report["vae"] == "TAESD"
    assert report["clip"] == {None: None, "sd15": "SD1ClipModel", "sdxl": "SDXLClipModel"}[spec.text_encoder]
    unet_warnings = [
        msg for level, msg in report["log"] if msg.startswith(("unet missing", "unet unexpected"))
    ]
    if spec.expected_unexpected_unet_keys:
        assert unet_warnings == [f"unet unexpected: {list(spec.expected_unexpected_unet_keys)}"]
    else:
        assert unet_warnings == []
    if spec.text_encoder:
        assert not [m for _, m in report["log"] if m.startswith("clip missing")]


@pytest.mark.parametrize("kind", KINDS)
def test_comfyui_unet_equals_the_diffusers_twin(comfy_loads, kind):
    ckpts, run, expected = comfy_loads
    got = run.tensors[f"{ckpts[kind].name}/out"]
    want = expected[kind]
    assert got.shape == want.shape
    assert want.abs().max() > 0.1  # a live network, not a zero output
    assert (got - want).abs().max().item() <= 1e-4


def test_full_lcm_file_carries_the_guidance_projection(tiny_checkpoint):
    from safetensors import safe_open

    ckpt = tiny_checkpoint("sd15_lcm")
    with safe_open(str(ckpt.path), framework="pt") as f:
        weight = f.get_tensor(LCM_COND_PROJ_KEY)
    assert tuple(weight.shape) == (
        320,
        256,
    )  # model_channels x time_cond_proj_dim, no bias (as LCM-Dreamshaper)
    unet = ckpt.diffusers_unet()
    assert torch.equal(unet.time_embedding.cond_proj.weight, weight.float())
    inputs = _unet_inputs(ckpt, torch.Generator().manual_seed(1))
    w_embedding = torch.randn(2, 256, generator=torch.Generator().manual_seed(2))
    plain, _ = _diffusers_out(unet, inputs)
    guided, _ = _diffusers_out(unet, inputs, timestep_cond=w_embedding)
    assert (plain - guided).abs().max() > 1e-2  # the projection is live: dropping it changes the output


def test_diffusers_single_file_loader_reads_the_same_unet(tiny_checkpoint, tmp_path):
    """diffusers' own from_single_file (an independent reader of the layout) gives back the file's UNet weights."""
    from diffusers import UNet2DConditionModel

    ckpt = tiny_checkpoint("sd15")
    twin = ckpt.diffusers_unet()
    twin.save_config(tmp_path / "unet")
    loaded = UNet2DConditionModel.from_single_file(str(ckpt.path), config=str(tmp_path), subfolder="unet")
    a, b = twin.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k].float()) for k in a)


def test_diffusers_single_file_loader_has_no_place_for_the_guidance_projection(tiny_checkpoint, tmp_path):
    """Why the LCM Model node reads cond_proj from the file itself: diffusers' single-file UNet mapping has no entry
    for it, so from_single_file with a plain SD config drops it silently (and with time_cond_proj_dim it cannot fill
    the weight)."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    ldm_key = LCM_COND_PROJ_KEY.removeprefix("model.diffusion_model.")
    known = {v for part in DIFFUSERS_TO_LDM_MAPPING["unet"].values() for v in part.values()}
    assert ldm_key not in known
    ckpt = tiny_checkpoint("sd15_lcm")
    plain = {**ckpt.spec.unet}
    del plain["time_cond_proj_dim"]
    UNet2DConditionModel.from_config(plain).save_config(tmp_path / "unet")
    loaded = UNet2DConditionModel.from_single_file(str(ckpt.path), config=str(tmp_path), subfolder="unet")
    assert loaded.time_embedding.cond_proj is None
    twin = ckpt.diffusers_unet()
    assert torch.equal(loaded.conv_in.weight.float(), twin.conv_in.weight)


def test_checkpoint_sizes_and_build_times(tiny_checkpoint):
    sizes = {kind: tiny_checkpoint(kind).path.stat().st_size / 1e6 for kind in KINDS}
    assert 250 < sizes["sd15"] < 320 and 250 < sizes["sd15_lcm"] < 320
    assert sizes["sdxl"] < 200
    with pytest.raises(
        ValueError, match="unknown test checkpoint kind 'sd3'; choose one of sd15, sd15_lcm, sdxl"
    ):
        from tests.comfyui.checkpoints import build_checkpoint

        build_checkpoint("sd3", ".")


@pytest.mark.slow
@pytest.mark.skipif(
    not __import__("os").environ.get("LCM_PLUGIN_TEST_SDXL_FULL"),
    reason="sdxl_full (1.8 GB, ~25 s to build, ~5 GB RAM) is opt-in: set LCM_PLUGIN_TEST_SDXL_FULL=1",
)
def test_sdxl_with_text_encoders_runs_a_core_txt2img(tiny_checkpoint):
    ckpt = tiny_checkpoint("sdxl_full")
    run = run_in_comfyui(
        "load_checkpoints.py", ckpt.name, custom_nodes=(), models={"checkpoints": [ckpt.path]}, nodes="none"
    )
    report = run.data[ckpt.name]
    assert (report["model_config"], report["clip"], report["vae"]) == (
        "Segmind_Vega",
        "SDXLClipModel",
        "TAESD",
    )
    assert report["missing_unet_keys"] == [] and report["unexpected_unet_keys"] == []
    assert not [m for _, m in report["log"] if m.startswith("clip missing")]
    [result] = run_workflows(
        [txt2img_prompt(ckpt.name, steps=1)], custom_nodes=(), models={"checkpoints": [ckpt.path]}
    )
    assert result.success and len(result.images()) == 1
