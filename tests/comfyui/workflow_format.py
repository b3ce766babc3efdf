"""API-format workflow -> UI-format workflow (what ComfyUI's "Load" and the workflow templates read).

/prompt takes the API format (``{node_id: {"class_type", "inputs"}}``); ``workflows/*.json`` and the template browser
use the frontend's graph format (litegraph, version 0.4: nodes with positions, sockets, ``widgets_values``, and a
links table). ``api_to_ui(api, object_info)`` builds the second from the first and /object_info:

- every input whose type is a socket (MODEL, LATENT, ...) becomes a node input slot; every widget input (INT, FLOAT,
  STRING, BOOLEAN, COMBO or a list of choices) a ``widgets_values`` entry, in /object_info's ``input_order``
  (required, then optional); an input with ``control_after_generate`` (seeds) is followed by its control value,
  ``"fixed"``, so a loaded workflow queues the seed it shows; ``image_upload`` combos are followed by the upload
  widget's value ``"image"``; a widget input fed by a link becomes a slot with ``"widget": {"name": ...}``;
- positions: one column per graph depth (left to right), nodes stacked in each column;
- ``_meta.title`` becomes the node title.

``ui_to_api`` is the inverse (it reads the same rules back; it also reads what the frontend itself saves, as long as
there are no muted/bypassed nodes, reroutes, legacy PrimitiveNode widgets, groups with nodes inside subgraphs), and
``twin_differences`` lists where ``workflows/*.json`` and ``workflows/api/*.json`` disagree. Command line:

    python -m tests.comfyui.workflow_format workflows/api/*.json --out-dir workflows            # write UI twins
    python -m tests.comfyui.workflow_format workflows/api/*.json --out-dir workflows --check    # exit 1 if out of sync

(without ``--object-info FILE`` it starts a ComfyUI with this repository's nodes to read /object_info). The browser round trip (load the UI file in the real
frontend, ``app.graphToPrompt()``) is the independent check of these rules (test_workflow_format.py).
"""

from __future__ import annotations

import json
from pathlib import Path

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
COLUMN_WIDTH, ROW_GAP, NODE_WIDTH = 380, 40, 320
IMAGE_OUTPUT_NODES, IMAGE_PREVIEW_HEIGHT = ("SaveImage", "PreviewImage"), 280


def is_widget(spec: list) -> bool:
    """True when an /object_info input spec ``[type, options]`` is a widget (not a socket)."""
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _inputs(info: dict) -> list[tuple[str, list]]:
    """(name, spec) of a node type's required and optional inputs, in /object_info's input_order."""
    sections = info.get("input", {})
    order = info.get("input_order") or {s: list(sections.get(s, {})) for s in ("required", "optional")}
    return [(name, sections[s][name]) for s in ("required", "optional") for name in order.get(s, [])]


def _extra_widget_values(spec: list) -> list:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    extra = []
    if options.get("control_after_generate"):
        extra.append("fixed")
    if options.get("image_upload"):
        extra.append("image")
    return extra


def _default(spec: list):
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in options:
        return options["default"]
    choices = spec[0] if isinstance(spec[0], list) else options.get("options")
    return choices[0] if choices else None


def _depths(api: dict) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(node_id: str, trail: tuple[str, ...]) -> int:
        if node_id in depth:
            return depth[node_id]
        if node_id in trail:
            raise ValueError(f"the workflow has a cycle through node {node_id}")
        ups = []
        for name, v in api[node_id]["inputs"].items():
            if _is_link(v):
                if v[0] not in api:
                    raise ValueError(f"node {node_id} input {name!r} links to missing node {v[0]}")
                ups.append(v[0])
        depth[node_id] = 1 + max((visit(u, (*trail, node_id)) for u in ups), default=-1)
        return depth[node_id]

    for node_id in api:
        visit(node_id, ())
    return depth


