"""LCM Model: the prediction type, grid N and gamma the stock KSampler honours, and a full LCM's guidance embedding.

Combining with core's ModelSamplingDiscrete("lcm"): not needed, and this node replaces it (core's variant is
epsilon-only with N fixed at 50). If a workflow keeps core's node after this one, our samplers notice that its
denoiser already applies the LCM boundary condition and do not apply it a second time.
"""

from __future__ import annotations

import comfy.model_sampling
import comfy.samplers
import folder_paths
import torch
from comfy_api.latest import io

from lcm_plugin import core
from lcm_plugin.guidance_projection import guidance_condition, read_guidance_projection
from lcm_plugin.host_options import DEFAULT_ORIGINAL_INFERENCE_STEPS
from lcm_plugin.recipe_sampling import sampling_plan

from .common import CATEGORY, MODEL_OPTIONS_KEY, NODE_ID_PREFIX
from .host import GRID_ATTRIBUTE, RECIPE_ATTRIBUTE, training_alphas_cumprod
from .sampler import sample_lcm_exact

NO_GUIDANCE_FILE = "(none: LCM-LoRA or plain model)"
GUIDANCE_FOLDERS = ("checkpoints", "diffusion_models")


class LCMSamplingEpsilon(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
    """The full discrete schedule with epsilon prediction (the LCM boundary condition is the sampler's job)."""


class LCMSamplingV(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.V_PREDICTION):
    """The full discrete schedule with v-prediction (SD 2.x 768 and v-prediction fine-tunes)."""


class GuidedTimeEmbedding(torch.nn.Sequential):
    """ComfyUI's time-embedding MLP with a full LCM's ``cond_proj(w_embedding)`` added to its input.

    It keeps the MLP's own child modules (same weight names, so LoRA patches on them still apply).
    """

    def __init__(self, time_embed: torch.nn.Sequential, condition: torch.Tensor):
        super().__init__(*time_embed)
        self.guidance_condition = condition  # a plain attribute: not a weight of the model

    def forward(self, t_emb: torch.Tensor) -> torch.Tensor:
        return super().forward(t_emb + self.guidance_condition.to(device=t_emb.device, dtype=t_emb.dtype))


def guidance_files() -> list[str]:
    """``folder/name`` of every .safetensors checkpoint or diffusion model, for the guidance-embedding combo."""
    names = []
    for folder in GUIDANCE_FOLDERS:
        names += [
            f"{folder}/{n}" for n in folder_paths.get_filename_list(folder) if n.endswith(".safetensors")
        ]
    return names


def sampling_for(model, prediction_type: str, original_inference_steps: int, recipe=None):
    """A fresh model_sampling of the chosen prediction type that carries the grid N (and a few-step adapter's
    recipe, if given) for ``lcm_grid`` and ``lcm_exact``."""
    current = model.get_model_object("model_sampling")
    if not isinstance(current, comfy.model_sampling.ModelSamplingDiscrete):
        raise ValueError(
            f"LCM Model: this model samples with {type(current).__name__}; LCM needs a discrete-timestep SD model "
            "(SD 1.x, SD 2.x, SDXL, SSD-1B)."
        )
    if prediction_type == "auto":
        v = isinstance(current, comfy.model_sampling.V_PREDICTION)
    else:
        v = prediction_type == "v_prediction"
    sampling = (LCMSamplingV if v else LCMSamplingEpsilon)(model.model.model_config, zsnr=current.zsnr)
    setattr(sampling, GRID_ATTRIBUTE, original_inference_steps)
    setattr(sampling, RECIPE_ATTRIBUTE, recipe)
    return sampling


def guided_time_embedding(model, file: str, guidance_scale: float) -> GuidedTimeEmbedding:
    """The model's time embedding with the guidance condition of the full LCM ``file`` (``folder/name``)."""
    folder, _, name = file.partition("/")
    if folder not in GUIDANCE_FOLDERS:
        raise ValueError(f"LCM Model: {file!r} is not in {GUIDANCE_FOLDERS}; pick a file from the list.")
    projection = read_guidance_projection(folder_paths.get_full_path_or_raise(folder, name))
    if projection is None:
        raise ValueError(
            f"LCM Model: {name} has no guidance-scale projection (time_embedding.cond_proj.weight), so it is not a "
            f"full LCM checkpoint; choose {NO_GUIDANCE_FILE!r} for an LCM-LoRA or a plain model."
        )
    time_embed = model.get_model_object("diffusion_model.time_embed")
    if isinstance(time_embed, GuidedTimeEmbedding):
        time_embed = torch.nn.Sequential(*time_embed)  # re-patching: replace the earlier condition
    features = time_embed[0].in_features
    if projection.shape[0] != features:
        raise ValueError(
            f"LCM Model: the guidance projection of {name} has {projection.shape[0]} outputs but this model's time "
            f"embedding takes {features}; load the checkpoint this projection belongs to."
        )
    return GuidedTimeEmbedding(time_embed, guidance_condition(projection, guidance_scale))


def with_recipe(model, recognition, steps: int, denoise: float):
    """The model carrying an adapter's recipe, the SAMPLER and SIGMAS that sample it, its CFG and a report.

    The recipe rides on the model (its model_sampling and model_options), so the stock KSampler with ``lcm_exact``
    and ``lcm_grid``, and the LCM Scheduler, follow it too; ``steps`` 0 means the recipe's own.
    """
    recipe = recognition.recipe
    current = model.get_model_object("model_sampling")
    prediction = recipe.prediction_type or ("v_prediction" if isinstance(current, comfy.model_sampling.V_PREDICTION)
                                            else "epsilon")  # fmt: skip
    sampling = sampling_for(model, prediction, recipe.grid_size(), recipe)
    plan = sampling_plan(recipe, steps or None, training_alphas_cumprod(sampling), denoise=denoise)
    patched = model.clone()
    patched.add_object_patch("model_sampling", sampling)
    patched.model_options[MODEL_OPTIONS_KEY] = {**plan.options, "initial_noise": recipe.initial_noise}
    sampler = comfy.samplers.KSAMPLER(
        sample_lcm_exact, extra_options=dict(patched.model_options[MODEL_OPTIONS_KEY])
    )
    report = "\n".join([recognition.notice(), *plan.warnings])
    return patched, sampler, plan.sigmas.float(), plan.cfg, report


class LCMPluginModel(io.ComfyNode):
    """MODEL patch: exact LCM settings for the stock KSampler and the guidance embedding of full LCMs."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{NODE_ID_PREFIX}Model",
            display_name="LCM Model",
            category=CATEGORY,
            description="Use with the KSampler's lcm_exact sampler and lcm_grid scheduler (or the LCM Sampler and "
            "LCM Scheduler nodes). Replaces ModelSamplingDiscrete(lcm): epsilon or v-prediction, any grid N, "
            "TCD gamma, and the guidance-scale embedding that ComfyUI drops from full LCM checkpoints.",
            inputs=[
                io.Model.Input(
                    "model", tooltip="An SD 1.x / 2.x / SDXL / SSD-1B model, with an LCM-LoRA or a full LCM."
                ),
                io.Combo.Input(
                    "prediction_type",
                    options=["auto", "epsilon", "v_prediction"],
                    default="auto",
                    tooltip="What the UNet predicts. auto keeps ComfyUI's detection; SD 2.x 768 models and their "
                    "LCM-LoRAs are v_prediction.",
                ),
                io.Int.Input(
                    "original_inference_steps",
                    default=DEFAULT_ORIGINAL_INFERENCE_STEPS,
                    min=1,
                    max=1000,
                    tooltip="N, the distillation grid size the LCM was trained on (50 for every public LCM).",
                ),
                io.Float.Input(
                    "gamma",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Re-noise strength the KSampler's lcm_exact uses: 1.0 = LCM, 0.3 = TCD, 0 = "
                    "deterministic. An LCM Sampler node's own gamma takes precedence.",
                ),
                io.Combo.Input(
                    "guidance_embedding_file",
                    options=[NO_GUIDANCE_FILE, *guidance_files()],
                    default=NO_GUIDANCE_FILE,
                    tooltip="For a full LCM checkpoint (e.g. LCM-Dreamshaper): the file to read its guidance-scale "
                    "projection from (the checkpoint itself). Then set the sampler's cfg to 1.",
                ),
                io.Float.Input(
                    "guidance_scale",
                    default=8.0,
                    min=1.0,
                    max=30.0,
                    step=0.1,
                    tooltip="Guidance scale embedded into a full LCM (3-13 typical); used only with a guidance file.",
                ),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(
        cls,
        model,
        prediction_type: str,
        original_inference_steps: int,
        gamma: float,
        guidance_embedding_file: str,
        guidance_scale: float,
    ) -> io.NodeOutput:
        core.check_gamma(gamma)
        core.training_grid(original_inference_steps)  # validates N
        patched = model.clone()
        patched.add_object_patch(
            "model_sampling", sampling_for(model, prediction_type, original_inference_steps)
        )
        patched.model_options[MODEL_OPTIONS_KEY] = {
            "original_inference_steps": original_inference_steps,
            "gamma": gamma,
        }
        if guidance_embedding_file != NO_GUIDANCE_FILE:
            patched.add_object_patch(
                "diffusion_model.time_embed",
                guided_time_embedding(model, guidance_embedding_file, guidance_scale),
            )
        return io.NodeOutput(patched)


NODES = [LCMPluginModel]
