"""Single-file (original LDM layout) checkpoints: our writer against diffusers' own reader (``from_single_file``),
a single-file teacher in the trainer, ``train fuse --single-file`` through the CLI, and damaged files."""

from __future__ import annotations

import types

import pytest
import torch
from safetensors import safe_open

from lora_training.single_file import check_single_file, pipeline_to_original, save_single_file
from lora_training.teachers import load_pipeline
from tests.training.helpers import RES, base_config, tiny_pipeline, tiny_unet

PREFIXES = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model.")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny SD1 pipeline (seed 1) as a folder and as a single file; the config folder (``pipe_dir``) has seed 0."""
    tmp = tmp_path_factory.mktemp("single_file")
    pipe = tiny_pipeline(seed=1)
    pipe.save_pretrained(str(tmp / "folder"), safe_serialization=True)
    path = save_single_file(pipe, tmp / "sd1.safetensors", {"note": "test"})
    return types.SimpleNamespace(pipe=pipe, folder=tmp / "folder", file=path)


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@torch.no_grad()
def _outputs(pipe) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, RES // 2, RES // 2, generator=g)
    image = torch.rand(1, 3, RES, RES, generator=g) * 2 - 1
    ids = pipe.tokenizer(
        ["a red square", ""], padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    text = pipe.text_encoder(ids)[0]
    return {
        "text": text,
        "unet": pipe.unet(latents, torch.tensor([10, 700]), encoder_hidden_states=text).sample,
        "vae_encode": pipe.vae.encode(image).latent_dist.mean,
        "vae_decode": pipe.vae.decode(latents[:1]).sample,
    }


def test_sd1_single_file_round_trips_through_diffusers_reader(source, pipe_dir):
    with safe_open(str(source.file), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert all(k.startswith(PREFIXES) for k in keys) and all(
        any(k.startswith(p) for k in keys) for p in PREFIXES
    )
    assert meta["note"] == "test" and meta["lcm_plugin.architecture"] == "sd15"
    back = load_pipeline(str(source.file), single_file_config=str(pipe_dir))
    for name in ("unet", "vae", "text_encoder"):  # bit-identical after LDM -> diffusers
        _assert_same_weights(getattr(source.pipe, name), getattr(back, name))
    want, got, config_only = _outputs(source.pipe), _outputs(back), _outputs(load_pipeline(str(pipe_dir)))
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6)
        assert (config_only[name] - want[name]).abs().max() > 1e-3, name  # the weights came from the file


def _tiny_sdxl(tmp_path, seed: int):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    from tests.engine.helpers import tiny_text_encoder, tiny_tokenizer, tiny_vae

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=6 * 8 + 48, cross_attention_dim=32 + 48,
        norm_num_groups=8,
    )  # fmt: skip
    tok_dir = tmp_path / f"tok{seed}"
    tok_dir.mkdir()
    tok = tiny_tokenizer(tok_dir)
    # the two encoders differ in width, as in SDXL (768/1280): diffusers tells their keys apart by the width
    return StableDiffusionXLPipeline(
        vae=tiny_vae(seed), text_encoder=tiny_text_encoder(seed=seed), tokenizer=tok, tokenizer_2=tok, unet=unet,
        text_encoder_2=tiny_text_encoder(hidden_size=48, with_projection=True, seed=seed + 1), scheduler=EulerDiscreteScheduler(),
    )  # fmt: skip


def test_sd2_and_sdxl_layouts_round_trip(tmp_path, pipe_dir):
    sd = tiny_pipeline(seed=2)
    sd2 = load_pipeline(
        str(save_single_file(sd, tmp_path / "sd2.safetensors", arch="sd2")), single_file_config=str(pipe_dir)
    )
    for name in ("unet", "vae", "text_encoder"):
        _assert_same_weights(getattr(sd, name), getattr(sd2, name))
    xl = _tiny_sdxl(tmp_path, seed=1)
    _tiny_sdxl(tmp_path, seed=5).save_pretrained(str(tmp_path / "xl_config"))
    path = save_single_file(xl, tmp_path / "xl.safetensors")
    with safe_open(str(path), "pt") as f:
        proj = f.get_tensor("conditioner.embedders.1.model.text_projection")
        assert f.metadata()["lcm_plugin.architecture"] == "sdxl"
    torch.testing.assert_close(proj, xl.text_encoder_2.text_projection.weight.T, rtol=0, atol=0)
    back = load_pipeline(str(path), single_file_config=str(tmp_path / "xl_config"))
    assert type(back).__name__ == "StableDiffusionXLPipeline"
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        _assert_same_weights(getattr(xl, name), getattr(back, name))


