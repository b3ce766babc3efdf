"""The optimizer state in a checkpoint: tensors in safetensors, the rest in JSON, nested states included."""

from __future__ import annotations

import json

import torch

from lora_training.checkpoint import flatten_optimizer_state, unflatten_optimizer_state


def _roundtrip(state: dict) -> dict:
    tensors, rest = flatten_optimizer_state(state)
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    rest = json.loads(json.dumps(rest))  # what state.json holds
    return unflatten_optimizer_state(tensors, rest)


def test_adamw_state_roundtrips_and_loads():
    p = torch.nn.Parameter(torch.randn(3, 4))
    opt = torch.optim.AdamW([p], lr=1e-3)
    p.grad = torch.randn_like(p)
    opt.step()
    back = _roundtrip(opt.state_dict())
    for key, value in opt.state_dict()["state"][0].items():
        assert torch.equal(back["state"][0][key], value)
    fresh = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone())], lr=1e-3)
    fresh.load_state_dict(back)
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_nested_tensor_states_roundtrip():
    # bitsandbytes' 8-bit optimizers nest their quantisation state in a dict per parameter; this state made the
    # first GPU run of the NF4 + 8-bit Adam trainer test fail with "Tensor is not JSON serializable".
    state = {
        "state": {
            0: {"step": 3, "state1": torch.arange(4, dtype=torch.uint8),
                "wrapped": {"absmax1": torch.rand(2), "qmap1": torch.rand(256), "note": "x"}, "list": [torch.ones(1), 2]},
            1: {"step": torch.tensor(5.0)},
        },
        "param_groups": [{"lr": 1e-3, "params": [0, 1]}],
    }  # fmt: skip
    back = _roundtrip(state)
    assert back["param_groups"] == state["param_groups"]
    assert back["state"][0]["step"] == 3 and back["state"][0]["wrapped"]["note"] == "x"
    assert torch.equal(back["state"][0]["state1"], state["state"][0]["state1"])
    assert torch.equal(back["state"][0]["wrapped"]["qmap1"], state["state"][0]["wrapped"]["qmap1"])
    assert torch.equal(back["state"][0]["list"][0], torch.ones(1)) and back["state"][0]["list"][1] == 2
    assert torch.equal(back["state"][1]["step"], torch.tensor(5.0))


def test_checkpoints_of_the_earlier_format_still_load():
    tensors = {"0.exp_avg": torch.ones(2), "0.step": torch.tensor(1.0)}
    rest = {"param_groups": [{"lr": 1.0, "params": [0]}], "scalars": {"0": {"extra": 7}}}
    back = unflatten_optimizer_state(tensors, rest)
    assert torch.equal(back["state"][0]["exp_avg"], torch.ones(2)) and back["state"][0]["extra"] == 7
