"""SDXL teachers: pooled text embeds + time ids, zero unconditional embedding, LoRA loads in the SDXL pipeline."""

from __future__ import annotations

import pytest
import torch

from lora_training.trainer import Trainer
from tests.training.helpers import RES, base_config


def tiny_sdxl(path):
    import tempfile

    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from lcm_plugin.toy.tokenizer import build_tokenizer_files, load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tok = load_tokenizer(build_tokenizer_files(tmp))
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=32 + 6 * 8, cross_attention_dim=64,
        norm_num_groups=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                        latent_channels=4, norm_num_groups=8, sample_size=RES)
    cfg = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
               max_position_embeddings=77, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.eos_token_id, projection_dim=32)
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(**cfg)),
                                     text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**cfg)), tokenizer=tok,
                                     tokenizer_2=tok, unet=unet, scheduler=sched)
    pipe.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory):
    return tiny_sdxl(tmp_path_factory.mktemp("sdxl") / "xl")


def test_sdxl_conditioning_and_zero_uncond(sdxl_dir):
    from lora_training.teachers import encode_prompts, load_pipeline, teacher_parts, unconditional

    parts = teacher_parts(load_pipeline(str(sdxl_dir)))
    assert parts.is_sdxl
    cond = encode_prompts(parts, ["a red square", "a blue circle"], resolution=RES, device=torch.device("cpu"))
    assert cond["encoder_hidden_states"].shape == (2, 77, 64) and cond["text_embeds"].shape == (2, 32)
    assert cond["time_ids"].tolist() == [[RES, RES, 0, 0, RES, RES]] * 2
    uncond = unconditional(parts, cond, resolution=RES, device=torch.device("cpu"))
    assert not uncond["encoder_hidden_states"].any() and not uncond["text_embeds"].any()


def test_sdxl_lora_run_loads_in_sdxl_pipeline(sdxl_dir, data_dir, tmp_path):
    from diffusers import StableDiffusionXLPipeline
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open

    cfg = base_config(tmp_path, sdxl_dir, data_dir, max_train_steps=2, learning_rate=5e-3, w_min=3.0)
    result = Trainer(cfg).train()
    f = result.outputs["diffusers_lora"]
    pipe = StableDiffusionXLPipeline.from_pretrained(str(sdxl_dir), local_files_only=True)
    pipe.load_lora_weights(str(f), adapter_name="lcm")
    with safe_open(str(f), "pt") as h:
        assert len(get_peft_model_state_dict(pipe.unet, adapter_name="lcm")) == len(list(h.keys()))
        assert h.metadata()["lcm_plugin.architecture"] == "sdxl"
