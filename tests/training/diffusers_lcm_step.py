"""A literal port of one LCM-LoRA loss step of diffusers' ``train_lcm_distill_lora_sd_wds.py``: the reference for
``lora_training.lcd.lcm_loss`` (tests/training/test_lcd_step.py).

Source: huggingface/diffusers ``examples/consistency_distillation/train_lcm_distill_lora_sd_wds.py`` at commit
c56add8081be60b7e8794e011f1790d0e37aeced (its helpers ``scalings_for_boundary_conditions``,
``get_predicted_original_sample``, ``get_predicted_noise``, ``extract_into_tensor``, ``DDIMSolver``, ``append_dims``
copied unchanged, and the body of the training loop from "# 2. Sample a random timestep" to "# 10. Calculate loss").

What is not the script's, and why:
- the random draws (``index``, ``noise``, ``w``) are arguments, so both implementations see the same ones (the
  script draws them from the global RNG: ``torch.randint``, ``torch.randn_like``, ``torch.rand``);
- ``autocast_ctx`` is ``nullcontext()`` and ``weight_dtype`` float32 (equal precision: the script's own branch for
  MPS), so the comparison is of the math, not of bf16 rounding;
- the UNets are passed in as modules (``unet``: the student with LoRA; ``teacher_unet``: the frozen base);
- ``args`` is a namespace of the script's flags that the step reads.
"""

from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F


def append_dims(x, target_dims):
    """Appends dimensions to the end of a tensor until it has target_dims dimensions."""
    dims_to_append = target_dims - x.ndim
    if dims_to_append < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
    return x[(...,) + (None,) * dims_to_append]


# From LCMScheduler.get_scalings_for_boundary_condition_discrete
def scalings_for_boundary_conditions(timestep, sigma_data=0.5, timestep_scaling=10.0):
    scaled_timestep = timestep_scaling * timestep
    c_skip = sigma_data**2 / (scaled_timestep**2 + sigma_data**2)
    c_out = scaled_timestep / (scaled_timestep**2 + sigma_data**2) ** 0.5
    return c_skip, c_out


# Compare LCMScheduler.step, Step 4
def get_predicted_original_sample(model_output, timesteps, sample, prediction_type, alphas, sigmas):
    alphas = extract_into_tensor(alphas, timesteps, sample.shape)
    sigmas = extract_into_tensor(sigmas, timesteps, sample.shape)
    if prediction_type == "epsilon":
        pred_x_0 = (sample - sigmas * model_output) / alphas
    elif prediction_type == "sample":
        pred_x_0 = model_output
    elif prediction_type == "v_prediction":
        pred_x_0 = alphas * sample - sigmas * model_output
    else:
        raise ValueError(
            f"Prediction type {prediction_type} is not supported; currently, `epsilon`, `sample`, and `v_prediction`"
            f" are supported."
        )

    return pred_x_0


# Based on step 4 in DDIMScheduler.step
def get_predicted_noise(model_output, timesteps, sample, prediction_type, alphas, sigmas):
    alphas = extract_into_tensor(alphas, timesteps, sample.shape)
    sigmas = extract_into_tensor(sigmas, timesteps, sample.shape)
    if prediction_type == "epsilon":
        pred_epsilon = model_output
    elif prediction_type == "sample":
        pred_epsilon = (sample - alphas * model_output) / sigmas
    elif prediction_type == "v_prediction":
        pred_epsilon = alphas * model_output + sigmas * sample
    else:
        raise ValueError(
            f"Prediction type {prediction_type} is not supported; currently, `epsilon`, `sample`, and `v_prediction`"
            f" are supported."
        )

    return pred_epsilon


def extract_into_tensor(a, t, x_shape):
    b, *_ = t.shape
    out = a.gather(-1, t)
    return out.reshape(b, *((1,) * (len(x_shape) - 1)))


