"""Registry entries of the few-step adapters besides LCM (TCD, Hyper-SD, PCM, SDXL-Lightning, DMD2), and which
recipe (:mod:`lcm_plugin.adapters.recipe_table`) samples each registry entry.

sha256 and sizes are the Git LFS pointers of the authors' repositories (or of byte-identical re-uploads where
named), looked up 2026-11-26; None where no public material states them (shown as "unknown", download unverified).
Sources:

- TCD: huggingface.co/h1t/TCD-SD15-LoRA and /TCD-SDXL-LoRA, blob pages of pytorch_lora_weights.safetensors
  (LFS details: SHA256; sizes shown rounded, 135 MB / 394 MB).
- Hyper-SD: LFS pointers in huggingface.co/ByteDance/Hyper-SD commits 123f4ee0 ("upload SD15 loras") and 2900d279
  ("upload SDXL loras"); the 8-step CFG LoRAs' sha256 from a Nix pin list (github, models/default.nix style
  ``fetchFromHuggingFace`` hashes, whose LCM-LoRA hashes equal the registry's).
- PCM: huggingface.co/wangfuyun/PCM_Weights, files of commit be60d4c3 ("Upload 16 files"; blob pages and the
  commit's LFS pointers).
- SDXL-Lightning: huggingface.co/ByteDance/SDXL-Lightning blob pages (commit 1b39ebb "Add safetensors"); size
  393854592 from the LFS pointers of byte-identical re-uploads (sha256 equal).
- DMD2: huggingface.co/tianweiy/DMD2 blob page of dmd2_sdxl_4step_lora_fp16.safetensors (commit 19179ac, "fix lora
  ckpt"); size 393854592 from re-uploads with the same sha256.
"""

from __future__ import annotations

from lcm_plugin.adapters.registry import KnownAdapter


def _lora(name, repo, filename, arch, sha256=None, size=None, revision="main", notes=""):  # noqa: ANN001
    return KnownAdapter(name, repo, filename, arch, "lora", size, sha256, revision, None, notes)


