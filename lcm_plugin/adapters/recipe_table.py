"""The recipes of the known few-step adapters, every value with the authors' source (looked up 2026-11-26).

What the authors' diffusers code does decides each recipe (the issue's exactness target), including where it differs
from what a reader would guess; these findings are checked against diffusers 0.42.1 by tests/recipes:

- ``timestep_spacing`` is a dead config key in ``LCMScheduler`` and ``TCDScheduler`` (declared, never read), so
  Hyper-SD's 1-step UNet (``LCMScheduler(..., timestep_spacing="trailing")`` + ``timesteps=[800]``) runs [800] and
  PCM (``TCDScheduler(..., timestep_spacing="trailing")``) runs on the LCM grid of N = 50.
- The SD/SDXL pipelines pass their ``eta`` argument (default 0.0) to any scheduler whose ``step`` takes one: PCM's
  demo passes none, so TCD runs with eta 0 there; TCD's and Hyper-SD's examples pass ``eta=0.3`` / ``eta=1.0``.
- DDIM's ``set_alpha_to_one`` is False in the SD1.5 and SDXL scheduler configs: its last step ends at timestep 0
  (= TCD's update with gamma 0). ``EulerDiscreteScheduler`` with trailing spacing starts from sigma_max * noise.
- DMD2's [999, 749, 499, 249] is the LCM grid of N = 4 and the trailing spacing of 4 steps.
"""

from __future__ import annotations

from lcm_plugin.adapters.recipes import Recipe, Source

LCM_LORA_CARD = "https://huggingface.co/latent-consistency/lcm-lora-sdv1-5/blob/ebd29df9d39812b77150d37cfe73baf341460d6c/README.md"
TCD_README = "https://github.com/jabir-zheng/TCD/blob/1d1566df1e5155cce5c35016064a12e374ff9d87/README.md"
HYPER_CARD = "https://huggingface.co/ByteDance/Hyper-SD/commit/831b8638bb0189829f00a87958b6a5fae15d92bc"
HYPER_NEWS = (
    "https://huggingface.co/ByteDance/Hyper-SD/blob/a08b9c3da8dc3be0a6e79b04721bf237241403f9/README.md"
)
HYPER_SPACE = "https://github.com/camenduru/Hyper-SDXL-1Step-T2I-hf/blob/c491c89b6fcce6263aa69f58d3fbf0b22e2f27ee/app.py"
HYPER_NODE = (
    "https://huggingface.co/ByteDance/Hyper-SD/blob/main/comfyui/ComfyUI-HyperSDXL1StepUnetScheduler/node.py"
)
PCM_DEMO = "https://github.com/G-U-N/Phased-Consistency-Model/blob/58658b68e1e0e3ec5871fa10c22a97aa3baed4ac/demo/app.py"
LIGHTNING_CARD = (
    "https://huggingface.co/ByteDance/SDXL-Lightning/commit/7374c773022b6d1872d66970b030721625521c67"
)
DMD2_CARD = "https://huggingface.co/tianweiy/DMD2 (README.md, 'Usage')"
DIFFUSERS_TCD = (
    "diffusers 0.42.1 src/diffusers/schedulers/scheduling_tcd.py (TCDScheduler.set_timesteps / step)"
)
DIFFUSERS_PIPE = "diffusers 0.42.1 StableDiffusion(XL)Pipeline.__call__(eta=0.0) -> prepare_extra_step_kwargs"

_LCM_GRID_EXAMPLE = (
    "LCMScheduler.set_timesteps(n): n evenly indexed entries of the N = 50 grid (4 -> 999,759,499,259)"
)


def _lcm_lora() -> Recipe:
    return Recipe(
        name="lcm-lora",
        title="LCM-LoRA (Luo et al. 2023), SD1.5 / SDXL / SSD-1B",
        step_range=(2, 8),
        cfg=1.0,
        cfg_range=(1.0, 2.0),
        authors_code="pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config); pipe(..., num_inference_steps=4)",
        sources=(
            Source(
                LCM_LORA_CARD,
                "the scheduler needs to be changed to LCMScheduler and we can reduce the number of "
                "inference steps to just 2 to 8 steps. Please make sure to either disable guidance_scale or use "
                "values between 1.0 and 2.0.",
            ),  # fmt: skip
            Source(
                DIFFUSERS_TCD.replace("scheduling_tcd.py (TCDScheduler", "scheduling_lcm.py (LCMScheduler"),
                _LCM_GRID_EXAMPLE + "; original_inference_steps defaults to 50",
            ),  # fmt: skip
        ),
        unverified=(
            "lora_scale: the cards load the LoRA at diffusers' default weight 1.0 and state no other",
        ),
    )