def _is_link(value) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def api_to_ui(api: dict, object_info: dict) -> dict:
    """The UI-format graph of an API-format workflow (see the module docstring); ids must be integers as strings."""
    unknown = sorted({n["class_type"] for n in api.values()} - set(object_info))
    if unknown:
        raise ValueError(f"node types {unknown} are not in /object_info; is the node pack loaded?")
    bad_ids = [k for k in api if not k.isdigit()]
    if bad_ids:
        raise ValueError(f"node ids {bad_ids}: the UI format needs integer ids; renumber the API workflow")
    depth = _depths(api)
    order = sorted(api, key=lambda k: (depth[k], int(k)))
    nodes, links, rows = {}, [], {}
    for index, node_id in enumerate(order):
        node = api[node_id]
        info = object_info[node["class_type"]]
        column = depth[node_id]
        inputs, widgets = [], []
        for name, spec in _inputs(info):
            value = node["inputs"].get(name)
            if is_widget(spec):
                if _is_link(value):
                    inputs.append(
                        {"name": name, "type": _type_name(spec), "widget": {"name": name}, "link": None}
                    )
                    value = _default(spec)
                widgets.append(_default(spec) if value is None else value)
                widgets.extend(_extra_widget_values(spec))
            elif name in node["inputs"] or name in info["input"].get("required", {}):
                inputs.append({"name": name, "type": _type_name(spec), "link": None})
        outputs = [
            {"name": out_name, "type": out_type, "links": [], "slot_index": i}
            for i, (out_type, out_name) in enumerate(zip(info["output"], info["output_name"], strict=True))
        ]
        y = rows.get(column, 0)
        height = 60 + 26 * (len(inputs) + len(outputs) + len(widgets))
        if node["class_type"] in IMAGE_OUTPUT_NODES:
            height += IMAGE_PREVIEW_HEIGHT  # the frontend shows the image on the node once it ran
        rows[column] = y + height + ROW_GAP
        ui = {"id": int(node_id), "type": node["class_type"], "pos": [column * COLUMN_WIDTH, y],
              "size": [NODE_WIDTH, height], "flags": {}, "order": index, "mode": 0, "inputs": inputs,
              "outputs": outputs, "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets}  # fmt: skip
        if "_meta" in node and node["_meta"].get("title"):
            ui["title"] = node["_meta"]["title"]
        nodes[node_id] = ui
    for node_id in order:
        for slot_index, slot in enumerate(nodes[node_id]["inputs"]):
            value = api[node_id]["inputs"].get(slot["name"])
            if not _is_link(value):
                continue
            origin, origin_slot = value[0], value[1]
            link_id = len(links) + 1
            link_type = nodes[origin]["outputs"][origin_slot]["type"]
            links.append([link_id, int(origin), origin_slot, int(node_id), slot_index, link_type])
            slot["link"] = link_id
            nodes[origin]["outputs"][origin_slot]["links"].append(link_id)
    return {
        "last_node_id": max(int(k) for k in api),
        "last_link_id": len(links),
        "nodes": [nodes[k] for k in order],
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}},
        "version": 0.4,
    }


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """The API-format prompt of a UI graph written by ``api_to_ui`` (no muted/bypassed nodes, no reroutes)."""
    links = {link[0]: link for link in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        info = object_info[node["type"]]
        values = list(node.get("widgets_values") or [])
        linked = {s["name"]: links[s["link"]] for s in node.get("inputs", []) if s.get("link") is not None}
        inputs = {}
        for name, spec in _inputs(info):
            if is_widget(spec):
                value = values.pop(0) if values else _default(spec)
                del values[: len(_extra_widget_values(spec))]
                inputs[name] = value
            if name in linked:
                link = linked[name]
                inputs[name] = [str(link[1]), link[2]]
        entry = {"class_type": node["type"], "inputs": inputs}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        api[str(node["id"])] = entry
    return api


def _type_name(spec: list) -> str:
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def convert_file(api_path: str | Path, ui_path: str | Path, object_info: dict) -> Path:
    """Write the UI twin of an API workflow file (atomically: temp file, then os.replace)."""
    import os
    import tempfile

    ui = api_to_ui(json.loads(Path(api_path).read_text()), object_info)
    ui_path = Path(ui_path)
    fd, tmp = tempfile.mkstemp(prefix=f".{ui_path.name}.", dir=ui_path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(ui, f, indent=2)
        f.write("\n")
    os.replace(tmp, ui_path)
    return ui_path


def twin_differences(ui: dict, api: dict, object_info: dict) -> list[str]:
    """How a UI workflow and its API twin disagree (node ids, class types, input values); [] when in sync."""
    got = ui_to_api(ui, object_info)
    diffs = [f"node {k}: only in the UI file" for k in sorted(set(got) - set(api))]
    diffs += [f"node {k}: only in the API file" for k in sorted(set(api) - set(got))]
    for k in sorted(set(got) & set(api), key=int):
        if got[k]["class_type"] != api[k]["class_type"]:
            diffs.append(
                f"node {k}: {got[k]['class_type']} in the UI file, {api[k]['class_type']} in the API file"
            )
            continue
        for name in sorted(set(got[k]["inputs"]) | set(api[k]["inputs"])):
            a, b = got[k]["inputs"].get(name), api[k]["inputs"].get(name)
            if a != b and not (b is None and name not in api[k]["inputs"] and _is_widget_default(a)):
                diffs.append(f"node {k} input {name!r}: UI {a!r} vs API {b!r}")
    return diffs


def _is_widget_default(value) -> bool:
    """An input the API file leaves out may appear in the UI file with its default (ui_to_api writes defaults)."""
    return not _is_link(value)


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.comfyui.workflow_format [--check] [--object-info FILE] API.json... --out-dir DIR``."""
    import argparse
    import sys
    import tempfile

    parser = argparse.ArgumentParser(description="Write (or --check) the UI twins of API-format workflows.")
    parser.add_argument("api_files", nargs="+", type=Path)
    parser.add_argument(
        "--out-dir", type=Path, required=True, help="folder of the UI files (same file names)"
    )
    parser.add_argument("--object-info", type=Path, help="saved /object_info JSON; default: start a ComfyUI")
    parser.add_argument("--check", action="store_true", help="only report UI files out of sync (exit 1)")
    args = parser.parse_args(argv)
    if args.object_info:
        object_info = json.loads(args.object_info.read_text())
    else:
        from tests.comfyui.server import ComfyServer

        with tempfile.TemporaryDirectory() as tmp, ComfyServer(base_dir=tmp) as server:
            object_info = server.object_info()
    status = 0
    for api_path in args.api_files:
        ui_path = args.out_dir / api_path.name
        if args.check:
            api = json.loads(api_path.read_text())
            if not ui_path.is_file():
                print(f"{ui_path}: missing (twin of {api_path})")
                status = 1
                continue
            for diff in twin_differences(json.loads(ui_path.read_text()), api, object_info):
                print(f"{ui_path}: {diff}")
                status = 1
        else:
            convert_file(api_path, ui_path, object_info)
            print(f"wrote {ui_path}")
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
