"""The guidance projection hosts read back from full LCM files equals diffusers' cond_proj path."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from safetensors.torch import save_file

from lcm_plugin import core
from lcm_plugin.guidance_projection import GUIDANCE_PROJECTION_KEYS, guidance_condition, read_guidance_projection


@pytest.mark.parametrize("guidance_scale", [1.0, 4.5, 8.0])
def test_condition_added_to_the_time_features_equals_diffusers_time_embedding(guidance_scale):
    torch.manual_seed(0)
    embedding = TimestepEmbedding(32, 128, cond_proj_dim=256)
    t_emb = Timesteps(32, flip_sin_to_cos=True, downscale_freq_shift=0)(torch.tensor([999, 499]))
    w = torch.full((2,), guidance_scale - 1.0)  # LatentConsistencyModelPipeline embeds w = scale - 1
    reference = embedding(t_emb, condition=core.guidance_scale_embedding(w, embedding_dim=256))
    # a host's time-embedding MLP (no cond_proj) with our condition added to its input
    condition = guidance_condition(embedding.cond_proj.weight.detach(), guidance_scale)
    ours = embedding.linear_2(embedding.act(embedding.linear_1(t_emb + condition)))
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_read_from_every_known_key_and_none_for_a_plain_model(tmp_path):
    weight = torch.randn(320, 256)
    for i, key in enumerate(GUIDANCE_PROJECTION_KEYS):
        path = tmp_path / f"lcm{i}.safetensors"
        save_file({key: weight, "model.diffusion_model.out.2.weight": torch.zeros(1)}, str(path))
        assert torch.equal(read_guidance_projection(path), weight)
    plain = tmp_path / "plain.safetensors"
    save_file({"model.diffusion_model.out.2.weight": torch.zeros(1)}, str(plain))
    assert read_guidance_projection(plain) is None


def test_bad_files_and_settings_get_clear_errors(tmp_path):
    truncated = tmp_path / "cut.safetensors"
    save_file({GUIDANCE_PROJECTION_KEYS[0]: torch.randn(8, 4)}, str(truncated))
    truncated.write_bytes(truncated.read_bytes()[:20])
    with pytest.raises(ValueError, match="cannot be read as safetensors"):
        read_guidance_projection(truncated)
    with pytest.raises(ValueError, match=r"\.safetensors files only"):
        read_guidance_projection(tmp_path / "model.ckpt")
    with pytest.raises(ValueError, match=r"guidance_scale must be in \[1, 30\]"):
        guidance_condition(torch.randn(8, 4), 0.5)
    with pytest.raises(ValueError, match="2-D linear weight"):
        guidance_condition(torch.randn(8), 2.0)