def _lcm_full() -> Recipe:
    return Recipe(
        name="lcm-full",
        title="Full LCM checkpoint with the guidance embedding (LCM Dreamshaper v7, LCM-SDXL, LCM-SSD-1B)",
        step_range=(1, 8),
        cfg=8.0,
        cfg_range=(3.0, 13.0),
        authors_code="LatentConsistencyModelPipeline(..., num_inference_steps=4, guidance_scale=8.0)",
        sources=(
            Source(
                "https://huggingface.co/spaces/LennyHood/SimianLuo-LCM_Dreamshaper_v7/blob/057d20433d0d7808c9135e1f0ba992806ffd2d51/app.py",
                "num_inference_steps 4, guidance_scale 8 for SimianLuo/LCM_Dreamshaper_v7 (a third-party Space)",
            ),  # fmt: skip
            Source(
                "../shared/LCM_REFERENCE.md section 5", "Recommended ranges: full LCM 3-13, LCM-LoRA 1-2."
            ),
        ),
        unverified=(
            "cfg and cfg_range: the checkpoints' own cards were not retrieved; values from a Space and the LCM paper",
        ),
    )


def _tcd() -> Recipe:
    return Recipe(
        name="tcd",
        title="TCD-LoRA (Zheng et al. 2024), SD1.5 / SDXL",
        consistency="tcd",
        gamma=0.3,
        step_range=(4, 50),
        cfg=1.0,
        cfg_range=(1.0, 1.0),
        authors_code="pipe.scheduler = TCDScheduler.from_config(pipe.scheduler.config); "
        "pipe(..., num_inference_steps=4, guidance_scale=0, eta=0.3)",
        sources=(
            Source(
                TCD_README,
                "TCDScheduler.from_config(pipe.scheduler.config) ... num_inference_steps=4, "
                "guidance_scale=0, eta=0.3 ('A value of 0.3 often yields good results. We recommend using a higher "
                "eta when increasing the number of inference steps'); 8 steps in the community-model and inpainting "
                "examples; pipe.fuse_lora() at the default scale 1.0",
            ),  # fmt: skip
            Source(
                DIFFUSERS_TCD,
                "TCD timesteps: n evenly indexed entries of the N = 50 grid (same as LCMScheduler)",
            ),
            Source(
                "https://huggingface.co/docs/diffusers/using-diffusers/inference_with_tcd_lora",
                "num_inference_steps between 4 and 50; eta (controls the stochasticity at every step) between 0 "
                "and 1; increase eta with the number of steps",
            ),  # fmt: skip
        ),
    )


def _hyper_nstep(n: int, *, cfg_lora: bool = False) -> Recipe:
    cfg_sources = (
        Source(HYPER_NEWS, "CFG-Preserved Hyper-SDXL-8steps-CFG-LoRA and Hyper-SD15-8steps-CFG-LoRA ... (support 5~8 "
               "guidance scales)"),
        Source("https://huggingface.co/ByteDance/Hyper-SD/discussions/32", "maintainer: 'You would need to set the cfg "
               "scale (5~8) for CFG LoRA.'"),
    ) if cfg_lora else ()  # fmt: skip
    return Recipe(
        name=f"hyper-nstep-{n}" + ("-cfg" if cfg_lora else ""),
        title=f"Hyper-SD {n}-step LoRA" + (" (CFG-preserved)" if cfg_lora else "") + ", SD1.5 / SDXL",
        consistency="tcd",
        gamma=0.0,
        spacing="trailing",
        fixed_steps=(n,),
        step_range=(n, n),
        default_steps=n,
        cfg=5.0 if cfg_lora else 1.0,
        cfg_range=(5.0, 8.0) if cfg_lora else (1.0, 1.0),
        authors_code='pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing"); '
        f"pipe(..., num_inference_steps={n}, guidance_scale={5 if cfg_lora else 0})",
        sources=(
            Source(
                HYPER_CARD,
                "# Ensure ddim scheduler timestep spacing set as trailing !!! pipe.scheduler = "
                'DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing") ... '
                "pipe(prompt=prompt, num_inference_steps=2, guidance_scale=0) (2-steps LoRA as the example; "
                "pipe.fuse_lora() at scale 1.0)",
            ),  # fmt: skip
            Source(
                DIFFUSERS_PIPE,
                "DDIM gets eta=0.0; SD/SDXL scheduler configs have set_alpha_to_one=false, so the "
                "last step ends at timestep 0: TCD's update with gamma 0 on trailing timesteps",
            ),  # fmt: skip
            *cfg_sources,
        ),
        unverified=(
            "cfg 5.0 as the default of the CFG-preserved LoRA (the card's code for it was not retrieved)",
        )
        if cfg_lora
        else (),
    )