FEW_STEP_ADAPTERS: tuple[KnownAdapter, ...] = (
    _lora("tcd-sd15", "h1t/TCD-SD15-LoRA", "pytorch_lora_weights.safetensors", "sd15",
          "eaecb24a1cda4411eab67275b1d991071216ac93693e8fa0c9226c9df0386232", notes="TCD-LoRA for SD1.5 (about 135 MB)."),
    _lora("tcd-sdxl", "h1t/TCD-SDXL-LoRA", "pytorch_lora_weights.safetensors", "sdxl",
          "2c777bc60abf41d3eb0fe405d23d73c280a020eea5adf97a82a141592c33feba", notes="TCD-LoRA for SDXL (about 394 MB)."),
    _lora("hyper-sd15-1step", "ByteDance/Hyper-SD", "Hyper-SD15-1step-lora.safetensors", "sd15",
          "a04fd9a535c1e56d38f7590ee72a13fd5ca0409853b4fff021e5a9482cf1ca3b", 269127096, notes="Hyper-SD unified LoRA (TCD, 1-8 steps)."),
    _lora("hyper-sd15-2step", "ByteDance/Hyper-SD", "Hyper-SD15-2steps-lora.safetensors", "sd15",
          "2f26dcc1d883feb07557a552315baae2ca2a04ac08556b08a355a244547e8c3a", 269127064),
    _lora("hyper-sd15-4step", "ByteDance/Hyper-SD", "Hyper-SD15-4steps-lora.safetensors", "sd15",
          "c5dd058616461ed5053e2b14eec4dbe3fa0eea3b13688642f6d6c80ea2ba5958", 269127064),
    _lora("hyper-sd15-8step", "ByteDance/Hyper-SD", "Hyper-SD15-8steps-lora.safetensors", "sd15",
          "91fc3186236e956d64dbb4357f2e120c69b968b78af7d2db9884a5ca74d3cd13", 269127064),
    _lora("hyper-sd15-8step-cfg", "ByteDance/Hyper-SD", "Hyper-SD15-8steps-CFG-lora.safetensors", "sd15",
          "f6123d5b950d5250ab6c33600e27f4dcf71b3099ebf888685e01e9e8117ce482", notes="CFG-preserved (CFG 5-8)."),
    _lora("hyper-sdxl-1step", "ByteDance/Hyper-SD", "Hyper-SDXL-1step-lora.safetensors", "sdxl",
          "c912df184c5116792d2c604d26c6bc2aa916685f4a793755255cda1c43a3c78a", 787359648, notes="Hyper-SD unified LoRA (TCD, 1-8 steps)."),
    _lora("hyper-sdxl-2step", "ByteDance/Hyper-SD", "Hyper-SDXL-2steps-lora.safetensors", "sdxl",
          "69b25c0187ced301c3603c599c0bc509ac99b8ac34db89a2aecc3d5f77a35187", 787359648),
    _lora("hyper-sdxl-4step", "ByteDance/Hyper-SD", "Hyper-SDXL-4steps-lora.safetensors", "sdxl",
          "12f81a27d00a751a40d68fd15597091896c5a90f3bd632fb6c475607cbdad76e", 787359648),
    _lora("hyper-sdxl-8step", "ByteDance/Hyper-SD", "Hyper-SDXL-8steps-lora.safetensors", "sdxl",
          "ca689190e8c46038550384b5675488526cfe5a40d35f82b27acb75c100f417c1", 787359648),
    _lora("hyper-sdxl-8step-cfg", "ByteDance/Hyper-SD", "Hyper-SDXL-8steps-CFG-lora.safetensors", "sdxl",
          "55b51334c85061afff5eff7c550b61963c8b8607a5868bbe4f26db49374719b1", notes="CFG-preserved (CFG 5-8)."),
    KnownAdapter("hyper-sdxl-1step-unet", "ByteDance/Hyper-SD", "Hyper-SDXL-1step-Unet.safetensors", "sdxl", "unet",
                 notes="Full SDXL UNet (about 10.3 GB), sampled at timestep 800; reference only."),
    _lora("pcm-sd15-2step", "wangfuyun/PCM_Weights", "sd15/pcm_sd15_smallcfg_2step_converted.safetensors", "sd15",
          "4c5f27a727d12146de4b1d987cee3343bca89b085d12b03c45297af05ce88ef4"),
    _lora("pcm-sd15-4step", "wangfuyun/PCM_Weights", "sd15/pcm_sd15_smallcfg_4step_converted.safetensors", "sd15",
          "29278bc86274fdfc840961e3c250758ff5e2dc4666d940f103e78630d5b879d3"),
    _lora("pcm-sd15-8step", "wangfuyun/PCM_Weights", "sd15/pcm_sd15_smallcfg_8step_converted.safetensors", "sd15",
          "41a7f0b966d18f643d16c4401f0b5ef6b9ef7362c20e17128322f17874709107"),
    _lora("pcm-sd15-16step", "wangfuyun/PCM_Weights", "sd15/pcm_sd15_smallcfg_16step_converted.safetensors", "sd15",
          "c7ac2fa3df3a5b7080ebe63f259ab13630014f104c93c3c706d77b05cc48506b"),
    _lora("pcm-sd15-16step-cfg", "wangfuyun/PCM_Weights", "sd15/pcm_sd15_normalcfg_16step_converted.safetensors", "sd15",
          "8f605ffde3616592deb37ed8c6bacb83fe98963c1fd0883c2a4f93787098aa45", 134621524, notes="Normal CFG (7.5)."),
    _lora("pcm-sd15-lcmlike", "wangfuyun/PCM_Weights", "sd15/pcm_sd15_lcmlike_lora_converted.safetensors", "sd15",
          "b80b27dd6504f1c3a7637237dda86bc7e26fa5766da30c4fc853c0a1d46bad31", 134621524),
    _lora("pcm-sdxl-2step", "wangfuyun/PCM_Weights", "sdxl/pcm_sdxl_smallcfg_2step_converted.safetensors", "sdxl",
          "e1f600491bb8e0cd94f41144321e44fdb2cb346447f31e71f6e53f1c24cccfbf"),
    _lora("pcm-sdxl-4step", "wangfuyun/PCM_Weights", "sdxl/pcm_sdxl_smallcfg_4step_converted.safetensors", "sdxl",
          "212150d7953627fb89df99aad579d6763645a1cb2ef26b19fee8b398d5e5ff4d"),
    _lora("pcm-sdxl-8step", "wangfuyun/PCM_Weights", "sdxl/pcm_sdxl_smallcfg_8step_converted.safetensors", "sdxl",
          "56ed9dc9f51f4bb0d6172e13b7947f215c347fc0da341c8951b2c12b9507d09e"),
    _lora("pcm-sdxl-16step", "wangfuyun/PCM_Weights", "sdxl/pcm_sdxl_smallcfg_16step_converted.safetensors", "sdxl",
          "3442eff271aa3b60a094fd6f9169d03e49e4051044a974f6fcf690507959191f"),
    _lora("pcm-sdxl-4step-cfg", "wangfuyun/PCM_Weights", "sdxl/pcm_sdxl_normalcfg_4step_converted.safetensors", "sdxl",
          "9f7f13bb019925eacd89aeff678e4fd831f7b60245b986855dff6634aee4eba9", notes="Normal CFG (7.5)."),
    _lora("lightning-sdxl-2step", "ByteDance/SDXL-Lightning", "sdxl_lightning_2step_lora.safetensors", "sdxl",
          "04fafc778385b24144498a8247498ae4fb7a69f702ea0566bdce2845a31fcc43"),
    _lora("lightning-sdxl-4step", "ByteDance/SDXL-Lightning", "sdxl_lightning_4step_lora.safetensors", "sdxl",
          "bf56cf2657efb15e465d81402ed481d1e11c4677e4bcce1bc11fe71ad8506b79", 393854592),
    _lora("lightning-sdxl-8step", "ByteDance/SDXL-Lightning", "sdxl_lightning_8step_lora.safetensors", "sdxl",
          "5aa30d94cdf7950a8b53a693682650ee061eddb128c5435a8f88defea73b2ac6", 393854592),
    _lora("dmd2-sdxl-4step", "tianweiy/DMD2", "dmd2_sdxl_4step_lora_fp16.safetensors", "sdxl",
          "b3d9173815a4b595991c3a7a0e0e63ad821080f314a0b2a3cc31ecd7fcf2cbb8", 393854592),
)  # fmt: skip

