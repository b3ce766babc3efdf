"""The harness itself, with ComfyUI core nodes only: the in-process runner returns a LATENT, the server runs a
prompt end to end (/prompt -> websocket -> /history -> /view), and the web frontend loads, queues and shows it."""

from __future__ import annotations

import pytest
import torch

from tests.comfyui.comfy_process import (
    ComfyProcessError,
    capture_latent,
    run_in_comfyui,
    run_workflows,
    tensor_conditioning,
)
from tests.comfyui.core_prompts import txt2img_prompt
from tests.comfyui.server import PromptRejected
from tests.comfyui.workflow_format import api_to_ui


def test_runner_returns_the_final_latent_and_reports_errors(tiny_checkpoint):
    ckpt = tiny_checkpoint("sd15")
    prompt = {**txt2img_prompt(ckpt.name, steps=2), "99": capture_latent(["3", 0], "final")}
    # Conditioning straight from tensors (harness node) instead of CLIPTextEncode, 1 step, no SaveImage.
    from_tensors = {
        k: v for k, v in txt2img_prompt(ckpt.name, steps=1).items() if k not in ("6", "7", "8", "9")
    }
    from_tensors.update({"6": tensor_conditioning("cond"), "7": tensor_conditioning("uncond")})
    from_tensors["99"] = capture_latent(["3", 0], "one_step")
    broken = {**prompt, "3": {**prompt["3"], "inputs": {**prompt["3"]["inputs"], "sampler_name": "no_such"}}}
    cond = {"cond": torch.randn(1, 77, 768), "uncond": torch.zeros(1, 77, 768)}
    results = run_workflows(
        [prompt, prompt, from_tensors, broken],
        models={"checkpoints": [ckpt.path]},
        tensors=cond,
        custom_nodes=(),
    )
    first, again, tensor_run, bad = results
    assert first.success and first.error is None
    assert first.latents["final"].shape == (1, 4, 8, 8)  # 64 px / 8
    assert torch.isfinite(first.latents["final"]).all()
    assert [img["filename"] for img in first.images()] == ["lcm_harness_00001_.png"]
    assert tensor_run.success and tensor_run.latents["one_step"].shape == (1, 4, 8, 8)
    assert not torch.equal(tensor_run.latents["one_step"], first.latents["final"])
    assert not bad.success and bad.validation_error["type"] == "prompt_outputs_failed_validation"
    assert "no_such" in str(bad.node_errors["3"])
    # The same graph right after itself comes from ComfyUI's cache; the capture node still hands the latent back.
    assert again.success and torch.equal(again.latents["final"], first.latents["final"])
    assert set(_cached(again)) >= {"3", "4", "5", "6", "7"}
    # fresh=True: every node runs again in every prompt (the same seed gives the same latent)
    fresh = run_workflows([prompt, prompt], models={"checkpoints": [ckpt.path]}, custom_nodes=(), fresh=True)
    assert [_cached(r) for r in fresh] == [[], []]
    assert all(torch.equal(r.latents["final"], first.latents["final"]) for r in fresh)


def _cached(result) -> list[str]:
    """Node ids ComfyUI took from its cache for this prompt (its execution_cached message)."""
    return next(data["nodes"] for kind, data in result.status_messages if kind == "execution_cached")


def test_runner_raises_with_the_child_log(tmp_path):
    # The runner's own failure reporting (no ComfyUI start-up needed to exercise it).
    script = tmp_path / "fails.py"
    script.write_text("import comfy_child\nprint('about to fail')\nraise SystemExit('child gave up')\n")
    with pytest.raises(
        ComfyProcessError, match=r"(?s)fails.py exited with status 1.*about to fail.*child gave up"
    ):
        run_in_comfyui(script, custom_nodes=(), nodes="none")
    silent = tmp_path / "silent.py"
    silent.write_text("import comfy_child\n")
    with pytest.raises(ComfyProcessError, match="silent.py exited without calling write_result"):
        run_in_comfyui(silent, custom_nodes=(), nodes="none")
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(60)\n")
    with pytest.raises(ComfyProcessError, match="slow.py ran longer than 1 s and was killed"):
        run_in_comfyui(slow, custom_nodes=(), nodes="none", timeout=1)


