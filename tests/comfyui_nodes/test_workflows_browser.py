"""The shipped UI workflows in ComfyUI's real web frontend (headless Debian chromium driven by Playwright).

For each workflow: load it as the frontend's "Load" does, no missing-node or validation dialog, no console error
from our nodes, the frontend turns it into exactly its API twin, queue it from the page (the Run button), and the
output image appears on its node. A screenshot of each is saved under tests/comfyui/artifacts/workflows/.
"""

from __future__ import annotations

import pytest

from tests.comfyui_nodes import workflow_env

NAMES = workflow_env.workflow_names()


def _without_meta(prompt: dict) -> dict:
    return {k: {kk: vv for kk, vv in v.items() if kk != "_meta"} for k, v in prompt.items()}


@pytest.mark.parametrize("name", NAMES)
def test_workflow_loads_queues_and_shows_its_image_in_the_browser(
    workflow_server, browser, artifact_dir, name
):
    page = browser.open(workflow_server)
    try:
        page.load_workflow(workflow_env.for_cpu_ui(workflow_env.ui_workflow(name)))
        assert page.dialogs() == []
        assert _without_meta(page.graph_to_prompt()) == workflow_env.for_cpu_api(
            workflow_env.api_workflow(name)
        )
        names = page.wait_for_output_image(page.queue(), timeout=600)
        assert len(names) == (2 if name == "lcm_vs_dpmpp_25_steps" else 1)
        assert page.dialogs() == []
        shot = page.screenshot(artifact_dir("workflows") / f"{name}.jpg")
        assert shot.stat().st_size > 10_000
        errors = [str(e) for e in page.console_errors()]
        assert not [e for e in errors if "LCMPlugin" in e or "lcm" in e.lower()], errors
        assert errors == []
    finally:
        page.close()
