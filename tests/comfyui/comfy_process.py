"""Run Python inside ComfyUI's environment, in a subprocess, and get JSON and tensors back.

ComfyUI is never imported into the pytest process: its top-level ``utils``, ``nodes``, ``app``, ``server`` modules
would shadow other packages for every later test. Instead:

- ``run_in_comfyui(script, *args, ...)`` starts ``python script.py args`` with a temporary ComfyUI base directory
  (``TMP/custom_nodes`` links to the node packs, ``TMP/models/<folder>`` links to the model files), ComfyUI's
  command line (``--cpu --base-directory TMP --database-url sqlite:///:memory:`` + extras) and returns the
  script's ``write_result`` data. The script calls ``comfy_child.boot()`` first (see child/comfy_child.py).
- ``run_workflows(prompts, ...)`` runs API-format prompts through ComfyUI's own ``validate_prompt`` and
  ``PromptExecutor`` (the path /prompt takes, minus HTTP), several per process, and returns each prompt's outputs
  and the latents captured with ``capture_latent``.

Example::

    ckpt = tiny_checkpoint("sd15")
    prompt = {**txt2img_prompt(ckpt.name, steps=2), "99": capture_latent(["3", 0], "final")}
    [res] = run_workflows([prompt], models={"checkpoints": [ckpt.path]})
    res.latents["final"]          # ComfyUI LATENT units (diffusers latents / 0.18215 for SD1.5)
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.comfyui.hosts import REPO_ROOT, comfyui_path

CHILD_DIR = Path(__file__).resolve().parent / "child"
HARNESS_NODES = Path(__file__).resolve().parent / "harness_nodes"
REPO_LINK_NAME = "lcm-plugin"  # the folder name a `git clone` into custom_nodes/ would have
HARNESS_LINK_NAME = "lcm_harness_nodes"
DEFAULT_COMFY_ARGS = ("--cpu", "--disable-api-nodes", "--database-url", "sqlite:///:memory:")
LOG_TAIL_LINES = 60
_FOLDER = re.compile(r"[a-z_]+")


class ComfyProcessError(RuntimeError):
    """A ComfyUI child process failed; the message carries its exit status and the tail of its log."""


@dataclass
class ComfyRun:
    """What a child script handed back."""

    data: dict
    tensors: dict
    log: str
    base_dir: Path
    seconds: float


@dataclass
class WorkflowResult:
    """One prompt run by ``run_workflows``."""

    success: bool
    outputs: dict  # node id -> ui outputs, as /history shows them
    latents: dict = field(default_factory=dict)  # capture name -> tensor
    error: dict | None = None  # ComfyUI's execution_error message (exception_message, node_type, ...)
    validation_error: dict | None = None  # /prompt's 400 error body when the prompt did not validate
    node_errors: dict = field(default_factory=dict)
    status_messages: list = field(default_factory=list)

    def images(self) -> list[dict]:
        """Every image file the prompt's output nodes reported: {"filename", "subfolder", "type"}."""
        return [img for out in self.outputs.values() for img in out.get("images", [])]