# Published architectures at full size, built on the meta device (no memory): every key of the original layout must
# convert back to the diffusers model through diffusers' converters, and carry the names diffusers detects them by.
SD15_UNET = dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)  # fmt: skip
SDXL_UNET = dict(block_out_channels=(320, 640, 1280), layers_per_block=2, cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2, 10),
                 use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816)  # fmt: skip
SD21_UNET = dict(
    SD15_UNET, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True
)
SD_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4)  # fmt: skip
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
CLIP_H_SD2 = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16, hidden_act="gelu"
)
CLIP_BIGG = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20, hidden_act="gelu",
                 projection_dim=1280)  # fmt: skip

# Names and shapes as in the published v1-5 and sd_xl_base_1.0 files (what ComfyUI and A1111 load by name). The
# round trip alone cannot check these: diffusers' reader also accepts some names the hosts do not.
KNOWN_KEYS = {
    "sd15": {
        "model.diffusion_model.time_embed.0.weight": (1280, 320),
        "model.diffusion_model.input_blocks.1.0.in_layers.2.weight": (320, 320, 3, 3),
        "model.diffusion_model.input_blocks.1.0.emb_layers.1.weight": (320, 1280),
        "model.diffusion_model.input_blocks.1.0.out_layers.3.weight": (320, 320, 3, 3),
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
        "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
        "model.diffusion_model.input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight": (1280, 768),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.8.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
        "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
        "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.decoder.mid.attn_1.proj_out.weight": (512, 512, 1, 1),
        "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight": (768, 3072),
    },
    "sd2": {
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320),
        "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
        "cond_stage_model.model.token_embedding.weight": (49408, 1024),
        "cond_stage_model.model.positional_embedding": (77, 1024),
        "cond_stage_model.model.ln_final.weight": (1024,),
        "cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight": (3072, 1024),
        "cond_stage_model.model.transformer.resblocks.22.ln_2.bias": (1024,),
    },
    "sdxl": {
        "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
        "model.diffusion_model.input_blocks.6.0.op.weight": (640, 640, 3, 3),
        "model.diffusion_model.input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight": (1280, 2048),
        "model.diffusion_model.output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.output_blocks.8.0.skip_connection.weight": (320, 640, 1, 1),
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": (768,),
        "conditioner.embedders.1.model.positional_embedding": (77, 1280),
        "conditioner.embedders.1.model.text_projection": (1280, 1280),
        "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
        "conditioner.embedders.1.model.transformer.resblocks.31.mlp.c_proj.weight": (1280, 5120),
    },
}


@pytest.mark.parametrize("arch", ["sd15", "sd2", "sdxl"])
def test_full_size_layouts_match_diffusers_converters(arch):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        infer_diffusers_model_type,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        unet = UNet2DConditionModel(**{"sd15": SD15_UNET, "sd2": SD21_UNET, "sdxl": SDXL_UNET}[arch])
        vae = AutoencoderKL(**SD_VAE)
        te = CLIPTextModel(CLIPTextConfig(**(CLIP_H_SD2 if arch == "sd2" else CLIP_L)))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG)) if arch == "sdxl" else None
    state = pipeline_to_original(
        types.SimpleNamespace(unet=unet, vae=vae, text_encoder=te, text_encoder_2=te2)
    )
    n_unet = sum(k.startswith("model.diffusion_model.") for k in state)
    assert n_unet == len(unet.state_dict()) == {"sd15": 686, "sd2": 686, "sdxl": 1680}[arch]
    assert infer_diffusers_model_type(state) == {"sd15": "v1", "sd2": "v2", "sdxl": "xl_base"}[arch]
    for model, converted in ((unet, convert_ldm_unet_checkpoint(state, dict(unet.config))),
                             (vae, convert_ldm_vae_checkpoint(state, dict(vae.config)))):  # fmt: skip
        ref = model.state_dict()
        assert converted.keys() == ref.keys()
        assert all(converted[k].shape == ref[k].shape for k in ref)
    assert {k: tuple(state[k].shape) for k in KNOWN_KEYS[arch] if k in state} == KNOWN_KEYS[arch]
    # the full-resolution decoder level has no upsampler
    assert "first_stage_model.decoder.up.0.upsample.conv.weight" not in state


