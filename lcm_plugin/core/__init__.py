"""The one source of LCM math (torch and numpy only). Host adapters import from here."""

from lcm_plugin.core.consistency import (
    PREDICTION_TYPES,
    boundary_condition_scalings,
    check_prediction_type,
    consistency_output,
    dynamic_threshold,
    predicted_epsilon,
    predicted_noise,
    predicted_original_sample,
)
from lcm_plugin.core.grid import (
    lcm_timesteps,
    strength_tail,
    trailing_timesteps,
    training_grid,
    validate_custom_timesteps,
)
from lcm_plugin.core.guidance import guidance_scale_embedding, guided
from lcm_plugin.core.multistep import (
    CONSISTENCY_FUNCTIONS,
    check_consistency,
    check_gamma,
    intermediate_timestep,
    renoise,
    tcd_intermediate_timestep,
)
from lcm_plugin.core.noise_schedule import (
    add_noise,
    alpha_prod_at,
    alphas_cumprod_from_betas,
    alphas_cumprod_from_sigmas,
    batch_view,
    make_betas,
    nearest_timesteps,
    sd_alphas_cumprod,
    sigma_to_timestep,
    sigmas_from_alphas_cumprod,
    timestep_to_sigma,
)
from lcm_plugin.core.solvers import SOLVERS, check_solver, ddim_step, dpmpp_2m_step, euler_step
from lcm_plugin.core.step_noise import seeded_step_noise

__all__ = [
    "CONSISTENCY_FUNCTIONS",
    "check_consistency",
    "strength_tail",
    "tcd_intermediate_timestep",
    "trailing_timesteps",
    "PREDICTION_TYPES",
    "SOLVERS",
    "check_solver",
    "ddim_step",
    "dpmpp_2m_step",
    "euler_step",
    "add_noise",
    "alpha_prod_at",
    "alphas_cumprod_from_betas",
    "alphas_cumprod_from_sigmas",
    "batch_view",
    "boundary_condition_scalings",
    "check_gamma",
    "check_prediction_type",
    "consistency_output",
    "dynamic_threshold",
    "guidance_scale_embedding",
    "guided",
    "intermediate_timestep",
    "lcm_timesteps",
    "make_betas",
    "nearest_timesteps",
    "predicted_epsilon",
    "predicted_noise",
    "predicted_original_sample",
    "renoise",
    "sd_alphas_cumprod",
    "seeded_step_noise",
    "sigma_to_timestep",
    "sigmas_from_alphas_cumprod",
    "timestep_to_sigma",
    "training_grid",
    "validate_custom_timesteps",
]
