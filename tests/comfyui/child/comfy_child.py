"""Inside ComfyUI: start-up and result hand-back for scripts that ``comfy_process.run_in_comfyui`` runs.

This file runs in the child process only (never in pytest). A child script does::

    from comfy_child import boot, write_result
    ctx = boot()                                  # before any ComfyUI or torch import
    import comfy.sd                               # ComfyUI's modules are importable now
    write_result({"answer": 42}, tensors={"latent": t})

``boot`` does what ComfyUI's ``main.py`` does before it serves: parses the command line the parent chose
(``--cpu --base-directory TMP ...``), imports ``main`` (paths, logging, custom nodes' prestartup scripts; it does not
start the server), creates the ``PromptServer`` (some nodes look up ``PromptServer.instance`` at import) and loads
nodes with ``nodes.init_extra_nodes`` (built-in extras, then ``TMP/custom_nodes``; API nodes are skipped).
The parent passes its settings in the JSON file named by ``LCM_HARNESS_CONFIG``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import uuid
from dataclasses import dataclass, field

CONFIG_ENV = "LCM_HARNESS_CONFIG"


@dataclass
class ChildContext:
    """What a child script gets from ``boot``."""

    config: dict
    args: list[str]  # the script's own command-line arguments
    prompt_server: object = None
    loop: object = None
    events: list = field(default_factory=list)  # (event, data) messages ComfyUI sent to clients
    log_records: list = field(default_factory=list)  # (levelname, message) of every WARNING+ log record

    def input_tensors(self) -> dict:
        """The tensors the parent passed (``run_in_comfyui(tensors=...)``), on the CPU."""
        path = self.config.get("input_tensors")
        if not path:
            return {}
        from safetensors.torch import load_file

        return load_file(path)

    def run_prompt(self, prompt: dict, *, client_id: str | None = None) -> dict:
        """Validate and execute one API-format prompt exactly as the server's /prompt + worker would.

        Returns ``{"prompt_id", "success", "validation_error", "node_errors", "outputs", "status_messages",
        "error"}``: ``outputs`` is the history entry's outputs (node id -> ui dict), ``error`` the
        ``execution_error`` message (exception_message, node_type, ...) when execution failed.
        """
        import execution

        prompt_id = str(uuid.uuid4())
        valid = self.loop.run_until_complete(execution.validate_prompt(prompt_id, prompt, None))
        result = {"prompt_id": prompt_id, "success": False, "validation_error": None, "node_errors": valid[3]}
        if not valid[0]:
            result.update(validation_error=valid[1], outputs={}, status_messages=[], error=None)
            return result
        executor = self._executor()
        extra = {"client_id": client_id} if client_id else {}
        executor.execute(prompt, prompt_id, extra, valid[2])
        messages = [[event, data] for event, data in executor.status_messages]
        error = next((data for event, data in messages if event == "execution_error"), None)
        result.update(
            success=bool(executor.success),
            outputs=(executor.history_result or {}).get("outputs", {}),
            status_messages=_jsonable(messages),
            error=_jsonable(error),
        )
        return result

    def _executor(self):
        if not hasattr(self, "_prompt_executor"):
            import execution

            self._prompt_executor = execution.PromptExecutor(
                self.prompt_server, cache_type=execution.CacheType.CLASSIC
            )
        return self._prompt_executor


class _Recorder(logging.Handler):
    def __init__(self, records: list) -> None:
        super().__init__(logging.WARNING)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append((record.levelname, record.getMessage()))
        except Exception:  # a bad log call must not break the child
            pass


def boot(load_nodes: str | None = None) -> ChildContext:
    """Start ComfyUI's machinery in this process (see the module docstring); call it before importing ComfyUI.

    Args:
        load_nodes: ``"all"`` (built-in extras + custom nodes), ``"builtin"`` (extras only), ``"none"`` (only the
            nodes of nodes.py); default from the parent's ``run_in_comfyui(nodes=...)``.
    """
    with open(os.environ[CONFIG_ENV], encoding="utf-8") as f:
        config = json.load(f)
    script_args = sys.argv[1:]
    comfy_dir = config["comfy_dir"]
    sys.path[:] = [comfy_dir] + [p for p in sys.path if p != comfy_dir]
    sys.argv = ["main.py", *config["comfy_args"]]
    import comfy.options

    comfy.options.enable_args_parsing()
    import main  # noqa: F401, I001  (ComfyUI's start-up side effects; ComfyUI's nodes, not the repo's nodes/)
    import nodes
    import server

    if os.path.dirname(os.path.abspath(nodes.__file__)) != os.path.abspath(comfy_dir):
        raise RuntimeError(f"`import nodes` found {nodes.__file__}, not ComfyUI's nodes.py in {comfy_dir}")
    ctx = ChildContext(config=config, args=script_args)
    logging.getLogger().addHandler(_Recorder(ctx.log_records))
    ctx.loop = asyncio.new_event_loop()
    asyncio.set_event_loop(ctx.loop)
    ctx.prompt_server = server.PromptServer(ctx.loop)

    def send_sync(event, data, sid=None):
        if isinstance(event, str):
            ctx.events.append((event, _jsonable(data)))

    ctx.prompt_server.send_sync = send_sync
    mode = load_nodes or config.get("nodes", "all")
    if mode not in ("all", "builtin", "none"):
        raise ValueError(f"load_nodes must be 'all', 'builtin' or 'none', not {mode!r}")
    if mode != "none":
        ctx.loop.run_until_complete(
            nodes.init_extra_nodes(init_custom_nodes=mode == "all", init_api_nodes=False)
        )
    return ctx


def write_result(data: dict, tensors: dict | None = None) -> None:
    """Hand ``data`` (JSON) and ``tensors`` (name -> torch.Tensor) back to the parent; call once, at the end."""
    config_path = os.environ[CONFIG_ENV]
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    if tensors:
        from safetensors.torch import save_file

        tmp = config["result_tensors"] + ".tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp)
        os.replace(tmp, config["result_tensors"])
    tmp = config["result_json"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(_jsonable(data), f)
    os.replace(tmp, config["result_json"])


def _jsonable(value):
    """``value`` with everything JSON cannot hold turned into its repr (tensors, tuples stay lists)."""
    try:
        return json.loads(json.dumps(value, default=repr))
    except (TypeError, ValueError):
        return repr(value)