@pytest.fixture(scope="module")
def single_file_run(tmp_path_factory, source, pipe_dir, data_dir):
    from lora_training.trainer import Trainer

    tmp = tmp_path_factory.mktemp("sf_run")
    cfg = base_config(
        tmp / "file", source.file, data_dir, single_file_config=str(pipe_dir), max_train_steps=2
    )
    return Trainer(cfg).train()


def test_trainer_runs_with_a_single_file_teacher(single_file_run, source, data_dir, tmp_path):
    from lora_training.trainer import Trainer

    assert single_file_run.steps == 2 and all(torch.isfinite(torch.tensor(single_file_run.losses)))
    assert single_file_run.outputs["diffusers_lora"].is_file()
    folder_run = Trainer(base_config(tmp_path, source.folder, data_dir, max_train_steps=2)).train()
    # the same teacher, read from a single file or from a folder
    assert single_file_run.losses == folder_run.losses


def _tiny_lora(tmp_path, alpha: float = 8.0, rank: int = 4):
    """A LoRA with random (non-zero) A and B on the attention projections of the tiny UNet."""
    from peft import LoraConfig

    from lora_training.export import save_diffusers_lora

    unet = tiny_unet()
    torch.manual_seed(3)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                init_lora_weights=False))  # fmt: skip
    return save_diffusers_lora(unet, tmp_path / "lora", is_sdxl=False, metadata={}), alpha / rank


