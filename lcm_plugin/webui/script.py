"""The "LCM Exact" accordion (an always-visible WebUI script): recipe, gamma and N per generation, in the infotext.

Imported only inside a WebUI. It stores the raw values on the processing object; :class:`LCMExactSampler` reads
and checks them (``generation_params``) only when it samples, so other samplers never see an error from here.
API: ``"alwayson_scripts": {"LCM Exact": {"args": [gamma, original_steps, recipe, gamma_override]}}`` (the last two
optional: recipe "Auto" = the recipe of a known few-step LoRA in the prompt, "Off", or a recipe name).
"""

from __future__ import annotations

import gradio as gr
from modules import scripts

from lcm_plugin.webui.params import (
    DEFAULT_GAMMA,
    DEFAULT_ORIGINAL_INFERENCE_STEPS,
    INFOTEXT_GAMMA,
    INFOTEXT_GAMMA_OVERRIDE,
    INFOTEXT_ORIGINAL_STEPS,
    INFOTEXT_RECIPE,
    RECIPE_AUTO,
    SAMPLER_LABEL,
    recipe_choices,
)


class LCMExactScript(scripts.Script):
    """Per-generation settings of the "LCM Exact" sampler (ignored by every other sampler)."""

    def title(self):
        return SAMPLER_LABEL

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Accordion(f"{SAMPLER_LABEL} (sampler settings)", open=False):
            recipe = gr.Dropdown(
                choices=recipe_choices(),
                value=RECIPE_AUTO,
                label=f"{INFOTEXT_RECIPE}: Auto = the recipe of the few-step LoRA in the prompt (LCM-LoRA, TCD, "
                "Hyper-SD, PCM, SDXL-Lightning, DMD2); Off = plain LCM with the settings below",
                elem_id=self.elem_id("recipe"),
            )
            gamma_override = gr.Checkbox(
                value=False,
                label="Use this gamma instead of the recipe's",
                elem_id=self.elem_id("gamma_override"),
            )
            gamma = gr.Slider(
                minimum=0.0,
                maximum=1.0,
                step=0.05,
                value=DEFAULT_GAMMA,
                label=f"{INFOTEXT_GAMMA}: 1 = LCM, 0.3 = TCD, 0 = deterministic",
                elem_id=self.elem_id("gamma"),
            )
            original_steps = gr.Number(
                value=DEFAULT_ORIGINAL_INFERENCE_STEPS,
                precision=0,
                label=f"{INFOTEXT_ORIGINAL_STEPS} (the distillation grid N; 50 for every public LCM / LCM-LoRA)",
                elem_id=self.elem_id("original_steps"),
            )
        self.infotext_fields = [
            (gamma, INFOTEXT_GAMMA),
            (original_steps, INFOTEXT_ORIGINAL_STEPS),
            (
                recipe,
                lambda params: params.get(
                    INFOTEXT_RECIPE, "Off" if INFOTEXT_GAMMA in params else RECIPE_AUTO
                ),
            ),
            (gamma_override, lambda params: str(params.get(INFOTEXT_GAMMA_OVERRIDE, False)) == "True"),
        ]
        self.paste_field_names = [
            INFOTEXT_GAMMA,
            INFOTEXT_ORIGINAL_STEPS,
            INFOTEXT_RECIPE,
            INFOTEXT_GAMMA_OVERRIDE,
        ]
        return [gamma, original_steps, recipe, gamma_override]

    def process(self, p, gamma=None, original_steps=None, recipe=None, gamma_override=None, *args):
        p.lcm_plugin_values = {
            "gamma": gamma,
            "original_inference_steps": original_steps,
            "recipe": recipe,
            "gamma_override": gamma_override,
        }
