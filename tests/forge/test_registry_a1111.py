"""Registration on WebUIs this machine cannot run: AUTOMATIC1111 (no ``add_sampler``) and A1111 < 1.9 (no
schedulers), with stand-in ``modules`` packages that have exactly the attributes A1111 has (``all_samplers``,
``all_samplers_map``, ``set_samplers()``, the cached ``get_sampler_and_scheduler``; no ``sd_schedulers``)."""

from __future__ import annotations

import functools
import importlib
import logging
import sys
import types
from collections import namedtuple

import pytest


@pytest.fixture
def a1111(monkeypatch):
    """A stand-in ``modules`` package shaped like A1111 1.8 (no sd_schedulers); returns its sd_samplers."""
    modules = types.ModuleType("modules")
    modules.__path__ = []
    common = types.ModuleType("modules.sd_samplers_common")
    common.SamplerData = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])
    kdiffusion = types.ModuleType("modules.sd_samplers_kdiffusion")
    kdiffusion.KDiffusionSampler = type("KDiffusionSampler", (), {})
    shared = types.ModuleType("modules.shared")
    samplers = types.ModuleType("modules.sd_samplers")
    samplers.all_samplers, samplers.all_samplers_map, samplers.calls = [], {}, []
    samplers.set_samplers = lambda: samplers.calls.append("set_samplers")
    samplers.get_sampler_and_scheduler = functools.lru_cache(lambda *a: a)
    for name, module in {"modules": modules, "modules.sd_samplers_common": common, "modules.shared": shared,
                         "modules.sd_samplers_kdiffusion": kdiffusion, "modules.sd_samplers": samplers}.items():  # fmt: skip
        monkeypatch.setitem(sys.modules, name, module)
        if "." in name:
            setattr(modules, name.split(".", 1)[1], module)
    monkeypatch.setitem(sys.modules, "modules.sd_schedulers", None)  # "import modules.sd_schedulers" fails
    ours = ("lcm_plugin.webui.sampler", "lcm_plugin.webui.registry")  # imported here against the stand-ins
    for name in ours:
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield samplers
    import lcm_plugin.webui

    for name in ours:  # no module built on the stand-ins outlives the test
        sys.modules.pop(name, None)
        if hasattr(lcm_plugin.webui, name.rsplit(".", 1)[1]):
            delattr(lcm_plugin.webui, name.rsplit(".", 1)[1])


def test_a1111_without_schedulers_logs_one_line_and_registers_the_sampler(a1111, caplog):
    registry = importlib.import_module("lcm_plugin.webui.registry")
    a1111.get_sampler_and_scheduler("x")  # something cached
    with caplog.at_level(logging.WARNING, logger="lcm_plugin.webui.registry"):
        registry.register()
        registry.register()  # "Reload UI" imports scripts/*.py again: idempotent
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("no scheduler list (A1111 < 1.9)" in line for line in lines)
    assert [s.name for s in a1111.all_samplers] == ["LCM Exact"]
    assert a1111.all_samplers_map["LCM Exact"].options == {"scheduler": "lcm_grid"}
    assert a1111.calls == ["set_samplers"]  # the lists the UI and API read were rebuilt once
    assert a1111.get_sampler_and_scheduler.cache_info().currsize == 0