def test_fuse_single_file_cli_adds_the_lora_delta(source, pipe_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    from lcm_plugin.cli import main

    lora, alpha_over_r = _tiny_lora(tmp_path)
    out = tmp_path / "fused" / "sd1-lcm.safetensors"
    rc = main(["train", "fuse", "--base", str(source.file), "--single-file-config", str(pipe_dir), "--lora", str(lora),
               "--output", str(out), "--lora-scale", "0.5", "--single-file"])  # fmt: skip
    assert rc == 0 and f"full LCM single-file checkpoint: {out}" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp file left beside it
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["lcm_plugin.fused_lora"] == str(lora) and meta["lcm_plugin.lora_scale"] == "0.5"
    fused = load_pipeline(str(out), single_file_config=str(pipe_dir))
    _assert_same_weights(source.pipe.vae, fused.vae)
    _assert_same_weights(source.pipe.text_encoder, fused.text_encoder)
    base, got, lora_sd = source.pipe.unet.state_dict(), fused.unet.state_dict(), load_file(str(lora))
    expected = dict(base)
    for key, a in lora_sd.items():
        if ".lora_A." in key:
            module = key.removeprefix("unet.").split(".lora_A.")[0]
            b = lora_sd[key.replace(".lora_A.", ".lora_B.")]
            expected[f"{module}.weight"] = base[f"{module}.weight"] + 0.5 * alpha_over_r * (b @ a)
    assert len(expected) == len(got) and len(lora_sd) == 2 * sum(1 for k in lora_sd if ".lora_A." in k) > 0
    for key, want in expected.items():
        torch.testing.assert_close(got[key], want, rtol=0, atol=1e-6)
    assert max((got[k] - base[k]).abs().max() for k in base) > 1e-2  # the LoRA changed the UNet


def test_fuse_refuses_a_wrong_shape_lora_in_one_line_and_non_finite_fused_weights(pipe_dir, tmp_path, capfd):
    """fuse_lora loads through pipeline_loading.load_lora (no ~60 lines of diffusers' size-mismatch log) and refuses
    to save a UNet whose fused weights overflowed (finite LoRA, finite scale, inf product)."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    from lora_training.export import fuse_lora, save_diffusers_lora

    wide = UNet2DConditionModel.from_config({**dict(tiny_unet().config), "block_out_channels": (64, 64)})
    wide.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "conv1"]))
    wide_lora = save_diffusers_lora(wide, tmp_path / "wide", is_sdxl=False, metadata={})
    capfd.readouterr()
    with pytest.raises(
        ValueError, match=r"does not fit this model .*\d+ weight\(s\) have the wrong shape"
    ) as err:
        fuse_lora(str(pipe_dir), str(wide_lora), tmp_path / "out_wide")
    assert len(str(err.value).splitlines()) == 1
    printed = capfd.readouterr()
    assert "size mismatch" not in printed.err + printed.out, printed.err[:2000]

    lora, _ = _tiny_lora(tmp_path)
    with pytest.raises(ValueError, match=r"at --lora-scale 1e\+39 gives NaN/inf in \d+ of \d+ UNet weights .*nothing "
                       r"was written"):  # fmt: skip
        fuse_lora(str(pipe_dir), str(lora), tmp_path / "out_inf", lora_scale=1e39)
    with pytest.raises(ValueError, match="gives NaN/inf"):
        fuse_lora(
            str(pipe_dir), str(lora), tmp_path / "out_inf.safetensors", lora_scale=1e39, single_file=True
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora", "wide"]


def test_damaged_single_files_give_clear_errors(source, pipe_dir, tmp_path, capsys):
    from safetensors.torch import save_file

    from lcm_plugin.cli import main

    data = source.file.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="is truncated.*Download or export it again"):
        check_single_file(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint" * 64)
    with pytest.raises(ValueError, match="cannot be read: .*not a safetensors file"):
        check_single_file(garbage)
    lora_only = tmp_path / "lora_only.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(lora_only))
    with pytest.raises(ValueError, match="not a full SD single-file checkpoint"):
        check_single_file(lora_only)

    from lora_training.teachers import load_pipeline

    with pytest.raises(ValueError, match="is truncated.*Download or export it again"):  # the trainer's loader
        load_pipeline(str(truncated), single_file_config=str(pipe_dir))

    lora, _ = _tiny_lora(tmp_path)
    out = tmp_path / "out" / "fused.safetensors"
    argv = ["train", "fuse", "--base", str(truncated), "--single-file-config", str(pipe_dir), "--lora", str(lora),
            "--output", str(out), "--single-file"]  # fmt: skip
    assert main(argv) == 1
    assert "is truncated" in capsys.readouterr().err and not out.parent.exists()
    argv[argv.index(str(out))] = str(tmp_path / "folder_name")
    assert main(argv) == 1
    assert "give an --output ending in .safetensors" in capsys.readouterr().err


def test_failed_write_leaves_no_partial_file(source, tmp_path, monkeypatch):
    import safetensors.torch

    out = tmp_path / "model.safetensors"
    out.write_bytes(b"previous")

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"\x00" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_single_file(source.pipe, out)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"] and out.read_bytes() == b"previous"


def test_unsupported_models_are_refused(tmp_path):
    with pytest.raises(ValueError, match="supported single-file architectures are sd15, sd2, sdxl"):
        pipeline_to_original(tiny_pipeline(), arch="ssd1b")
    with pytest.raises(ValueError, match="ending in .safetensors"):
        save_single_file(tiny_pipeline(), tmp_path / "model.ckpt")
    assert not any(tmp_path.iterdir())


def test_full_lcm_keeps_its_guidance_projection(tmp_path):
    """A w-embedded (full LCD) UNet writes its cond_proj under the name hosts read it back from."""
    from lcm_plugin.guidance_projection import read_guidance_projection

    lcd_student = tiny_pipeline(time_cond_proj_dim=8)
    path = save_single_file(lcd_student, tmp_path / "lcd.safetensors")
    projection = read_guidance_projection(path)
    assert projection is not None
    assert torch.equal(projection, lcd_student.unet.time_embedding.cond_proj.weight.detach())
    assert read_guidance_projection(save_single_file(tiny_pipeline(), tmp_path / "plain.safetensors")) is None