class DDIMSolver:
    def __init__(self, alpha_cumprods, timesteps=1000, ddim_timesteps=50):
        # DDIM sampling parameters
        step_ratio = timesteps // ddim_timesteps
        self.ddim_timesteps = (np.arange(1, ddim_timesteps + 1) * step_ratio).round().astype(np.int64) - 1
        self.ddim_alpha_cumprods = alpha_cumprods[self.ddim_timesteps]
        self.ddim_alpha_cumprods_prev = np.asarray(
            [alpha_cumprods[0]] + alpha_cumprods[self.ddim_timesteps[:-1]].tolist()
        )
        # convert to torch tensors
        self.ddim_timesteps = torch.from_numpy(self.ddim_timesteps).long()
        self.ddim_alpha_cumprods = torch.from_numpy(self.ddim_alpha_cumprods)
        self.ddim_alpha_cumprods_prev = torch.from_numpy(self.ddim_alpha_cumprods_prev)

    def ddim_step(self, pred_x0, pred_noise, timestep_index):
        alpha_cumprod_prev = extract_into_tensor(self.ddim_alpha_cumprods_prev, timestep_index, pred_x0.shape)
        dir_xt = (1.0 - alpha_cumprod_prev).sqrt() * pred_noise
        x_prev = alpha_cumprod_prev.sqrt() * pred_x0 + dir_xt
        return x_prev


