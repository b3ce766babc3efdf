"""What every node of the pack shares: its category, its id prefix, and where LCM options ride on a MODEL."""

from __future__ import annotations

CATEGORY = "sampling/lcm_plugin"
"""The one "Add Node" category of the pack."""

NODE_ID_PREFIX = "LCMPlugin"
"""Every node id starts with this (ComfyUI node ids are global)."""

MODEL_OPTIONS_KEY = "lcm_plugin"
"""``model.model_options[MODEL_OPTIONS_KEY]``: the LCM Model node's settings, read by the samplers."""
