"""pyproject.toml carries complete Comfy Registry metadata, as ComfyUI's own parser (comfy_config) reads it."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.comfyui.hosts import REPO_ROOT

PARSE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from comfy_config import config_parser
c = config_parser.extract_node_configuration(sys.argv[2])
print(json.dumps({"project": c.project.model_dump(), "comfy": c.tool_comfy.model_dump()}))
"""


def test_comfyui_reads_the_registry_metadata(comfyui):
    out = subprocess.run(
        [sys.executable, "-c", PARSE, str(comfyui), str(REPO_ROOT)],
        capture_output=True, text=True, check=True, cwd=str(comfyui),
    )  # fmt: skip
    meta = json.loads(out.stdout)
    project, comfy = meta["project"], meta["comfy"]
    assert project["name"] == "lcm-plugin" and project["version"].count(".") == 2
    assert project["description"] and project["license"]["text"] == "Apache-2.0"
    assert project["urls"]["repository"].startswith("https://github.com/")
    assert project["supported_comfyui_version"] == ">=0.3.64"
    assert project["supported_os"] == ["OS Independent"]
    assert comfy["publisher_id"] == "lcm-plugin" and comfy["display_name"]
    assert comfy["icon"].endswith("/docs/icon.png") and (REPO_ROOT / "docs" / "icon.png").is_file()
