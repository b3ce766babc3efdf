"""The A1111 / Forge extension: "LCM Exact" (sampler), "LCM Grid" (scheduler) and their per-generation settings.

- :mod:`lcm_plugin.webui.params` -- settings, checks in WebUI words, infotext keys (host-free, tested without a WebUI)
- :mod:`lcm_plugin.webui.sampler` -- the sampler / scheduler classes over :mod:`lcm_plugin.k_sampler` (WebUI only)
- :mod:`lcm_plugin.webui.registry` -- adds them to the WebUI's lists (WebUI only)
- :mod:`lcm_plugin.webui.script` -- the "LCM Exact" accordion: gamma and N per generation, restored from infotext

The WebUI imports ``scripts/lcm_plugin_webui.py`` of the repository root (the extension folder), which only makes
``lcm_plugin`` importable, calls :func:`lcm_plugin.webui.registry.register` and exposes the script class.
"""
