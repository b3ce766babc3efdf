"""The LCM-LoRA Loader inside a real ComfyUI (a subprocess; see comfy_child.py), on a random SD15-detected model.

Proves: a kohya file, diffusers' own file and a raw peft file of one adapter patch every one of its 96 weights,
kohya and diffusers give bit-identical patched weights, equal to ComfyUI's stock LoraLoader on the kohya file
and to W + (alpha / rank) * B @ A; the stock loader skips the diffusers file's attention keys exactly as
``for_comfyui.comfy_unloaded_keys`` predicts; a registry download (from a loopback server, sha256 registered
through LCM_PLUGIN_ADAPTERS_FILE) lands in ``loras`` with ComfyUI progress-bar updates and is reused without a
second request; a download cancelled from the UI and each bad input fail with their message and leave
nothing in ``loras``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.adapters.comfy_reference import diffusers_to_ldm_map
from tests.adapters.servers import FileServer
from tests.adapters.test_download import lora_bytes
from tests.comfyui_lora.lora_files import (
    ALPHA,
    ONE_LEVEL_COMFY_CONFIG,
    RANK,
    expected_deltas,
    one_level_peft_lora,
    pickle_bytes,
    registry_file,
    save_diffusers_lora,
    save_kohya_lora,
    save_raw_peft_lora,
    sdxl_kohya_bytes,
    sha256,
    two_level_kohya_bytes,
)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
COMFYUI = Path(
    os.environ.get("LCM_PLUGIN_COMFYUI_PATH") or REPO_ROOT.parent / "shared" / "comfyui" / "ComfyUI"
).resolve()
MODULES = 96
REPO, FILE = "test-org/tiny-lcm-lora-sd15", "pytorch_lora_weights.safetensors"

pytestmark = [
    pytest.mark.skipif(
        not (COMFYUI / "main.py").is_file(),
        reason=f"no ComfyUI checkout at {COMFYUI} (set LCM_PLUGIN_COMFYUI_PATH to one)",
    ),
    pytest.mark.slow,  # ~45 s on 2 cores: one ComfyUI process running every case
]

CASES = [
    ("kohya", "lcm_kohya.safetensors", "ours"),
    ("diffusers", "lcm_diffusers.safetensors", "ours"),
    ("peft", "lcm_peft.safetensors", "ours"),
    ("stock_kohya", "lcm_kohya.safetensors", "stock"),
    ("stock_diffusers", "lcm_diffusers.safetensors", "stock"),
    ("cancelled", "[download] tiny-lcm-lora-sd15", "ours"),
    ("download", "[download] tiny-lcm-lora-sd15", "ours"),
    ("download_again", "[download] tiny-lcm-lora-sd15", "ours"),
    ("other_arch", "lcm_sdxl.safetensors", "ours"),
    ("other_arch_download", "[download] lcm-lora-sdxl", "ours"),
    ("corrupt", "corrupt.safetensors", "ours"),
    ("truncated", "truncated.safetensors", "ours"),
    ("pickle", "evil.pt", "ours"),
    ("escape", "../../x.safetensors", "ours"),
    ("unknown", "[download] lcm-lora-sd3", "ours"),
    ("cut", "[download] tiny-cut", "ours"),
    ("bad_sha", "[download] tiny-bad-sha", "ours"),
    ("partial", "two_levels.safetensors", "ours"),
]
ERRORS = {
    "cancelled": r"InterruptProcessingException: $",
    "other_arch": r"ValueError: lcm_sdxl.safetensors is a LoRA for Stable Diffusion XL \(.*\), but the MODEL is "
    r"Stable Diffusion 1.x \(SD15\); pick a LoRA made for Stable Diffusion 1.x",
    "other_arch_download": r"ValueError: lcm-lora-sdxl is for Stable Diffusion XL, but the MODEL is Stable "
    r"Diffusion 1.x; pick a \[download\] adapter for Stable Diffusion 1.x",
    "corrupt": r"ValueError: corrupt.safetensors is not a safetensors file",
    "truncated": r"ValueError: truncated.safetensors is truncated: tensors need \d+ bytes, file has \d+",
    "pickle": r"ValueError: evil.pt is a zip archive \(torch.save format, i.e. pickle inside\), not safetensors; "
    r"refusing to unpickle it",
    "escape": r"ValueError: LoRA name '../../x.safetensors' points outside the loras folder",
    "unknown": r"ValueError: unknown adapter 'lcm-lora-sd3'; known adapters: lcm-lora-sd15, lcm-lora-sdxl, "
    r"lcm-lora-ssd-1b, tcd-sd15, .*, tiny-lcm-lora-sd15, tiny-cut, tiny-bad-sha",
    "cut": r"RuntimeError: download of http://127.0.0.1:\d+/test-org/cut/resolve/main/\S+ failed after 3 "
    r"resumptions \(connection closed after \d+ of \d+ bytes\); nothing was kept",
    "bad_sha": r"ValueError: http://\S+: sha256 [0-9a-f]{64} does not match the expected [0-9a-f]{64}",
    "partial": r"ValueError: 3 of 6 keys of two_levels.safetensors would not be loaded into this SD15 model "
    r"\(e.g. lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.alpha",
}


class CutEveryTime(dict):
    def pop(self, key, default=None):
        return self.get(key, default)


@pytest.fixture(scope="module")
def lora():
    return one_level_peft_lora()


@pytest.fixture(scope="module")
def comfy_run(tmp_path_factory, lora):
    """Lay out a ComfyUI base directory, serve the registry files, run every case in one ComfyUI process."""
    sd, cfg = lora
    base = tmp_path_factory.mktemp("comfy_base")
    loras, out = base / "models" / "loras", base / "out"
    for d in (loras, out, base / "custom_nodes"):
        d.mkdir(parents=True)
    (base / "custom_nodes" / "lcm-plugin").symlink_to(REPO_ROOT, target_is_directory=True)
    save_kohya_lora(sd, loras / "lcm_kohya.safetensors")
    diffusers_file = save_diffusers_lora(sd, cfg, loras / "lcm_diffusers.safetensors")
    save_raw_peft_lora(sd, loras / "lcm_peft.safetensors")
    (loras / "lcm_sdxl.safetensors").write_bytes(sdxl_kohya_bytes())
    (loras / "corrupt.safetensors").write_bytes(b"\xff" * 4096)
    kohya_bytes = (loras / "lcm_kohya.safetensors").read_bytes()
    (loras / "truncated.safetensors").write_bytes(kohya_bytes[: len(kohya_bytes) // 2])
    (loras / "evil.pt").write_bytes(pickle_bytes(base / "evil.pt"))
    (loras / "two_levels.safetensors").write_bytes(two_level_kohya_bytes())
    placed = sorted(p.name for p in loras.iterdir())
    served = diffusers_file.read_bytes()
    with FileServer() as server:
        server.add_hub_file(REPO, FILE, served, etag=sha256(served))
        server.add_hub_file("test-org/cut", FILE, served, etag=sha256(served))
        server.cut_once = CutEveryTime({f"/test-org/cut/resolve/main/{FILE}": 20000})
        server.add_hub_file("test-org/bad-sha", FILE, lora_bytes(768), etag="x")
        entries = [
            {"name": "tiny-lcm-lora-sd15", "repo_id": REPO, "size": len(served)},
            {"name": "tiny-cut", "repo_id": "test-org/cut"},
            {"name": "tiny-bad-sha", "repo_id": "test-org/bad-sha"},
        ]
        for e in entries:
            e.update(filename=FILE, arch="sd15", sha256=sha256(served))
        adapters = registry_file(base / "adapters.json", entries)
        spec = {
            "comfyui": str(COMFYUI),
            "base": str(base),
            "pack": str(base / "custom_nodes" / "lcm-plugin"),
            "out": str(out),
            "cases": [
                {"id": i, "lora_name": n, "node": node, "interrupt": i == "cancelled"} for i, n, node in CASES
            ],
        }
        (base / "spec.json").write_text(json.dumps(spec))
        env = dict(
            os.environ,
            HF_ENDPOINT=server.url,
            LCM_PLUGIN_ADAPTERS_FILE=str(adapters),
            PYTHONDONTWRITEBYTECODE="1",
            OMP_NUM_THREADS="1",
        )
        env.pop("HF_HUB_OFFLINE", None)
        proc = subprocess.run(
            [sys.executable, str(HERE / "comfy_child.py"), str(base / "spec.json")],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=str(base),
        )
        requests = list(server.requests)
    assert proc.returncode == 0, proc.stderr[-4000:]
    reply = json.loads(proc.stdout.strip().splitlines()[-1])
    results = {r["id"]: r for r in reply["results"]}
    return {
        "results": results,
        "object_info": reply["object_info"],
        "out": out,
        "loras_before": placed,
        "loras_after": sorted(p.name for p in loras.iterdir()),
        "requests": requests,
        "served": served,
        "stderr": proc.stderr,
    }


def _weights(run, case: str) -> dict[str, torch.Tensor]:
    return load_file(str(run["out"] / f"{case}.safetensors"))


def test_every_format_patches_every_weight(comfy_run):
    for case in ("kohya", "diffusers", "peft", "stock_kohya", "download"):
        res = comfy_run["results"][case]
        assert res["ok"], res
        assert res["patched"] == MODULES and res["not_loaded"] == [], case


def test_kohya_and_diffusers_files_give_identical_weights_equal_to_comfyuis_own_loader(comfy_run):
    kohya = _weights(comfy_run, "kohya")
    for other in ("diffusers", "stock_kohya", "download"):
        got = _weights(comfy_run, other)
        assert got.keys() == kohya.keys(), other
        assert all(torch.equal(got[k], kohya[k]) for k in kohya), other


@pytest.mark.parametrize("case, scale", [("kohya", ALPHA / RANK), ("peft", 1.0)])
def test_patched_weights_are_the_base_plus_the_lora_update(comfy_run, lora, case, scale):
    sd, _ = lora
    base, got = load_file(str(comfy_run["out"] / "base.safetensors")), _weights(comfy_run, case)
    to_ldm = diffusers_to_ldm_map(ONE_LEVEL_COMFY_CONFIG)
    deltas = expected_deltas(sd, scale)
    assert len(deltas) == MODULES
    for module, delta in deltas.items():
        key = f"diffusion_model.{to_ldm[module]}.weight"
        torch.testing.assert_close(got[key] - base[key], delta.reshape(base[key].shape), rtol=0, atol=1e-5)


def test_stock_loader_skips_diffusers_attention_keys_as_predicted(comfy_run):
    res = comfy_run["results"]["stock_diffusers"]
    assert res["ok"] and res["not_loaded"], res  # ComfyUI applies the LoRA partially ...
    assert any(".attn1.to_q." in k for k in res["not_loaded"])
    assert res["patched"] < MODULES  # ... which is what our loader refuses to do
    assert res["predicted"] == res["not_loaded"]  # our re-statement of ComfyUI's rule agrees with ComfyUI


def test_registry_download_lands_in_loras_with_progress_and_is_reused(comfy_run):
    res = comfy_run["results"]
    size = len(comfy_run["served"])
    assert res["download"]["progress"][-1] == [size, size]
    assert len(res["download"]["progress"]) >= 2
    assert res["download_again"]["ok"] and res["download_again"]["progress"] == []
    gets = [r for r in comfy_run["requests"] if r[0] == "GET" and r[1] == f"/{REPO}/resolve/main/{FILE}"]
    assert len(gets) == 2  # cancelled at its first chunk, then once; the third run found the installed file
    assert res["cancelled"]["progress"] == []
    assert not any("lcm-latent-consistency" in r[1] or "lcm-lora-sdxl" in r[1] for r in comfy_run["requests"])


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_input_fails_with_its_message(comfy_run, case):
    import re

    res = comfy_run["results"][case]
    assert not res["ok"]
    assert re.match(ERRORS[case], res["error"]), res["error"]


def test_nothing_half_written_is_left_in_loras(comfy_run):
    assert comfy_run["loras_after"] == sorted([*comfy_run["loras_before"], "tiny-lcm-lora-sd15.safetensors"])


def test_object_info_lists_files_and_downloads_with_a_tooltip_on_every_input(comfy_run):
    info = comfy_run["object_info"]
    assert (info["name"], info["display_name"], info["category"]) == (
        "LCMPluginLoraLoader",
        "LCM-LoRA Loader",
        "sampling/lcm_plugin",
    )
    required, optional = info["input"]["required"], info["input"]["optional"]
    assert list(required) == ["model", "lora_name", "strength_model", "strength_clip"]
    assert list(optional) == ["clip", "steps", "denoise"]
    assert all(spec[1].get("tooltip") for spec in [*required.values(), *optional.values()])
    options = required["lora_name"][1]["options"]
    files = comfy_run["loras_after"]  # read after the cases ran: the downloaded file is listed too
    assert options[: len(files)] == files and "tiny-lcm-lora-sd15.safetensors" in files
    assert "[download] lcm-lora-sd15" in options and "[download] tiny-lcm-lora-sd15" in options
    # MODEL and CLIP, then the recipe's SAMPLER, SIGMAS, cfg and report (issue 14)
    assert info["output"] == ["MODEL", "CLIP", "SAMPLER", "SIGMAS", "FLOAT", "STRING"]
    assert all(info["output_tooltips"])
