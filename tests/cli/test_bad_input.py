"""The bad-input table: every input a new user tried (issue 15) gets one clear line and leaves nothing behind.

One row per input: the command line, the exit code and the message (a regex on the single ``lcm-plugin ...: error``
line). Every row also checks that no traceback or size-mismatch list was printed and that neither the row's output
folder nor the shared inputs changed (nothing half-written). Rows that succeed with a notice say so.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from lcm_plugin.cli import main

PROMPT = ["--prompt", "a red square", "--size", "16", "--steps", "1"]


@dataclass(frozen=True)
class Row:
    """One bad input: ``argv(world, tmp)`` -> command line; expected exit code and message regex."""

    id: str
    argv: Callable
    message: str
    code: int = 1
    writes: bool = False  # a row that runs to completion (a notice, not an error) may write its outputs
    needs: str | None = None  # a world attribute this machine may lack (e.g. an unwritable folder)


def gen(w, *extra):
    return ["generate", "--model", str(w.pipe), *PROMPT, *extra]


def train(w, tmp, *extra):
    return ["train", "lora", "--pretrained-model", str(w.pipe), "--train-data-dir", str(w.data), "--resolution", "16",
            "--train-batch-size", "2", "--max-train-steps", "1", "--output-dir", str(tmp / "run"), *extra]  # fmt: skip


def fuse(w, *extra):
    return ["train", "fuse", "--base", str(w.pipe), "--lora", str(w.lora), *extra]


ROWS = [
    # --- generate: the model ------------------------------------------------------------------------------
    Row("gen-model-missing", lambda w, t: ["generate", "--model", str(t / "nope"), *PROMPT],
        r"model .*nope does not exist; pass a diffusers pipeline folder or a \.safetensors file"),
    Row("gen-model-ckpt", lambda w, t: ["generate", "--model", str(w.ckpt_pickle), *PROMPT],
        r"model\.ckpt: only \.safetensors single-file checkpoints are loaded \(never pickled"),
    Row("gen-model-pickle-named-safetensors", lambda w, t: ["generate", "--model", str(w.pickle), *PROMPT],
        r"cannot be read: pickle\.safetensors is a Python pickle, not safetensors; refusing to unpickle"),
    Row("gen-model-zip-named-safetensors", lambda w, t: ["generate", "--model", str(w.zip), *PROMPT],
        r"is a zip archive \(torch\.save format, i\.e\. pickle inside\), not safetensors; refusing to unpickle"),
    Row("gen-model-truncated", lambda w, t: ["generate", "--model", str(w.truncated), *PROMPT],
        r"truncated\.safetensors is truncated: .*Download or export it again"),
    Row("gen-model-garbage", lambda w, t: ["generate", "--model", str(w.garbage), *PROMPT],
        r"garbage\.safetensors is not a safetensors file \(its first 8 bytes are not a header length\); only "
        r"\.safetensors files are read\. Download or export it again\.$"),
    Row("gen-model-empty-file", lambda w, t: ["generate", "--model", str(w.empty), *PROMPT],
        r"empty\.safetensors is truncated or empty \(0 bytes\)"),
    Row("gen-model-is-a-lora", lambda w, t: ["generate", "--model", str(w.lora), *PROMPT],
        r"has no model\.diffusion_model\.\* weights, so it is not a full SD single-file checkpoint"),
    Row("gen-single-file-without-config", lambda w, t: ["generate", "--model", str(w.ckpt), *PROMPT],
        r"is a single-file checkpoint: pass single_file_config \(--single-file-config DIR\)"),
    Row("gen-single-file-config-missing",
        lambda w, t: ["generate", "--model", str(w.ckpt), "--single-file-config", str(t / "nope"), *PROMPT],
        r"--single-file-config .*nope does not exist"),
    Row("gen-single-file-config-not-a-pipeline",
        lambda w, t: ["generate", "--model", str(w.ckpt), "--single-file-config", str(w.empty_dir), *PROMPT],
        r"single-file config .*empty_dir is not a diffusers pipeline folder \(no model_index\.json\)"),
    Row("gen-single-file-config-other-architecture",
        lambda w, t: ["generate", "--model", str(w.ckpt), "--single-file-config", str(w.wide_pipe), *PROMPT],
        r"single-file checkpoint .* could not be loaded \(.*\); check that .*wide_pipe is a diffusers folder of the "
        r"same architecture"),
    Row("gen-folder-without-model-index", lambda w, t: ["generate", "--model", str(w.no_index), *PROMPT],
        r"model .*no_index is not a diffusers pipeline folder \(no model_index\.json\); pass a folder saved by"),
    Row("gen-folder-holding-a-single-file", lambda w, t: ["generate", "--model", str(w.single_inside), *PROMPT],
        r"no model_index\.json\); it holds model\.safetensors: pass that file \(with --single-file-config\)"),
    Row("gen-folder-with-truncated-weights", lambda w, t: ["generate", "--model", str(w.broken_pipe), *PROMPT],
        r"pipeline folder .*broken_pipe could not be loaded \(.*\); save it again, or check that no file is missing"),
    Row("gen-nan-model", lambda w, t: ["generate", "--model", str(w.nan_pipe), *PROMPT, "--out", str(t / "x.png")],
        r"the model produced NaN/inf pixels for 1 of 1 image\(s\) .*nothing was written"),
    # --- generate: the output -------------------------------------------------------------------------------
    Row("gen-out-is-a-folder", lambda w, t: gen(w, "--out", str(t)),
        r"--out .* is a folder; give a file name inside it, e\.g\. .*out\.png"),
    Row("gen-out-ends-in-a-slash", lambda w, t: gen(w, "--out", str(t / "new") + "/"),
        r"--out .*new is a folder; give a file name inside it"),
    Row("gen-out-under-a-file", lambda w, t: gen(w, "--out", str(w.a_file / "x.png")),
        r"--out .*a_file\.txt/x\.png cannot be created: .*a_file\.txt is a file, not a folder"),
    Row("gen-out-unwritable-folder", lambda w, t: gen(w, "--out", str(w.unwritable / "x.png")),
        r"--out .*x\.png cannot be written: the folder .* does not accept new files \(.*\); choose a folder",
        needs="unwritable"),
    Row("gen-out-not-png", lambda w, t: gen(w, "--out", str(t / "x.jpg")),
        r"--out .*x\.jpg must end in \.png \(the format written\), e\.g\. .*x\.png"),
    Row("gen-out-empty", lambda w, t: gen(w, "--out", ""), r"--out is empty; give a file path"),
    Row("gen-out-name-too-long", lambda w, t: gen(w, "--out", str(t / ("a" * 300 + ".png"))),
        r"--out: the name a+\.\.\. is 304 bytes long; file systems allow 255; choose a shorter name"),
    # --- generate: numbers, timesteps, LoRA ---------------------------------------------------------------------
    Row("gen-steps-zero", lambda w, t: gen(w, "--steps", "0"), r"--steps must be >= 1, got 0"),
    Row("gen-size-not-multiple-of-8", lambda w, t: gen(w, "--size", "30"),
        r"--size must be a positive multiple of 8 \(the VAE's latent grid\), got 30"),
    Row("gen-size-negative", lambda w, t: gen(w, "--size", "-16"), r"--size must be a positive multiple of 8"),
    Row("gen-guidance-nan", lambda w, t: gen(w, "--guidance", "nan"), r"--guidance .* must be a finite number, got nan"),
    Row("gen-guidance-negative", lambda w, t: gen(w, "--guidance", "-2"), r"--guidance .* must be in \[0, inf\], got -2"),
    Row("gen-gamma-above-one", lambda w, t: gen(w, "--gamma", "2"), r"--gamma .* must be in \[0, 1\], got 2"),
    Row("gen-threads-zero", lambda w, t: gen(w, "--threads", "0"), r"--threads must be >= 1, got 0"),
    Row("gen-timesteps-ascending", lambda w, t: gen(w, "--timesteps", "499,999", "--out", str(t / "x.png")),
        r"strictly descending"),
    Row("gen-timesteps-not-integers", lambda w, t: gen(w, "--timesteps", "999,,x"),
        r"timesteps must be comma-separated integers like 999,749,499,249, got '999,,x'"),
    Row("gen-lora-missing", lambda w, t: gen(w, "--lora", str(t / "nope.safetensors")),
        r"LoRA .*nope\.safetensors does not exist"),
    Row("gen-lora-pickle", lambda w, t: gen(w, "--lora", str(w.pickle), "--out", str(t / "x.png")),
        r"LoRA .*pickle\.safetensors cannot be read: pickle\.safetensors is a Python pickle.*refusing to unpickle"),
    Row("gen-lora-wrong-shape", lambda w, t: gen(w, "--lora", str(w.wide_lora), "--out", str(t / "x.png")),
        r"LoRA .*wide\.safetensors does not fit this model \(made for another base architecture\?\): \d+ weight\(s\) "
        r"have the wrong shape for this model \(first: .*: file \[\d+, \d+\], model \[\d+, \d+\]\)"),
    Row("gen-lora-empty-folder", lambda w, t: gen(w, "--lora", str(w.empty_dir), "--out", str(t / "x.png")),
        r"LoRA folder .*empty_dir holds no \.safetensors file; pass the LoRA file itself"),
    # --- timesteps ------------------------------------------------------------------------------------------
    Row("timesteps-more-than-the-grid", lambda w, t: ["timesteps", "--steps", "60"],
        r"cannot exceed original_inference_steps"),
    Row("timesteps-strength-zero", lambda w, t: ["timesteps", "--strength", "0"],
        r"strength must be in \(0, 1\], got 0\.0"),
    # --- adapters inspect -------------------------------------------------------------------------------------
    Row("inspect-a-folder", lambda w, t: ["adapters", "inspect", str(w.lora.parent)],
        r"lora is a folder, not an adapter file; pass one of its \.safetensors files: pytorch_lora_weights\.safetensors"),
    Row("inspect-an-empty-folder", lambda w, t: ["adapters", "inspect", str(w.empty_dir)],
        r"empty_dir is a folder with no \.safetensors file in it; pass an adapter file"),
    Row("inspect-missing", lambda w, t: ["adapters", "inspect", str(t / "nope.safetensors")],
        r"adapter file not found: .*nope\.safetensors"),
    Row("inspect-pickle", lambda w, t: ["adapters", "inspect", str(w.pickle)], r"is a Python pickle.*refusing to unpickle"),
    Row("inspect-truncated", lambda w, t: ["adapters", "inspect", str(w.truncated)],
        r"truncated\.safetensors is truncated: .*download it again"),
    # --- adapters convert -------------------------------------------------------------------------------------
    Row("convert-to-a-folder", lambda w, t: ["adapters", "convert", str(w.lora), str(t)],
        r"output .* is a folder; give a file name inside it, e\.g\. .*out\.safetensors"),
    Row("convert-under-a-file", lambda w, t: ["adapters", "convert", str(w.lora), str(w.a_file / "x.safetensors")],
        r"output .*x\.safetensors cannot be created: .*a_file\.txt is a file, not a folder"),
    Row("convert-to-an-unwritable-folder",
        lambda w, t: ["adapters", "convert", str(w.lora), str(w.unwritable / "x.safetensors")],
        r"output .*x\.safetensors cannot be written: the folder .* does not accept new files", needs="unwritable"),
    Row("convert-to-a-pickle-suffix", lambda w, t: ["adapters", "convert", str(w.lora), str(t / "x.bin")],
        r"output .*x\.bin must end in \.safetensors"),
    Row("convert-onto-itself", lambda w, t: ["adapters", "convert", str(w.lora), str(w.lora)],
        r"output path equals input path; choose a different output file"),
    Row("convert-for-sdxl-an-sd15-by-metadata",
        lambda w, t: ["adapters", "convert", str(w.sd15_by_metadata), str(t / "x.safetensors"), "--for", "sdxl"],
        r"the adapter is for Stable Diffusion 1\.x \(sd15; .*metadata lcm_plugin\.architecture = sd15.*\), not for "
        r"Stable Diffusion XL \(sdxl\); pick the matching adapter or pass --for sd15"),
    Row("convert-unknown-architecture", lambda w, t: ["adapters", "convert", str(w.unknown_arch), str(t / "x.safetensors")],
        r"could not detect the base architecture; pass --for sd15\|sd2\|sdxl\|ssd1b"),
    Row("convert-a-full-checkpoint", lambda w, t: ["adapters", "convert", str(w.ckpt), str(t / "x.safetensors"), "--for", "sd15"],
        r"no LoRA weights found \(expected lora_down/lora_up.*\)\. Is this a full model checkpoint rather than a LoRA"),
    Row("convert-missing-source", lambda w, t: ["adapters", "convert", str(t / "nope.safetensors"), str(t / "x.safetensors")],
        r"adapter file not found: .*nope\.safetensors"),
    Row("convert-a-folder", lambda w, t: ["adapters", "convert", str(w.lora.parent), str(t / "x.safetensors")],
        r"is a folder, not an adapter file; pass one of its \.safetensors files"),
    # --- adapters download --------------------------------------------------------------------------------------
    Row("download-dest-is-a-file", lambda w, t: ["adapters", "download", "lcm-lora-toy", "--dest", str(w.a_file)],
        r"--dest .*a_file\.txt is a file, not a folder; give a folder path"),
    Row("download-dest-under-a-file",
        lambda w, t: ["adapters", "download", "lcm-lora-toy", "--dest", str(w.a_file / "loras")],
        r"--dest .*loras cannot be created: .*a_file\.txt is a file, not a folder"),
    Row("download-dest-unwritable",
        lambda w, t: ["adapters", "download", "lcm-lora-toy", "--dest", str(w.unwritable / "loras")],
        r"--dest .*loras cannot be written: the folder .* does not accept new files", needs="unwritable"),
    Row("download-name-not-safetensors",
        lambda w, t: ["adapters", "download", "lcm-lora-toy", "--dest", str(t), "--name", "toy.ckpt"],
        r"file name 'toy\.ckpt' does not end in \.safetensors; only \.safetensors adapters are installed"),
    Row("download-name-with-a-folder",
        lambda w, t: ["adapters", "download", "lcm-lora-toy", "--dest", str(t), "--name", "sub/toy.safetensors"],
        r"file name 'sub/toy\.safetensors' must be a plain file name; the folder goes in --dest"),
    Row("download-url-refused", lambda w, t: ["adapters", "download", w.url_refused, "--dest", str(t), "--retries", "0",
                                              "--quiet"],
        r"download of http://127\.0\.0\.1:\d+/a\.safetensors failed after 0 resumptions \(.*\); nothing was received "
        r"and nothing was written to"),
    Row("download-url-404", lambda w, t: ["adapters", "download", w.url_missing, "--dest", str(t), "--quiet"],
        r"http://127\.0\.0\.1:\d+/missing\.safetensors does not exist \(HTTP 404\)"),
    Row("download-url-truncated", lambda w, t: ["adapters", "download", w.url_truncated, "--dest", str(t), "--quiet"],
        r"http://127\.0\.0\.1:\d+/t\.safetensors is truncated: .*; nothing was installed in"),
    Row("download-url-pickle-name", lambda w, t: ["adapters", "download", w.url_ckpt, "--dest", str(t), "--quiet"],
        r"file name 'x\.ckpt' \(taken from http://.*/x\.ckpt\) does not end in \.safetensors.*--name NAME\.safetensors"),
    Row("download-unknown-name", lambda w, t: ["adapters", "download", "no-such-adapter", "--dest", str(t)],
        r"unknown adapter 'no-such-adapter'; known adapters: lcm-lora-sd15"),
    Row("download-wrong-base-model", lambda w, t: ["adapters", "download", "lcm-lora-sdxl", "--for", "sd15", "--dest",
                                                   str(t)],
        r"lcm-lora-sdxl is for sdxl, not sd15; pick an adapter for sd15"),
    Row("download-negative-retries", lambda w, t: ["adapters", "download", "lcm-lora-toy", "--retries", "-1"],
        r"--retries must be 0 or more"),
    # --- train lora ----------------------------------------------------------------------------------------------
    Row("train-output-dir-is-a-file", lambda w, t: [*train(w, t), "--output-dir", str(w.a_file)],
        r"--output-dir .*a_file\.txt is a file, not a folder"),
    Row("train-output-dir-under-a-file", lambda w, t: [*train(w, t), "--output-dir", str(w.a_file / "run")],
        r"--output-dir .*run cannot be created: .*a_file\.txt is a file, not a folder"),
    Row("train-output-dir-unwritable", lambda w, t: [*train(w, t), "--output-dir", str(w.unwritable / "run")],
        r"--output-dir .*run cannot be written: the folder .* does not accept new files", needs="unwritable"),
    Row("train-config-missing", lambda w, t: [*train(w, t), "--config", str(t / "nope.json")],
        r"config file .*nope\.json does not exist"),
    Row("train-config-not-json", lambda w, t: [*train(w, t), "--config", str(w.config_bad)],
        r"config file .*bad\.json is not valid JSON \(.*line 1.*\); fix it or drop --config"),
    Row("train-config-a-list", lambda w, t: [*train(w, t), "--config", str(w.config_list)],
        r"config file .*list\.json holds a JSON list; it must be one object of TrainConfig fields"),
    Row("train-model-missing", lambda w, t: [*train(w, t), "--pretrained-model", str(t / "nope")],
        r"model .*nope does not exist; pass a diffusers pipeline folder or a \.safetensors file"),
    Row("train-model-without-model-index", lambda w, t: [*train(w, t), "--pretrained-model", str(w.no_index)],
        r"no_index is not a diffusers pipeline folder \(no model_index\.json\)"),
    Row("train-lora-rank-zero", lambda w, t: [*train(w, t), "--lora-rank", "0"], r"lora_rank must be >= 1, got 0"),
    Row("train-data-missing", lambda w, t: [*train(w, t), "--train-data-dir", str(t / "nope")], r"does not exist"),
    Row("train-resume-from-a-non-checkpoint", lambda w, t: [*train(w, t), "--resume-from-checkpoint", str(w.empty_dir)],
        r"empty_dir is not a training checkpoint \(no state\.json\); pass 'latest' or a checkpoint-N folder"),
    Row("train-resume-latest-without-checkpoint", lambda w, t: [*train(w, t), "--resume-from-checkpoint", "latest"],
        r"^notice: --resume-from-checkpoint latest: no checkpoint-N in .*run yet, starting at step 0$", code=0,
        writes=True),
    # --- train fuse ---------------------------------------------------------------------------------------------
    Row("fuse-lora-scale-nan", lambda w, t: fuse(w, "--output", str(t / "out"), "--lora-scale", "nan"),
        r"--lora-scale must be a finite number, got nan"),
    Row("fuse-lora-scale-inf", lambda w, t: fuse(w, "--output", str(t / "out"), "--lora-scale", "inf"),
        r"--lora-scale must be a finite number, got inf"),
    Row("fuse-lora-scale-overflows", lambda w, t: fuse(w, "--output", str(t / "out"), "--lora-scale", "1e39"),
        r"at --lora-scale 1e\+39 gives NaN/inf in \d+ of \d+ UNet weights .*nothing was written"),
    Row("fuse-lora-with-nan-weights",
        lambda w, t: ["train", "fuse", "--base", str(w.pipe), "--lora", str(w.nan_lora), "--output", str(t / "out")],
        r"LoRA .*nan_lora/pytorch_lora_weights\.safetensors holds NaN/inf in 1 of \d+ tensors .*diverged run"),
    Row("fuse-output-is-a-file", lambda w, t: fuse(w, "--output", str(w.a_file)),
        r"--output .*a_file\.txt is a file, not a folder"),
    Row("fuse-output-under-a-file", lambda w, t: fuse(w, "--output", str(w.a_file / "lcm")),
        r"--output .*lcm cannot be created: .*a_file\.txt is a file, not a folder"),
    Row("fuse-output-unwritable", lambda w, t: fuse(w, "--output", str(w.unwritable / "lcm")),
        r"--output .*lcm cannot be written: the folder .* does not accept new files", needs="unwritable"),
    Row("fuse-single-file-output-is-a-folder", lambda w, t: fuse(w, "--output", str(t), "--single-file"),
        r"--output .* is a folder; give a file name inside it"),
    Row("fuse-single-file-output-not-safetensors", lambda w, t: fuse(w, "--output", str(t / "lcm"), "--single-file"),
        r"--single-file writes one \.safetensors file: give an --output ending in \.safetensors"),
    Row("fuse-lora-missing",
        lambda w, t: ["train", "fuse", "--base", str(w.pipe), "--lora", str(t / "nope.safetensors"), "--output",
                      str(t / "out")],
        r"--lora .*nope\.safetensors does not exist"),
    Row("fuse-base-missing",
        lambda w, t: ["train", "fuse", "--base", str(t / "nope"), "--lora", str(w.lora), "--output", str(t / "out")],
        r"--base .*nope does not exist; pass a diffusers pipeline folder or a \.safetensors checkpoint"),
    Row("fuse-single-file-base-without-config",
        lambda w, t: ["train", "fuse", "--base", str(w.ckpt), "--lora", str(w.lora), "--output", str(t / "out")],
        r"is a single-file checkpoint: pass single_file_config \(--single-file-config DIR\)"),
    Row("fuse-lora-wrong-shape",
        lambda w, t: ["train", "fuse", "--base", str(w.pipe), "--lora", str(w.wide_lora), "--output", str(t / "out")],
        r"LoRA .*wide\.safetensors does not fit this model .* \d+ weight\(s\) have the wrong shape for this model"),
    # --- train cache ----------------------------------------------------------------------------------------------
    Row("cache-output-under-a-file",
        lambda w, t: ["train", "cache", "--pretrained-model", str(w.pipe), "--train-data-dir", str(w.data),
                      "--output", str(w.a_file / "c.safetensors")],
        r"--output .*c\.safetensors cannot be created: .*a_file\.txt is a file, not a folder"),
    # --- toy make-world, demo, evaluate ----------------------------------------------------------------------------
    Row("make-world-out-is-a-file", lambda w, t: ["toy", "make-world", "--out", str(w.a_file), "--count", "2"],
        r"--out .*a_file\.txt is a file, not a folder"),
    Row("make-world-out-under-a-file", lambda w, t: ["toy", "make-world", "--out", str(w.a_file / "w"), "--count", "2"],
        r"--out .*w cannot be created: .*a_file\.txt is a file, not a folder"),
    Row("make-world-out-unwritable", lambda w, t: ["toy", "make-world", "--out", str(w.unwritable / "w"), "--count", "2"],
        r"--out .*w cannot be written: the folder .* does not accept new files", needs="unwritable"),
    Row("make-world-count-zero", lambda w, t: ["toy", "make-world", "--out", str(t / "w"), "--count", "0"],
        r"count must be >= 1, got 0"),
    Row("make-world-unknown-split", lambda w, t: ["toy", "make-world", "--out", str(t / "w"), "--split", "bogus"],
        r"argument --split: invalid choice: 'bogus'", code=2),
    Row("demo-out-is-a-folder", lambda w, t: ["demo", "--out", str(t)], r"--out .* is a folder; give a file name"),
    Row("demo-model-missing", lambda w, t: ["demo", "--model", str(t / "nope")], r"--model .*nope does not exist"),
    Row("demo-lora-pickle", lambda w, t: ["demo", "--lora", str(w.pickle), "--out", str(t / "d.png")],
        r"LoRA .*pickle\.safetensors cannot be read: pickle\.safetensors is a Python pickle, not safetensors"),
    Row("demo-threads-zero", lambda w, t: ["demo", "--threads", "0", "--out", str(t / "d.png")],
        r"--threads must be >= 1, got 0"),
    Row("evaluate-out-dir-is-a-file", lambda w, t: ["toy", "evaluate", "--out-dir", str(w.a_file)],
        r"--out-dir .*a_file\.txt is a file, not a folder"),
    Row("evaluate-lcm-lora-missing",
        lambda w, t: ["toy", "evaluate", "--out-dir", str(t / "e"), "--lcm-lora", str(t / "nope")],
        r"LCM-LoRA .*nope not found"),
]  # fmt: skip


def _snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folders`` with its size and mtime: equal snapshots = nothing written, nothing changed."""
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_symlink() or not p.exists():
                continue
            st = p.stat()
            out[str(p)] = (st.st_size if p.is_file() else -1, st.st_mtime_ns if p.is_file() else 0)
    return out


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row: Row, world, tmp_path, capsys, record_property):
    if row.needs and getattr(world, row.needs) is None:
        pytest.skip(f"no {row.needs} folder on this machine (every folder here accepts new files)")
    argv = row.argv(world, tmp_path)
    before = _snapshot(tmp_path, world.root)
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == row.code, err
    assert "Traceback" not in err and "size mismatch for" not in err, err
    if row.code == 2:
        lines = [line for line in err.splitlines() if "error:" in line]
    elif row.code == 0:
        lines = [line for line in err.splitlines() if line.startswith("notice:")]
    else:
        lines = [line for line in err.splitlines() if line.startswith("lcm-plugin ")]
    assert len(lines) == 1, err  # one line, not a list or a traceback
    message = re.sub(r"^lcm-plugin [\w-]+(?: [\w-]+)?: error: ", "", lines[0])
    record_property("message", message)  # the table's messages, e.g. in --junitxml
    assert re.search(row.message, message), message
    assert len(message) < 600, message
    if not row.writes:
        assert _snapshot(tmp_path, world.root) == before, "something was written"


def test_missing_model_is_reported_before_the_heavy_imports(tmp_path):
    """A typo in --model fails before torch/diffusers are imported (issue 15: ~20 s of imports first)."""
    code = (
        "import sys; from lcm_plugin.cli import main; "
        f"rc = main(['generate', '--model', {str(tmp_path / 'nope')!r}, '--prompt', 'x']); "
        "print(rc, 'torch' in sys.modules, 'diffusers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["1", "False", "False"], out
    assert "does not exist" in out.stderr
