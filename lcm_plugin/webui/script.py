"""The "LCM Exact" accordion (an always-visible WebUI script): gamma and N per generation, saved in the infotext.

Imported only inside a WebUI. It stores the raw values on the processing object; :class:`LCMExactSampler` reads
and checks them (``generation_params``) only when it samples, so other samplers never see an error from here.
API: ``"alwayson_scripts": {"LCM Exact": {"args": [gamma, original_steps]}}``.
"""

from __future__ import annotations

import gradio as gr
from modules import scripts

from lcm_plugin.webui.params import (
    DEFAULT_GAMMA,
    DEFAULT_ORIGINAL_INFERENCE_STEPS,
    INFOTEXT_GAMMA,
    INFOTEXT_ORIGINAL_STEPS,
    SAMPLER_LABEL,
)


class LCMExactScript(scripts.Script):
    """Per-generation settings of the "LCM Exact" sampler (ignored by every other sampler)."""

    def title(self):
        return SAMPLER_LABEL

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Accordion(f"{SAMPLER_LABEL} (sampler settings)", open=False):
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
        self.infotext_fields = [(gamma, INFOTEXT_GAMMA), (original_steps, INFOTEXT_ORIGINAL_STEPS)]
        self.paste_field_names = [INFOTEXT_GAMMA, INFOTEXT_ORIGINAL_STEPS]
        return [gamma, original_steps]

    def process(self, p, gamma=None, original_steps=None, *args):
        p.lcm_plugin_values = {"gamma": gamma, "original_inference_steps": original_steps}