def _hyper_unified() -> Recipe:
    return Recipe(
        name="hyper-1step-unified",
        title="Hyper-SD unified 1-step LoRA (TCD sampling, 1-8 steps), SD1.5 / SDXL",
        consistency="tcd",
        gamma=1.0,
        step_range=(1, 8),
        default_steps=1,
        authors_code="pipe.scheduler = TCDScheduler.from_config(pipe.scheduler.config); "
        "pipe(..., num_inference_steps=1, guidance_scale=0, eta=1.0)",
        sources=(
            Source(
                HYPER_CARD,
                "# Use TCD scheduler to achieve better image quality; pipe.scheduler = "
                "TCDScheduler.from_config(pipe.scheduler.config); # Lower eta results in more detail for "
                "multi-steps inference; eta=1.0; pipe(prompt=prompt, num_inference_steps=1, guidance_scale=0, eta=eta)",
            ),  # fmt: skip
            Source(
                HYPER_NEWS,
                "ComfyUI workflows on 1-Step Unified LoRA with TCDScheduler to inference on different "
                "steps ... You're encouraged to adjust the eta parameter",
            ),  # fmt: skip
        ),
        unverified=("step_range 1-8: the card says 'different steps' without an upper bound",),
    )


def _hyper_unet() -> Recipe:
    return Recipe(
        name="hyper-sdxl-1step-unet",
        title="Hyper-SDXL 1-step UNet (full UNet checkpoint)",
        spacing="explicit",
        timesteps={1: (800,)},
        fixed_steps=(1,),
        step_range=(1, 1),
        default_steps=1,
        authors_code='pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing"); '
        "pipe(..., num_inference_steps=1, guidance_scale=0, timesteps=[800])",
        sources=(
            Source(
                HYPER_SPACE,
                'LCMScheduler.from_config(pipe.scheduler.config, timestep_spacing ="trailing") ... '
                "num_inference_steps=1, guidance_scale=0., timesteps=[800] (the authors' Space, mirrored)",
            ),  # fmt: skip
            Source(
                HYPER_NODE,
                "HyperSDXL1StepUnetScheduler: timesteps = torch.tensor([800]); sigmas = "
                "model_sampling.sigma(timesteps) + a final 0",
            ),  # fmt: skip
        ),
    )


def _pcm(n: int, *, normal_cfg: bool = False) -> Recipe:
    kind = "normalcfg" if normal_cfg else "smallcfg"
    return Recipe(
        name=f"pcm-{kind}-{n}",
        title=f"PCM {n}-step LoRA ({'normal' if normal_cfg else 'small'} CFG), SD1.5 / SDXL",
        consistency="tcd",
        gamma=0.0,
        fixed_steps=(n,),
        step_range=(n, n),
        default_steps=n,
        cfg=7.5 if normal_cfg else 1.0,
        cfg_range=(7.5, 7.5) if normal_cfg else (1.0, 1.0),
        authors_code="pipe.scheduler = TCDScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, "
        'beta_schedule="scaled_linear", timestep_spacing="trailing"); '
        f"pipe(prompt, num_inference_steps={n}, guidance_scale={7.5 if normal_cfg else 0.0})",
        sources=(
            Source(
                PCM_DEMO,
                f'checkpoints "pcm_{{}}_{kind}_{n}step_converted.safetensors", {n}, '
                f"{7.5 if normal_cfg else 0.0}; TCDScheduler(..., timestep_spacing='trailing'); steps slider not "
                "interactive (fixed); no eta passed",
            ),  # fmt: skip
            Source(DIFFUSERS_PIPE, "no eta in the call -> the pipeline's eta=0.0 reaches TCDScheduler.step"),
            Source(DIFFUSERS_TCD, "timestep_spacing is never read: timesteps are the N = 50 LCM grid"),
        ),
        unverified=("cfg_range of the normal-CFG LoRAs (the demo fixes 7.5)",) if normal_cfg else (),
    )