def test_server_runs_a_prompt_over_http_and_websocket(comfy_server, tiny_checkpoint):
    ckpt = tiny_checkpoint("sd15")
    info = comfy_server.object_info("KSampler")["KSampler"]
    assert "lcm" in info["input"]["required"]["sampler_name"][0]
    assert ckpt.name in comfy_server.object_info("CheckpointLoaderSimple")["CheckpointLoaderSimple"]["input"][
        "required"]["ckpt_name"][0]  # fmt: skip
    rss_before = comfy_server.rss()
    done = comfy_server.run(txt2img_prompt(ckpt.name, seed=7, filename_prefix="smoke_server"))
    assert done.status == "success"
    kinds = [kind for kind, _ in done.events]
    assert kinds[0] == "execution_start" and "executed" in kinds and kinds[-1] == "executing"
    assert done.history["status"]["status_str"] == "success"
    [ref] = done.images()
    image = comfy_server.image(ref)
    assert image.size == (64, 64)
    assert rss_before > 100e6 and comfy_server.rss() > 0
    with pytest.raises(PromptRejected, match="Prompt outputs failed validation") as rejected:
        comfy_server.queue(txt2img_prompt("no_such_checkpoint.safetensors"))
    assert "4" in rejected.value.node_errors
    # A prompt that validates but fails while running: the error arrives on the websocket and in /history.
    (comfy_server.base_dir / "models" / "checkpoints" / "broken.safetensors").write_bytes(b"not a checkpoint")
    failed = comfy_server.run(txt2img_prompt("broken.safetensors"), expect_error=True)
    assert failed.status == "error"
    assert failed.error["node_type"] == "CheckpointLoaderSimple" and failed.error["exception_message"]
    assert failed.history["status"]["status_str"] == "error"
    assert comfy_server.run(txt2img_prompt(ckpt.name, seed=8)).status == "success"  # and it runs the next one
    assert isinstance(comfy_server.workflow_templates(), dict)


def test_browser_loads_queues_and_shows_the_image(comfy_server, tiny_checkpoint, browser, artifact_dir):
    ckpt = tiny_checkpoint("sd15")
    api = txt2img_prompt(ckpt.name, seed=11, filename_prefix="smoke_browser")
    ui = api_to_ui(api, comfy_server.object_info())
    page = browser.open(comfy_server)
    try:
        page.load_workflow(ui)
        assert page.dialogs() == []
        from_page = {
            k: {kk: vv for kk, vv in v.items() if kk != "_meta"} for k, v in page.graph_to_prompt().items()
        }
        assert from_page == api  # the frontend sends exactly the API twin
        prompt_id = page.queue()
        names = page.wait_for_output_image(prompt_id)
        assert names == ["smoke_browser_00001_.png"]
        shot = page.screenshot(artifact_dir("harness_smoke") / "txt2img_core.jpg")
        assert shot.stat().st_size > 10_000
        assert [str(e) for e in page.console_errors()] == []
        page.load_workflow({**ui, "nodes": [{**ui["nodes"][0], "type": "NoSuchNodeType"}, *ui["nodes"][1:]]})
        assert [kind for kind, _ in page.dialogs()] == ["missing_nodes"]
    finally:
        page.close()


def test_a_killed_test_run_leaves_no_server_behind(comfyui, tmp_path):
    """SIGKILL the process that started a server (a cancelled CI job): the server dies with it (PDEATHSIG)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from tests.comfyui.hosts import REPO_ROOT

    driver = tmp_path / "driver.py"
    driver.write_text(
        "import sys, time\n"
        "from tests.comfyui.server import ComfyServer\n"
        f"s = ComfyServer(base_dir={str(tmp_path / 'base')!r}, custom_nodes=()).start()\n"
        "print(s.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(driver)], cwd=str(REPO_ROOT), stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    try:
        server_pid = int(proc.stdout.readline())
        assert psutil.pid_exists(server_pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _alive(server_pid):
            time.sleep(0.2)
        assert not _alive(server_pid)
    finally:
        if proc.poll() is None:
            proc.kill()


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
