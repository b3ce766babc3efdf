"""Consistency distillation losses (LCM paper eq. 9; pseudo-Huber from Song & Dhariwal 2023, "Improved
Techniques for Training Consistency Models", section 3.3). The EMA target is diffusers' ``EMAModel``
(:func:`lora_training.models.target_ema`)."""

from __future__ import annotations

import torch


def pseudo_huber(prediction: torch.Tensor, target: torch.Tensor, c: float) -> torch.Tensor:
    """Mean of sqrt((a - b)^2 + c^2) - c, computed in float32."""
    diff = prediction.float() - target.float()
    return (torch.sqrt(diff**2 + c**2) - c).mean()


def consistency_loss(
    prediction: torch.Tensor, target: torch.Tensor, *, loss_type: str, huber_c: float = 0.001
) -> torch.Tensor:
    """The distance d(f_theta(z_{n+k}), f_target(z_n)) of the consistency loss: 'l2' (mean squared error) or 'huber'."""
    if loss_type == "l2":
        return torch.nn.functional.mse_loss(prediction.float(), target.float(), reduction="mean")
    if loss_type == "huber":
        return pseudo_huber(prediction, target, huber_c)
    raise ValueError(f"loss_type {loss_type!r} is not supported; use 'l2' or 'huber'.")