def script_loss(*, unet, teacher_unet, noise_scheduler, latents, prompt_embeds, uncond_prompt_embeds, index, noise,
                w, num_ddim_timesteps=50, w_min=5.0, w_max=15.0, loss_type="huber", huber_c=0.001,
                timestep_scaling_factor=10.0) -> torch.Tensor:  # fmt: skip
    """The script's loss for one batch of latents (its steps 2-10), given the draws ``index``, ``noise`` and ``w``.

    ``w`` of shape (bsz,) is what ``(args.w_max - args.w_min) * torch.rand((bsz,)) + args.w_min`` drew.
    """
    args = SimpleNamespace(num_ddim_timesteps=num_ddim_timesteps, w_min=w_min, w_max=w_max, loss_type=loss_type,
                           huber_c=huber_c, timestep_scaling_factor=timestep_scaling_factor)  # fmt: skip
    alpha_schedule = torch.sqrt(noise_scheduler.alphas_cumprod)
    sigma_schedule = torch.sqrt(1 - noise_scheduler.alphas_cumprod)
    solver = DDIMSolver(
        noise_scheduler.alphas_cumprod.numpy(),
        timesteps=noise_scheduler.config.num_train_timesteps,
        ddim_timesteps=args.num_ddim_timesteps,
    )
    weight_dtype = torch.float32
    autocast_ctx = nullcontext()
    encoded_text = {}
    bsz = latents.shape[0]

    # 2. Sample a random timestep for each image t_n from the ODE solver timesteps without bias.
    # For the DDIM solver, the timestep schedule is [T - 1, T - k - 1, T - 2 * k - 1, ...]
    topk = noise_scheduler.config.num_train_timesteps // args.num_ddim_timesteps
    index = (
        index.long()
    )  # the script: torch.randint(0, args.num_ddim_timesteps, (bsz,), device=latents.device)
    start_timesteps = solver.ddim_timesteps[index]
    timesteps = start_timesteps - topk
    timesteps = torch.where(timesteps < 0, torch.zeros_like(timesteps), timesteps)

    # 3. Get boundary scalings for start_timesteps and (end) timesteps.
    c_skip_start, c_out_start = scalings_for_boundary_conditions(
        start_timesteps, timestep_scaling=args.timestep_scaling_factor
    )
    c_skip_start, c_out_start = [append_dims(x, latents.ndim) for x in [c_skip_start, c_out_start]]
    c_skip, c_out = scalings_for_boundary_conditions(timesteps, timestep_scaling=args.timestep_scaling_factor)
    c_skip, c_out = [append_dims(x, latents.ndim) for x in [c_skip, c_out]]

    # 4. Sample noise from the prior and add it to the latents according to the noise magnitude at each
    # timestep (this is the forward diffusion process) [z_{t_{n + k}} in Algorithm 1]
    # (the script: noise = torch.randn_like(latents))
    noisy_model_input = noise_scheduler.add_noise(latents, noise, start_timesteps)

    # 5. Sample a random guidance scale w from U[w_min, w_max]
    # Note that for LCM-LoRA distillation it is not necessary to use a guidance scale embedding
    # (the script: w = (args.w_max - args.w_min) * torch.rand((bsz,)) + args.w_min)
    w = w.reshape(bsz, 1, 1, 1)
    w = w.to(device=latents.device, dtype=latents.dtype)

    # 7. Get online LCM prediction on z_{t_{n + k}} (noisy_model_input), w, c, t_{n + k} (start_timesteps)
    noise_pred = unet(
        noisy_model_input,
        start_timesteps,
        timestep_cond=None,
        encoder_hidden_states=prompt_embeds.float(),
        added_cond_kwargs=encoded_text,
    ).sample

    pred_x_0 = get_predicted_original_sample(
        noise_pred,
        start_timesteps,
        noisy_model_input,
        noise_scheduler.config.prediction_type,
        alpha_schedule,
        sigma_schedule,
    )

    model_pred = c_skip_start * noisy_model_input + c_out_start * pred_x_0

    # 8. Compute the conditional and unconditional teacher model predictions to get CFG estimates of the
    # predicted noise eps_0 and predicted original sample x_0, then run the ODE solver using these
    # estimates to predict the data point in the augmented PF-ODE trajectory corresponding to the next ODE
    # solver timestep.
    with torch.no_grad():
        with autocast_ctx:
            # 1. Get teacher model prediction on noisy_model_input z_{t_{n + k}} and conditional embedding c
            cond_teacher_output = teacher_unet(
                noisy_model_input.to(weight_dtype),
                start_timesteps,
                encoder_hidden_states=prompt_embeds.to(weight_dtype),
            ).sample
            cond_pred_x0 = get_predicted_original_sample(
                cond_teacher_output,
                start_timesteps,
                noisy_model_input,
                noise_scheduler.config.prediction_type,
                alpha_schedule,
                sigma_schedule,
            )
            cond_pred_noise = get_predicted_noise(
                cond_teacher_output,
                start_timesteps,
                noisy_model_input,
                noise_scheduler.config.prediction_type,
                alpha_schedule,
                sigma_schedule,
            )

            # 2. Get teacher model prediction on noisy_model_input z_{t_{n + k}} and unconditional embedding 0
            uncond_teacher_output = teacher_unet(
                noisy_model_input.to(weight_dtype),
                start_timesteps,
                encoder_hidden_states=uncond_prompt_embeds.to(weight_dtype),
            ).sample
            uncond_pred_x0 = get_predicted_original_sample(
                uncond_teacher_output,
                start_timesteps,
                noisy_model_input,
                noise_scheduler.config.prediction_type,
                alpha_schedule,
                sigma_schedule,
            )
            uncond_pred_noise = get_predicted_noise(
                uncond_teacher_output,
                start_timesteps,
                noisy_model_input,
                noise_scheduler.config.prediction_type,
                alpha_schedule,
                sigma_schedule,
            )

            # 3. Calculate the CFG estimate of x_0 (pred_x0) and eps_0 (pred_noise)
            # Note that this uses the LCM paper's CFG formulation rather than the Imagen CFG formulation
            pred_x0 = cond_pred_x0 + w * (cond_pred_x0 - uncond_pred_x0)
            pred_noise = cond_pred_noise + w * (cond_pred_noise - uncond_pred_noise)
            # 4. Run one step of the ODE solver to estimate the next point x_prev on the
            # augmented PF-ODE trajectory (solving backward in time)
            # Note that the DDIM step depends on both the predicted x_0 and source noise eps_0.
            x_prev = solver.ddim_step(pred_x0, pred_noise, index)

    # 9. Get target LCM prediction on x_prev, w, c, t_n (timesteps)
    # Note that we do not use a separate target network for LCM-LoRA distillation.
    with torch.no_grad():
        with autocast_ctx:
            target_noise_pred = unet(
                x_prev.float(),
                timesteps,
                timestep_cond=None,
                encoder_hidden_states=prompt_embeds.float(),
            ).sample
        pred_x_0 = get_predicted_original_sample(
            target_noise_pred,
            timesteps,
            x_prev,
            noise_scheduler.config.prediction_type,
            alpha_schedule,
            sigma_schedule,
        )
        target = c_skip * x_prev + c_out * pred_x_0

    # 10. Calculate loss
    if args.loss_type == "l2":
        loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
    elif args.loss_type == "huber":
        loss = torch.mean(
            torch.sqrt((model_pred.float() - target.float()) ** 2 + args.huber_c**2) - args.huber_c
        )
    return loss
