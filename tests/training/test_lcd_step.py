"""The distillation step: batching, parameterisations, LCF target, losses, EMA, learning on a fixed batch."""

from __future__ import annotations

import math

import pytest
import torch

from lcm_plugin.core import sd_alphas_cumprod
from lora_training.lcd import Draws, Objective, guided_estimates, lcm_loss, teacher_solve
from lora_training.losses import consistency_loss, pseudo_huber
from lora_training.teachers import unet_call
from tests.training.helpers import tiny_unet

AC = sd_alphas_cumprod()


def _obj(**kw):
    return Objective(alphas_cumprod=AC, prediction_type=kw.pop("prediction_type", "epsilon"), **kw)


def _inputs(bsz=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(bsz, 4, 8, 8, generator=g)
    cond = {"encoder_hidden_states": torch.randn(bsz, 5, 32, generator=g)}
    uncond = {"encoder_hidden_states": torch.randn(bsz, 5, 32, generator=g)}
    return x, cond, uncond


def test_batched_teacher_pass_equals_two_separate_passes():
    unet = tiny_unet().eval()
    x, cond, uncond = _inputs()
    t = torch.tensor([999, 519, 39])
    w = torch.tensor([2.0, 5.0, 11.0])
    calls = []

    def teacher(s, tt, c):
        calls.append(s.shape[0])
        return unet_call(unet, s, tt, c)

    with torch.no_grad():
        x0_w, eps_w = guided_estimates(_obj(), teacher, x, t, cond, uncond, w)
        out_c, out_u = unet_call(unet, x, t, cond), unet_call(unet, x, t, uncond)
    assert calls == [6]  # ONE forward with cond and uncond stacked
    a = AC[t].reshape(-1, 1, 1, 1)
    x0_c, x0_u = (x - (1 - a).sqrt() * out_c) / a.sqrt(), (x - (1 - a).sqrt() * out_u) / a.sqrt()
    wb = w.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(x0_w, x0_c + wb * (x0_c - x0_u), atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(eps_w, out_c + wb * (out_c - out_u), atol=2e-4, rtol=1e-4)


def test_v_prediction_teacher_is_converted_not_used_as_eps():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([759, 259])
    a = AC[t].reshape(-1, 1, 1, 1)
    z = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = a.sqrt() * eps - (1 - a).sqrt() * x0  # Salimans & Ho 2022

    def v_teacher(s, tt, c):
        return torch.cat([v, v])

    cond = {"encoder_hidden_states": torch.zeros(2, 1, 1)}
    x0_w, eps_w = guided_estimates(
        _obj(prediction_type="v_prediction"), v_teacher, z, t, cond, cond, torch.tensor([7.5, 7.5])
    )
    torch.testing.assert_close(x0_w, x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(eps_w, eps, atol=1e-4, rtol=1e-4)
    # The official LCM repo's bug (raw v used as eps) gives a different, wrong z_n:
    d = Draws(t_start=t, t_end=t - 20, noise=eps, w=torch.tensor([0.0, 0.0]))
    right = teacher_solve(_obj(prediction_type="v_prediction"), v_teacher, z, d, cond, cond)
    wrong = teacher_solve(_obj(prediction_type="epsilon"), v_teacher, z, d, cond, cond)
    a_n = AC[t - 20].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(right, a_n.sqrt() * x0 + (1 - a_n).sqrt() * eps, atol=1e-4, rtol=1e-4)
    assert (wrong - right).abs().max() > 0.1


def test_lcf_target_uses_same_x0_and_same_eps():
    x0, cond, _ = _inputs(bsz=4, seed=2)
    seen = {}

    def student(s, t, c, w):
        seen["z_start"], seen["t_start"] = s.detach().clone(), t.clone()
        return torch.zeros_like(s, requires_grad=True)

    def target(s, t, c, w):
        seen["z_end"], seen["t_end"] = s.clone(), t.clone()
        return torch.zeros_like(s)

    obj = _obj(with_teacher=False)
    lcm_loss(
        obj,
        student=student,
        teacher=None,
        target=target,
        latents=x0,
        cond=cond,
        uncond=None,
        generator=torch.Generator().manual_seed(0),
    )
    a_s = AC[seen["t_start"]].reshape(-1, 1, 1, 1)
    a_e = AC[seen["t_end"]].reshape(-1, 1, 1, 1)
    eps = (seen["z_start"] - a_s.sqrt() * x0) / (1 - a_s).sqrt()
    torch.testing.assert_close(seen["z_end"], a_e.sqrt() * x0 + (1 - a_e).sqrt() * eps, atol=1e-4, rtol=1e-4)
    assert torch.equal(seen["t_end"], (seen["t_start"] - 20).clamp(min=0))
    assert set(seen["t_start"].tolist()) <= set(range(19, 1000, 20))


@pytest.mark.parametrize(("prediction_type", "loss_type"), [("epsilon", "huber"), ("v_prediction", "l2")])
def test_lcm_loss_equals_the_diffusers_script_step(prediction_type, loss_type):
    """lcm_loss (LCM-LoRA: the teacher is the student's base with adapters disabled) gives the loss and the LoRA
    gradients of a literal port of diffusers' train_lcm_distill_lora_sd_wds.py step (separate frozen teacher UNet),
    for the same draws of timestep index, noise and w."""
    from diffusers import DDPMScheduler

    from lora_training.lcd import draw
    from lora_training.models import add_lora
    from lora_training.teachers import adapters_disabled
    from tests.training.diffusers_lcm_step import script_loss

    teacher_unet = tiny_unet().eval().requires_grad_(False)
    unet = tiny_unet().eval().requires_grad_(False)  # the same weights: seed 0
    add_lora(unet, rank=4, alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"],
             dropout=0.0, seed=0)  # fmt: skip
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():  # B != 0, so that the student is not its teacher
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    lora = [p for p in unet.parameters() if p.requires_grad]
    x, cond, uncond = _inputs(bsz=4, seed=3)
    obj = _obj(prediction_type=prediction_type, loss_type=loss_type)

    def student(s, t, c, w_emb):
        return unet_call(unet, s, t, c, w_emb)

    def teacher(s, t, c):
        with adapters_disabled(unet):
            return unet_call(unet, s, t, c)

    ours = lcm_loss(obj, student=student, teacher=teacher, target=student, latents=x, cond=cond, uncond=uncond,
                    generator=torch.Generator().manual_seed(7))  # fmt: skip
    ours_grads = torch.autograd.grad(ours, lora)

    d = draw(obj, x, torch.Generator().manual_seed(7))  # the same draws, for the script's step
    k = obj.skipping_interval
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              prediction_type=prediction_type)  # fmt: skip
    ref = script_loss(unet=unet, teacher_unet=teacher_unet, noise_scheduler=scheduler, latents=x,
                      prompt_embeds=cond["encoder_hidden_states"], uncond_prompt_embeds=uncond["encoder_hidden_states"],
                      index=(d.t_start + 1) // k - 1, noise=d.noise, w=d.w, loss_type=loss_type)  # fmt: skip
    ref_grads = torch.autograd.grad(ref, lora)
    assert ours.item() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
    for a, b in zip(ours_grads, ref_grads, strict=True):  # float32 sums in another order: 1e-4 of the scale
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())
    assert max(b.abs().max().item() for b in ref_grads) > 1e-4  # the LoRA gets a real gradient


def test_pseudo_huber_value_and_l2():
    a, b = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([0.0, 0.0, 1.0])
    c = 0.5
    expected = sum(math.sqrt(d * d + c * c) - c for d in (0.0, 1.0, -3.0)) / 3
    assert pseudo_huber(a, b, c).item() == pytest.approx(expected, rel=1e-6)
    assert consistency_loss(a, b, loss_type="l2").item() == pytest.approx((0 + 1 + 9) / 3)
    with pytest.raises(ValueError, match="use 'l2' or 'huber'"):
        consistency_loss(a, b, loss_type="l1")


def test_target_ema_has_a_constant_decay_from_the_first_update():
    """diffusers' EMAModel as the LCD target: theta <- 0.9 theta + 0.1 online on every update, no warm-up (EMAModel's
    default would copy the online weights on the first update and ramp the decay as (1 + n) / (10 + n))."""
    from lora_training.models import target_ema

    start = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    ema = target_ema([start], 0.9)
    expected = torch.tensor([1.0, 2.0])
    for online in (torch.tensor([3.0, -2.0]), torch.tensor([0.5, 4.0])):
        ema.step([torch.nn.Parameter(online)])
        expected = 0.9 * expected + 0.1 * online
        torch.testing.assert_close(ema.shadow_params[0], expected)
    assert torch.equal(start.detach(), torch.tensor([1.0, 2.0]))  # the online weights are not touched


def test_dpmpp_needs_k_at_least_two():
    with pytest.raises(ValueError, match="k >= 2"):
        _obj(solver="dpmpp_2m", original_inference_steps=1000)


@pytest.mark.parametrize("solver", ["ddim", "euler", "dpmpp_2m"])
def test_loss_decreases_on_a_fixed_batch(solver):
    from lora_training.models import add_lora

    unet = tiny_unet()
    add_lora(
        unet,
        rank=4,
        alpha=4,
        target_modules=["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"],
        dropout=0.0,
        seed=0,
    )
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=3e-3)
    x, cond, uncond = _inputs(bsz=2, seed=3)
    obj = _obj(solver=solver, omega=3.0)

    def student(s, t, c, w):
        return unet_call(unet, s, t, c)

    def teacher(s, t, c):
        unet.disable_adapters()
        try:
            return unet_call(unet, s, t, c)
        finally:
            unet.enable_adapters()

    losses = []
    for _ in range(15):
        loss = lcm_loss(
            obj,
            student=student,
            teacher=teacher,
            target=student,
            latents=x,
            cond=cond,
            uncond=uncond,
            generator=torch.Generator().manual_seed(5),
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