# Registry entry name -> recipe name (lcm_plugin.adapters.recipe_table.RECIPES).
RECIPE_OF: dict[str, str] = {
    "lcm-lora-sd15": "lcm-lora",
    "lcm-lora-sdxl": "lcm-lora",
    "lcm-lora-ssd-1b": "lcm-lora",
    "lcm-lora-toy": "lcm-lora",
    "lcm-dreamshaper-v7": "lcm-full",
    "lcm-sdxl": "lcm-full",
    "lcm-ssd-1b": "lcm-full",
    "tcd-sd15": "tcd",
    "tcd-sdxl": "tcd",
    "hyper-sd15-1step": "hyper-1step-unified",
    "hyper-sdxl-1step": "hyper-1step-unified",
    **{f"hyper-{a}-{n}step": f"hyper-nstep-{n}" for a in ("sd15", "sdxl") for n in (2, 4, 8)},
    "hyper-sd15-8step-cfg": "hyper-nstep-8-cfg",
    "hyper-sdxl-8step-cfg": "hyper-nstep-8-cfg",
    "hyper-sdxl-1step-unet": "hyper-sdxl-1step-unet",
    **{f"pcm-{a}-{n}step": f"pcm-smallcfg-{n}" for a in ("sd15", "sdxl") for n in (2, 4, 8, 16)},
    "pcm-sd15-16step-cfg": "pcm-normalcfg-16",
    "pcm-sdxl-4step-cfg": "pcm-normalcfg-4",
    "pcm-sd15-lcmlike": "pcm-lcmlike",
    **{f"lightning-sdxl-{n}step": f"lightning-{n}step" for n in (2, 4, 8)},
    "dmd2-sdxl-4step": "dmd2-4step",
}