def _pcm_lcmlike() -> Recipe:
    return Recipe(
        name="pcm-lcmlike",
        title="PCM LCM-like LoRA, SD1.5 / SDXL",
        step_range=(1, 8),
        authors_code="pipe.scheduler = LCMScheduler(); pipe(prompt, num_inference_steps=4, guidance_scale=0.0)",
        sources=(
            Source(
                PCM_DEMO,
                '"LCM-Like LoRA": ["pcm_{}_lcmlike_lora_converted.safetensors", 4, 0.0]; '
                "pipe.scheduler = LCMScheduler(); steps slider interactive",
            ),
        ),  # fmt: skip
        unverified=("step_range 1-8 (the demo's slider allows 1-20 and suggests 4)",),
    )


def _lightning(n: int) -> Recipe:
    return Recipe(
        name=f"lightning-{n}step",
        title=f"SDXL-Lightning {n}-step LoRA (Lin et al. 2024)",
        gamma=0.0,
        boundary_condition=False,
        initial_noise="sigma_max",
        spacing="trailing",
        fixed_steps=(n,),
        step_range=(n, n),
        default_steps=n,
        authors_code='pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing"); '
        f"pipe(..., num_inference_steps={n}, guidance_scale=0)",
        sources=(
            Source(
                LIGHTNING_CARD,
                '2-Step, 4-Step, 8-Step LoRA ... EulerDiscreteScheduler ... pipe("A girl smiling", '
                'num_inference_steps=4, guidance_scale=0); "Please always use the correct checkpoint for the '
                'corresponding inference steps"; ComfyUI: "Please use Euler sampler with sgm_uniform scheduler"',
            ),  # fmt: skip
            Source(
                "https://huggingface.co/ByteDance/SDXL-Lightning/blob/c9a24f48e1c025556787b0c58dd67a091ece2e44/README.md",
                '# Ensure sampler uses "trailing" timesteps. ... timestep_spacing="trailing"; pipe.fuse_lora()',
            ),  # fmt: skip
            Source(
                "diffusers 0.42.1 EulerDiscreteScheduler.init_noise_sigma",
                "trailing spacing: init_noise_sigma = max(sigmas) (x_T = sigma_max * noise)",
            ),  # fmt: skip
        ),
    )


def _dmd2() -> Recipe:
    return Recipe(
        name="dmd2-4step",
        title="DMD2 SDXL 4-step LoRA (Yin et al. 2024)",
        spacing="explicit",
        timesteps={4: (999, 749, 499, 249)},
        fixed_steps=(4,),
        step_range=(4, 4),
        default_steps=4,
        authors_code="pipe.fuse_lora(lora_scale=1.0); pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config); "
        "pipe(..., num_inference_steps=4, guidance_scale=0, timesteps=[999, 749, 499, 249])",
        sources=(
            Source(
                DMD2_CARD,
                "4-step LoRA generation: dmd2_sdxl_4step_lora_fp16.safetensors; pipe.fuse_lora("
                "lora_scale=1.0)  # we might want to make the scale smaller for community models; LCMScheduler; "
                "# LCMScheduler's default timesteps are different from the one we used for training; "
                "num_inference_steps=4, guidance_scale=0, timesteps=[999, 749, 499, 249]",
            ),  # fmt: skip
        ),
    )


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        _lcm_lora(),
        _lcm_full(),
        _tcd(),
        *(_hyper_nstep(n) for n in (2, 4, 8)),
        _hyper_nstep(8, cfg_lora=True),
        _hyper_unified(),
        _hyper_unet(),
        *(_pcm(n) for n in (2, 4, 8, 16)),
        *(_pcm(n, normal_cfg=True) for n in (4, 8, 16)),
        _pcm_lcmlike(),
        *(_lightning(n) for n in (2, 4, 8)),
        _dmd2(),
    )
}

DEFAULT_RECIPE = "lcm-lora"  # unknown adapters: plain LCM


def get(name: str) -> Recipe:
    """A recipe by name; ValueError lists the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; known recipes: {', '.join(RECIPES)}") from None
