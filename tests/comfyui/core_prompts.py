"""API-format prompts made of ComfyUI core nodes only, for harness smoke tests and as templates for node tests."""

from __future__ import annotations


def txt2img_prompt(
    ckpt_name: str,
    *,
    steps: int = 2,
    sampler_name: str = "lcm",
    scheduler: str = "sgm_uniform",
    cfg: float = 1.0,
    seed: int = 0,
    width: int = 64,
    height: int = 64,
    text: str = "a red fox in snow",
    negative: str = "",
    filename_prefix: str = "lcm_harness",
) -> dict:
    """CheckpointLoaderSimple -> CLIPTextEncode x2 -> EmptyLatentImage -> KSampler -> VAEDecode -> SaveImage.

    Node ids follow ComfyUI's default graph: "4" loader, "6"/"7" prompts, "5" latent, "3" KSampler, "8" decode,
    "9" save; ``["3", 0]`` is the sampled LATENT.
    """
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["4", 1]}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": width, "height": height, "batch_size": 1},
        },
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": cfg,
                "sampler_name": sampler_name,
                "scheduler": scheduler,
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": filename_prefix, "images": ["8", 0]}},
    }
