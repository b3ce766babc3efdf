"""The consistency function of LCM: x0 from a model output and the boundary condition.

Paper: Luo et al. 2023 (arXiv 2310.04378), eq. 4-5 and section 4.2; parameterisations from
Salimans & Ho 2022 (v) and Ho et al. 2020 (epsilon).
"""

from __future__ import annotations

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def check_prediction_type(prediction_type: str) -> None:
    """Raise a ValueError that lists the supported parameterisations."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type {prediction_type!r} is not supported; use one of {PREDICTION_TYPES} "
            "(SD1.x/SDXL: epsilon, SD2.x 768: v_prediction)."
        )


def boundary_condition_scalings(
    timestep: torch.Tensor | float, sigma_data: float = 0.5, timestep_scaling: float = 10.0
) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """(c_skip, c_out) of the consistency parameterisation f = c_skip * x + c_out * x0 (paper eq. 5).

    With s = timestep_scaling * t: c_skip = sigma_data^2 / (s^2 + sigma_data^2), c_out = s / sqrt(s^2 + sigma_data^2),
    so f(x, 0) = x (the boundary condition). ``timestep`` is a diffusers (discrete) timestep.
    """
    scaled = timestep * timestep_scaling
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / (scaled**2 + sigma_data**2) ** 0.5
    return c_skip, c_out


def predicted_original_sample(
    model_output: torch.Tensor, sample: torch.Tensor, alpha_prod_t: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """x0 from the model output at a timestep with cumulative alpha ``alpha_prod_t`` (VP / diffusers space).

    epsilon: x0 = (x - sqrt(1-abar) eps) / sqrt(abar); v: x0 = sqrt(abar) x - sqrt(1-abar) v; sample: x0 = output.
    """
    # In-place updates of fresh temporaries: one allocation per call (this runs on full latents every step).
    if prediction_type == "epsilon":
        return (model_output * -(1 - alpha_prod_t).sqrt()).add_(sample).div_(alpha_prod_t.sqrt())
    if prediction_type == "v_prediction":
        return (sample * alpha_prod_t.sqrt()).sub_(model_output * (1 - alpha_prod_t).sqrt())
    if prediction_type == "sample":
        return model_output
    check_prediction_type(prediction_type)
    raise AssertionError("unreachable")


def predicted_noise(sample: torch.Tensor, denoised: torch.Tensor, alpha_prod_t: torch.Tensor) -> torch.Tensor:
    """The noise that takes ``denoised`` to ``sample`` at cumulative alpha ``alpha_prod_t`` (VP space)."""
    return (sample - alpha_prod_t.sqrt() * denoised) / (1 - alpha_prod_t).sqrt()


def predicted_epsilon(
    model_output: torch.Tensor, sample: torch.Tensor, alpha_prod_t: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """The noise estimate from the model output, per parameterisation (as ``diffusers.TCDScheduler``):
    epsilon: the output itself; v: sqrt(abar) v + sqrt(1-abar) x; sample: (x - sqrt(abar) x0) / sqrt(1-abar)."""
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return alpha_prod_t.sqrt() * model_output + (1 - alpha_prod_t).sqrt() * sample
    if prediction_type == "sample":
        return predicted_noise(sample, model_output, alpha_prod_t)
    check_prediction_type(prediction_type)
    raise AssertionError("unreachable")


def dynamic_threshold(sample: torch.Tensor, ratio: float = 0.995, max_value: float = 1.0) -> torch.Tensor:
    """Dynamic thresholding of x0 (Saharia et al. 2022, Imagen, section 2.3): clamp each sample to its
    ``ratio`` quantile of |x0| (at least 1, at most ``max_value``) and rescale into [-1, 1]."""
    dtype = sample.dtype
    flat = sample.float().reshape(sample.shape[0], -1)
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1, max=max_value).unsqueeze(1)
    return (torch.clamp(flat, -s, s) / s).reshape(sample.shape).to(dtype)


def consistency_output(
    sample: torch.Tensor,
    denoised: torch.Tensor,
    timestep: torch.Tensor | float,
    *,
    sigma_data: float = 0.5,
    timestep_scaling: float = 10.0,
) -> torch.Tensor:
    """f(x, t) = c_skip(t) * x + c_out(t) * x0: the LCM prediction at timestep t (``sample`` in VP space)."""
    c_skip, c_out = boundary_condition_scalings(timestep, sigma_data, timestep_scaling)
    return (denoised * c_out).add_(sample * c_skip)
