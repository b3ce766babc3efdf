"""Which LCM settings a host sampler uses: its own inputs, then a model patch's, then the defaults."""

from __future__ import annotations

import pytest

from lcm_plugin.host_options import resolve_lcm_options


def test_precedence_sampler_then_patch_then_defaults():
    assert resolve_lcm_options() == {"original_inference_steps": 50, "gamma": 1.0}
    patched = {"original_inference_steps": 20, "gamma": 0.3}
    assert resolve_lcm_options(patched) == patched
    assert resolve_lcm_options(patched, gamma=0.0) == {"original_inference_steps": 20, "gamma": 0.0}
    assert resolve_lcm_options(patched, original_inference_steps=4)["original_inference_steps"] == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gamma": 1.5}, r"gamma must be in \[0, 1\]"),
        ({"original_inference_steps": 5000}, r"original_inference_steps must be in \[1, 1000\]"),
    ],
)
def test_out_of_range_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        resolve_lcm_options(**kwargs)
