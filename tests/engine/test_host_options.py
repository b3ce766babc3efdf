"""Which LCM settings a host sampler uses: its own inputs, then a model patch's, then the defaults."""

from __future__ import annotations

import pytest

from lcm_plugin.host_options import resolve_lcm_options


def test_precedence_sampler_then_patch_then_defaults():
    plain = {"consistency": "lcm", "apply_boundary_condition": True, "initial_noise": "pure"}
    assert resolve_lcm_options() == {"original_inference_steps": 50, "gamma": 1.0, **plain}
    patched = {"original_inference_steps": 20, "gamma": 0.3}
    assert resolve_lcm_options(patched) == {**patched, **plain}
    assert resolve_lcm_options(patched, gamma=0.0) == {"original_inference_steps": 20, "gamma": 0.0, **plain}
    recipe = {"consistency": "tcd", "apply_boundary_condition": False, "initial_noise": "sigma_max"}
    assert resolve_lcm_options(recipe)["consistency"] == "tcd"
    assert resolve_lcm_options(recipe, consistency="lcm", initial_noise=None)["consistency"] == "lcm"
    assert resolve_lcm_options(recipe, initial_noise=None)["initial_noise"] == "sigma_max"
    assert resolve_lcm_options(patched, original_inference_steps=4)["original_inference_steps"] == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gamma": 1.5}, r"gamma must be in \[0, 1\]"),
        ({"original_inference_steps": 5000}, r"original_inference_steps must be in \[1, 1000\]"),
        ({"consistency": "ddim"}, "consistency"),
        ({"eta": 0.3}, r"unknown LCM settings \['eta'\]"),
    ],
)
def test_out_of_range_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        resolve_lcm_options(**kwargs)
