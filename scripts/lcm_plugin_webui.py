"""A1111 / Forge entry point: the WebUI imports every ``scripts/*.py`` of an extension (this repository's root).

Thin by design: make ``lcm_plugin`` importable from a plain git clone, register "LCM Exact" and "LCM Grid", and
expose the "LCM Exact" settings script. Everything else lives in :mod:`lcm_plugin.webui`.
"""

import importlib.util
import os
import sys

if importlib.util.find_spec("lcm_plugin") is None:
    # appended, not inserted: nothing in this repository may shadow the WebUI's own packages
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lcm_plugin.webui.registry import register  # noqa: E402
from lcm_plugin.webui.script import LCMExactScript  # noqa: E402, F401  (the WebUI finds Script subclasses here)

register()
