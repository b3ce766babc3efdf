"""workflow_format: API-format -> UI-format workflows, checked on hand-made /object_info, against the real server's
/object_info, and in the real frontend (it must send back exactly the API twin)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tests.comfyui.core_prompts import txt2img_prompt
from tests.comfyui.workflow_format import api_to_ui, convert_file, ui_to_api

OBJECT_INFO = {
    "Loader": {
        "input": {"required": {"ckpt_name": [["a.safetensors", "b.safetensors"], {}]}},
        "input_order": {"required": ["ckpt_name"]},
        "output": ["MODEL", "LATENT"],
        "output_name": ["MODEL", "LATENT"],
    },
    "Sampler": {
        "input": {
            "required": {
                "model": ["MODEL"],
                "seed": ["INT", {"default": 0, "control_after_generate": True}],
                "steps": ["INT", {"default": 20}],
                "latent": ["LATENT"],
            },
            "optional": {"gamma": ["FLOAT", {"default": 1.0}], "extra": ["LATENT"]},
        },
        "input_order": {"required": ["model", "seed", "steps", "latent"], "optional": ["gamma", "extra"]},
        "output": ["LATENT"],
        "output_name": ["samples"],
    },
    "Image": {
        "input": {"required": {"image": [["x.png"], {"image_upload": True}]}},
        "input_order": {"required": ["image"]},
        "output": ["IMAGE"],
        "output_name": ["IMAGE"],
    },
    "Int": {
        "input": {"required": {"value": ["INT", {"control_after_generate": True}]}},
        "input_order": {"required": ["value"]},
        "output": ["INT"],
        "output_name": ["INT"],
    },
}
API = {
    "1": {"class_type": "Loader", "inputs": {"ckpt_name": "b.safetensors"}},
    "2": {"class_type": "Int", "inputs": {"value": 42}},
    "3": {
        "class_type": "Sampler",
        "inputs": {"model": ["1", 0], "seed": ["2", 0], "steps": 4, "latent": ["1", 1]},
        "_meta": {"title": "My sampler"},
    },
    "4": {"class_type": "Image", "inputs": {"image": "x.png"}},
}


def test_api_to_ui_slots_widgets_links_and_layout():
    ui = api_to_ui(API, OBJECT_INFO)
    nodes = {n["id"]: n for n in ui["nodes"]}
    sampler = nodes[3]
    # widgets in input order; seed is linked, so its widget keeps the default and gets a widget slot
    assert sampler["widgets_values"] == [0, "fixed", 4, 1.0]
    assert [(s["name"], s.get("widget")) for s in sampler["inputs"]] == [
        ("model", None),
        ("seed", {"name": "seed"}),
        ("latent", None),
    ]
    assert sampler["title"] == "My sampler"
    assert nodes[2]["widgets_values"] == [42, "fixed"]
    assert nodes[4]["widgets_values"] == ["x.png", "image"]  # the upload button's value follows the combo
    assert ui["links"] == [
        [1, 1, 0, 3, 0, "MODEL"],
        [2, 2, 0, 3, 1, "INT"],
        [3, 1, 1, 3, 2, "LATENT"],
    ]
    assert nodes[1]["outputs"][0]["links"] == [1] and nodes[1]["outputs"][1]["links"] == [3]
    assert nodes[1]["pos"][0] < sampler["pos"][0]  # columns follow the graph depth
    assert ui["last_node_id"] == 4 and ui["last_link_id"] == 3 and ui["version"] == 0.4
    assert ui_to_api(ui, OBJECT_INFO) == {
        **API,
        "3": {**API["3"], "inputs": {**API["3"]["inputs"], "gamma": 1.0}},  # defaults are written out
    }


def test_api_to_ui_refuses_what_it_cannot_write():
    with pytest.raises(
        ValueError, match=r"node types \['Nope'\] are not in /object_info; is the node pack loaded\?"
    ):
        api_to_ui({"1": {"class_type": "Nope", "inputs": {}}}, OBJECT_INFO)
    with pytest.raises(ValueError, match=r"node ids \['a'\]: the UI format needs integer ids"):
        api_to_ui({"a": API["1"]}, OBJECT_INFO)
    cycle = {"1": {"class_type": "Sampler", "inputs": {"model": ["2", 0]}},
             "2": {"class_type": "Sampler", "inputs": {"model": ["1", 0]}}}  # fmt: skip
    with pytest.raises(ValueError, match="the workflow has a cycle through node"):
        api_to_ui(cycle, OBJECT_INFO)
    with pytest.raises(ValueError, match=r"node 3 input 'model' links to missing node 9"):
        api_to_ui({"3": {"class_type": "Sampler", "inputs": {"model": ["9", 0]}}}, OBJECT_INFO)


def test_convert_file_writes_the_ui_twin(tmp_path):
    api_path = tmp_path / "api.json"
    api_path.write_text(json.dumps(API))
    out = convert_file(api_path, tmp_path / "ui.json", OBJECT_INFO)
    assert json.loads(out.read_text()) == api_to_ui(API, OBJECT_INFO)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api.json", "ui.json"]  # no temp file left


def _img2img_api(ckpt_name: str) -> dict:
    """Core img2img with a SamplerCustom pipeline and a seed fed by a PrimitiveInt node (a linked widget)."""
    api = txt2img_prompt(ckpt_name, filename_prefix="format_check")
    del api["3"], api["5"]
    api.update({
        "10": {"class_type": "LoadImage", "inputs": {"image": "harness_input.png"}},
        "11": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}},
        "12": {"class_type": "PrimitiveInt", "inputs": {"value": 5}},
        "13": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "lcm"}},
        "14": {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "sgm_uniform", "steps": 2,
                                                           "denoise": 0.5}},
        "3": {"class_type": "SamplerCustom", "inputs": {"model": ["4", 0], "add_noise": True, "noise_seed": ["12", 0],
              "cfg": 1.0, "positive": ["6", 0], "negative": ["7", 0], "sampler": ["13", 0], "sigmas": ["14", 0],
              "latent_image": ["11", 0]}},
    })  # fmt: skip
    return api


def test_real_object_info_round_trip(comfy_server, tiny_checkpoint):
    oi = comfy_server.object_info()
    for api in (txt2img_prompt(tiny_checkpoint("sd15").name), _img2img_api(tiny_checkpoint("sd15").name)):
        assert ui_to_api(api_to_ui(api, oi), oi) == api


def test_the_frontend_sends_back_the_api_twin(comfy_server, tiny_checkpoint, browser):
    comfy_server.add_input_image("harness_input.png", Image.new("RGB", (64, 64), (200, 60, 30)))
    api = _img2img_api(tiny_checkpoint("sd15").name)
    page = browser.open(comfy_server)
    try:
        oi = comfy_server.object_info()
        page.load_workflow(api_to_ui(api, oi))
        assert page.dialogs() == []
        sent = {
            k: {kk: vv for kk, vv in v.items() if kk != "_meta"} for k, v in page.graph_to_prompt().items()
        }
        assert sent == api
        # the frontend's own serialization (widget sockets on every input, titles) reads back to the same prompt
        saved = {
            k: {kk: vv for kk, vv in v.items() if kk != "_meta"}
            for k, v in ui_to_api(page.graph(), oi).items()
        }
        assert saved == api
        assert [str(e) for e in page.console_errors()] == []
    finally:
        page.close()


def test_command_line_writes_and_checks_twins(tmp_path, capsys):
    from tests.comfyui.workflow_format import main

    (tmp_path / "api").mkdir()
    api_file = tmp_path / "api" / "flow.json"
    api_file.write_text(json.dumps(API))
    info = tmp_path / "object_info.json"
    info.write_text(json.dumps(OBJECT_INFO))
    common = [str(api_file), "--out-dir", str(tmp_path), "--object-info", str(info)]
    assert main(common + ["--check"]) == 1
    assert f"{tmp_path / 'flow.json'}: missing" in capsys.readouterr().out
    assert main(common) == 0
    assert main(common + ["--check"]) == 0
    edited = {**API, "3": {**API["3"], "inputs": {**API["3"]["inputs"], "steps": 8}}}
    api_file.write_text(json.dumps(edited))
    capsys.readouterr()
    assert main(common + ["--check"]) == 1
    assert "node 3 input 'steps': UI 4 vs API 8" in capsys.readouterr().out