def make_base_dir(
    base: Path,
    *,
    custom_nodes: tuple[Path, ...] | list[Path] = (REPO_ROOT,),
    harness_nodes: bool = False,
    models: dict[str, list[Path]] | None = None,
) -> Path:
    """Lay out a ComfyUI ``--base-directory``: custom_nodes/, models/<folder>/ (symlinks), input/, output/."""
    base.mkdir(parents=True, exist_ok=True)
    nodes_dir = base / "custom_nodes"
    nodes_dir.mkdir(exist_ok=True)
    packs = [
        (Path(p), REPO_LINK_NAME if Path(p).resolve() == REPO_ROOT else Path(p).name) for p in custom_nodes
    ]
    if harness_nodes:
        packs.append((HARNESS_NODES, HARNESS_LINK_NAME))
    for target, name in packs:
        link = nodes_dir / name
        if not link.exists():
            link.symlink_to(Path(target).resolve(), target_is_directory=True)
    for folder, files in (models or {}).items():
        if not _FOLDER.fullmatch(folder):
            raise ValueError(
                f"model folder {folder!r}: use a ComfyUI folder name such as checkpoints or loras"
            )
        target_dir = base / "models" / folder
        target_dir.mkdir(parents=True, exist_ok=True)
        for f in files:
            link = target_dir / Path(f).name
            if not link.exists():
                link.symlink_to(Path(f).resolve())
    for sub in ("input", "output", "temp", "user", "harness/capture"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return base


def child_env(base: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every ComfyUI child: no bytecode written (the checkout is read-only), one CPU thread."""
    env = dict(os.environ)
    env.update(
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS=env.get("LCM_PLUGIN_COMFYUI_THREADS", "1"),
        HF_HUB_OFFLINE="1",
        DO_NOT_TRACK="1",
        LCM_HARNESS_CAPTURE_DIR=str(base / "harness" / "capture"),
        LCM_HARNESS_TENSORS=str(base / "harness" / "inputs.safetensors"),
    )
    env.pop("PYTHONPATH", None)
    env.update(extra or {})
    return env


def run_in_comfyui(
    script: str | Path,
    *args: str,
    custom_nodes: tuple[Path, ...] | list[Path] = (REPO_ROOT,),
    harness_nodes: bool = False,
    models: dict[str, list[Path]] | None = None,
    tensors: dict | None = None,
    comfy_args: tuple[str, ...] | list[str] = (),
    nodes: str = "all",
    base_dir: Path | None = None,
    timeout: float = 600.0,
    env: dict[str, str] | None = None,
) -> ComfyRun:
    """Run ``python script args`` inside ComfyUI (see the module docstring) and return what it handed back.

    Args:
        script: a child script; it must call ``comfy_child.boot()`` before importing ComfyUI and end with
            ``comfy_child.write_result(...)``. Scripts in ``tests/comfyui/child/`` may be given by file name.
        custom_nodes: node-pack folders linked into ``TMP/custom_nodes`` (the repository by default).
        harness_nodes: also link the test-only pack (tensor in/out nodes, harness_nodes/).
        models: ComfyUI model folder -> files, e.g. ``{"checkpoints": [path], "loras": [path]}`` (symlinked).
        tensors: name -> tensor, readable in the child via ``ctx.input_tensors()`` and by harness nodes.
        comfy_args: extra ComfyUI flags (e.g. ``("--use-pytorch-cross-attention",)``).
        nodes: ``"all"``, ``"builtin"`` (no custom nodes) or ``"none"`` (nodes.py only) for ``boot()``.
        base_dir: the base directory to use (default: a fresh temporary one, removed afterwards).
        timeout: seconds before the child is killed (ComfyProcessError).
        env: extra environment variables, applied last (they may undo child_env's, e.g. HF_HUB_OFFLINE="").

    Raises:
        ComfyProcessError: the child exited non-zero, timed out or wrote no result; the message has its log tail.
    """
    script = Path(script)
    if not script.is_absolute() and not script.exists():
        script = CHILD_DIR / script
    if not script.is_file():
        raise ValueError(f"child script {script} does not exist")
    root = comfyui_path()
    with tempfile.TemporaryDirectory(prefix="lcm_comfy_") as tmp:
        base = make_base_dir(
            Path(base_dir or Path(tmp) / "base"),
            custom_nodes=custom_nodes,
            harness_nodes=harness_nodes,
            models=models,
        )
        work = Path(tmp)
        config = {
            "comfy_dir": str(root),
            "comfy_args": [*DEFAULT_COMFY_ARGS, "--base-directory", str(base), *comfy_args],
            "nodes": nodes,
            "result_json": str(work / "result.json"),
            "result_tensors": str(work / "result.safetensors"),
            "input_tensors": None,
        }
        if tensors:
            from safetensors.torch import save_file

            path = base / "harness" / "inputs.safetensors"
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))
            config["input_tensors"] = str(path)
        (work / "config.json").write_text(json.dumps(config))
        env = child_env(base, {"LCM_HARNESS_CONFIG": str(work / "config.json"), **(env or {})})
        env["PYTHONPATH"] = str(CHILD_DIR)
        log_path = work / "child.log"
        start = time.perf_counter()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, str(script), *map(str, args)],
                cwd=str(base),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise ComfyProcessError(
                    f"{script.name} ran longer than {timeout:.0f} s and was killed\n{_tail(log_path)}"
                ) from None
            finally:
                if proc.poll() is None:
                    _kill_group(proc)
        seconds = time.perf_counter() - start
        log_text = log_path.read_text(errors="replace")
        result_json = work / "result.json"
        if rc != 0 or not result_json.is_file():
            why = f"exited with status {rc}" if rc != 0 else "exited without calling write_result"
            raise ComfyProcessError(f"{script.name} {why}\n{_tail(log_path)}")
        data = json.loads(result_json.read_text())
        result_tensors = {}
        if (work / "result.safetensors").is_file():
            from safetensors.torch import load_file

            result_tensors = load_file(str(work / "result.safetensors"))
        return ComfyRun(data, result_tensors, log_text, base, seconds)


def run_workflows(
    prompts: list[dict],
    *,
    custom_nodes: tuple[Path, ...] | list[Path] = (REPO_ROOT,),
    models: dict[str, list[Path]] | None = None,
    tensors: dict | None = None,
    comfy_args: tuple[str, ...] | list[str] = (),
    timeout: float = 600.0,
    env: dict[str, str] | None = None,
    fresh: bool = False,
) -> list[WorkflowResult]:
    """Run API-format ``prompts`` in one ComfyUI child process (harness nodes loaded) and return their results.

    As in a running ComfyUI, a node whose inputs did not change since the previous prompt comes from the execution
    cache (the checkpoint loads once); ``fresh=True`` empties the cache before every prompt, for tests that must
    see a node run again (e.g. "the same seed gives the same latent").
    """
    with tempfile.TemporaryDirectory(prefix="lcm_prompts_") as tmp:
        prompts_file = Path(tmp) / "prompts.json"
        prompts_file.write_text(json.dumps(prompts))
        run = run_in_comfyui(
            "run_prompts.py",
            str(prompts_file),
            *(["--fresh"] if fresh else []),
            custom_nodes=custom_nodes,
            harness_nodes=True,
            models=models,
            tensors=tensors,
            comfy_args=comfy_args,
            timeout=timeout,
            env=env,
        )
    out = []
    for i, r in enumerate(run.data["results"]):
        latents = {k.split("/", 1)[1]: v for k, v in run.tensors.items() if k.split("/", 1)[0] == str(i)}
        out.append(
            WorkflowResult(
                success=r["success"],
                outputs=r["outputs"],
                latents=latents,
                error=r["error"],
                validation_error=r["validation_error"],
                node_errors=r["node_errors"],
                status_messages=r["status_messages"],
            )
        )
    return out


def capture_latent(samples: list, name: str) -> dict:
    """An API-format node that hands ``samples`` (a ``[node_id, slot]`` link) back as ``result.latents[name]``."""
    return {"class_type": "HarnessCaptureLatent", "inputs": {"samples": samples, "name": name}}


def tensor_conditioning(name: str, pooled: str = "") -> dict:
    """An API-format node giving CONDITIONING from the passed tensor ``name`` (and ``pooled_output``)."""
    return {"class_type": "HarnessConditioning", "inputs": {"name": name, "pooled": pooled}}


def tensor_latent(name: str) -> dict:
    """An API-format node giving LATENT ``{"samples": tensors[name]}`` (ComfyUI latent units)."""
    return {"class_type": "HarnessLatent", "inputs": {"name": name}}


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the child's own process group (it was started in a new session, so nothing else is in it)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    text = path.read_text(errors="replace") if path.is_file() else ""
    return "--- log tail ---\n" + "\n".join(text.splitlines()[-lines:])
