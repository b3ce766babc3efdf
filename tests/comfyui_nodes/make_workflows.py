"""Regenerate ``workflows/*.json`` (UI format) from their API twins, and optionally their .jpg thumbnails.

    python -m tests.comfyui_nodes.make_workflows               # UI files from workflows/api/*.json
    python -m tests.comfyui_nodes.make_workflows --thumbnails   # + run each in the browser, save workflows/<name>.jpg

The UI files are built from the API twins and the /object_info of a real ComfyUI with the pack loaded (widget
order, sockets), so the two never drift apart; test_workflows_server.py checks they agree. Thumbnails are
screenshots of the whole graph after it ran in the real frontend on the random test models (64 x 64 px): they
show the wiring, not image quality.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from lcm_plugin.adapters.safetensors_io import give_default_mode
from tests.comfyui.workflow_format import api_to_ui, convert_file
from tests.comfyui_nodes import workflow_env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thumbnails", action="store_true", help="also run each workflow in the browser")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lcm_make_workflows_") as tmp:
        with workflow_env.serve(Path(tmp)) as (server, _):
            info = server.object_info()
            for name in workflow_env.workflow_names():
                api_path = workflow_env.WORKFLOWS_DIR / "api" / f"{name}.json"
                out = convert_file(api_path, workflow_env.WORKFLOWS_DIR / f"{name}.json", info)
                give_default_mode(out)  # the temp file it was renamed from is private (0600)
                print("wrote", out.relative_to(workflow_env.WORKFLOWS_DIR.parent))
            if args.thumbnails:
                _thumbnails(server, info)
    return 0


def _thumbnails(server, info) -> None:
    from tests.comfyui.browser import Browser

    with Browser() as browser:
        for name in workflow_env.workflow_names():
            ui = workflow_env.for_cpu_ui(api_to_ui(workflow_env.api_workflow(name), info))
            page = browser.open(server)
            try:
                page.load_workflow(ui)
                page.wait_for_output_image(page.queue(), timeout=600)
                shot = page.screenshot(workflow_env.WORKFLOWS_DIR / f"{name}.jpg", canvas_only=True)
                print("wrote", shot.name, json.dumps(page.dialogs()))
            finally:
                page.close()


if __name__ == "__main__":
    raise SystemExit(main())
