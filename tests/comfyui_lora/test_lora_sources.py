"""Where the loader's LoRA comes from: picker choices, safe names, the extra-adapters file, and registry
downloads into the loras folder against a loopback server (size/sha256/header/arch checks, progress, reuse,
nothing left behind on failure)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from lcm_plugin.adapters import lora_sources
from lcm_plugin.adapters.lora_sources import (
    ADAPTERS_FILE_ENV,
    ensure_adapter,
    extra_adapters,
    find_in_folders,
    lora_choices,
    parse_choice,
    safe_relative_name,
)
from tests.adapters.servers import FileServer
from tests.adapters.test_download import lora_bytes
from tests.comfyui_lora.lora_files import registry_file, sha256

REPO, FILE = "test-org/tiny-lcm-lora", "pytorch_lora_weights.safetensors"


class CutEveryTime(dict):
    """``FileServer.cut_once`` that never forgets: every GET of the path is cut (a download failing midway)."""

    def pop(self, key, default=None):
        return self.get(key, default)


def _entry(name: str, data: bytes, arch: str = "sd15", repo: str = REPO, **kw) -> dict:
    return {"name": name, "repo_id": repo, "filename": FILE, "arch": arch, "sha256": sha256(data)} | kw


@pytest.fixture()
def server():
    with FileServer() as srv:
        yield srv


@pytest.fixture()
def hub(server, tmp_path, monkeypatch):
    """A loopback hub serving a tiny SD1.5 LoRA registered (with its sha256) through LCM_PLUGIN_ADAPTERS_FILE."""
    data = lora_bytes(768)
    server.add_hub_file(REPO, FILE, data, etag=sha256(data))
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    path = registry_file(tmp_path / "adapters.json", [_entry("tiny-lcm-lora-sd15", data, size=len(data))])
    monkeypatch.setenv(ADAPTERS_FILE_ENV, str(path))
    return data


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_choices_are_the_folder_files_then_downloadable_registry_loras(monkeypatch):
    monkeypatch.delenv(ADAPTERS_FILE_ENV, raising=False)
    got = lora_choices(["mine.safetensors", "sub/other.safetensors"])
    assert got[:5] == [
        "mine.safetensors",
        "sub/other.safetensors",
        "[download] lcm-lora-sd15",
        "[download] lcm-lora-sdxl",
        "[download] lcm-lora-ssd-1b",
    ]
    # then the other few-step LoRAs with a known sha256; full LCM checkpoints and the toy adapter are not offered
    for name in ("tcd-sd15", "hyper-sdxl-4step", "lightning-sdxl-4step", "dmd2-sdxl-4step"):
        assert f"[download] {name}" in got
    assert not [c for c in got if "dreamshaper" in c or "toy" in c]


def test_parse_choice_tells_files_from_downloads(monkeypatch):
    monkeypatch.delenv(ADAPTERS_FILE_ENV, raising=False)
    assert parse_choice("sub/a.safetensors") == lora_sources.LoraChoice("file", "sub/a.safetensors")
    got = parse_choice("[download] lcm-lora-sdxl")
    assert got.kind == "download" and got.adapter.repo_id == "latent-consistency/lcm-lora-sdxl"
    with pytest.raises(
        ValueError, match=r"unknown adapter 'lcm-lora-sd3'; known adapters: lcm-lora-sd15, lcm-lora-sdxl"
    ):
        parse_choice("[download] lcm-lora-sd3")


@pytest.mark.parametrize(
    "name", ["../../x.safetensors", "/etc/passwd", "sub/../../x.safetensors", "..\\..\\x", "C:\\x", "", " "]
)
def test_names_that_escape_the_folder_are_refused(name):
    with pytest.raises(ValueError, match=r"points outside the loras folder; pick a file from the list"):
        safe_relative_name(name)
    with pytest.raises(ValueError, match="points outside the loras folder"):
        parse_choice(name)


def test_files_are_found_in_any_loras_folder(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    (b / "sub").mkdir(parents=True)
    a.mkdir()
    (b / "sub" / "x.safetensors").write_bytes(b"x")
    assert find_in_folders("sub/x.safetensors", [str(a), str(b)]) == b / "sub" / "x.safetensors"
    with pytest.raises(ValueError, match=rf"LoRA 'y.safetensors' is not in the loras folder \({a}, {b}\)"):
        find_in_folders("y.safetensors", [str(a), str(b)])


def test_extra_adapters_file_is_validated(tmp_path, monkeypatch, caplog):
    data = lora_bytes(768)
    path = tmp_path / "adapters.json"
    monkeypatch.setenv(ADAPTERS_FILE_ENV, str(path))
    registry_file(path, [_entry("mine", data, revision="v1")])
    (entry,) = extra_adapters()
    assert (entry.name, entry.repo_id, entry.arch, entry.revision) == ("mine", REPO, "sd15", "v1")
    assert lora_choices([])[-1] == "[download] mine"
    bad = {
        "not json": "{",
        "no sha": [{"name": "a", "repo_id": REPO, "filename": FILE, "arch": "sd15"}],
        "bad arch": [_entry("a", data, arch="sd3")],
        "bad name": [_entry("../a", data)],
        "short sha": [_entry("a", data) | {"sha256": "abc"}],
    }
    for what, content in bad.items():
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(ValueError, match=rf"{ADAPTERS_FILE_ENV}={path}"):
            extra_adapters()
        with caplog.at_level(logging.ERROR):
            assert "[download] lcm-lora-ssd-1b" in lora_choices([]), what  # built-ins still listed
        assert ADAPTERS_FILE_ENV in caplog.text


def test_download_lands_in_the_first_folder_with_progress_and_is_reused(tmp_path, server, hub):
    loras, other = tmp_path / "loras", tmp_path / "more_loras"
    seen: list[tuple[int, int | None]] = []
    entry = parse_choice("[download] tiny-lcm-lora-sd15").adapter
    path = ensure_adapter(
        entry, [str(loras), str(other)], arch="sd15", on_progress=lambda d, t: seen.append((d, t))
    )
    assert path == loras / "tiny-lcm-lora-sd15.safetensors" and path.read_bytes() == hub
    assert _listing(loras) == ["tiny-lcm-lora-sd15.safetensors"]
    assert seen[0] == (0, len(hub)) and seen[-1] == (len(hub), len(hub))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    gets = [r for r in server.requests if r[0] == "GET"]
    assert [r[1] for r in gets] == [f"/{REPO}/resolve/main/{FILE}"]
    lora_sources._verified.clear()  # a fresh process: the existing file is hashed, not downloaded
    assert ensure_adapter(entry, [str(loras)], arch="sd15") == path
    assert [r for r in server.requests if r[0] == "GET"] == gets


def test_download_for_another_architecture_is_refused_before_any_request(tmp_path, server, hub):
    entry = parse_choice("[download] tiny-lcm-lora-sd15").adapter
    with pytest.raises(
        ValueError,
        match=r"tiny-lcm-lora-sd15 is for Stable Diffusion 1.x, but the MODEL is Stable Diffusion XL; pick a "
        r"\[download\] adapter for Stable Diffusion XL",
    ):
        ensure_adapter(entry, [str(tmp_path / "loras")], arch="sdxl")
    assert server.requests == [] and _listing(tmp_path / "loras") == []


def test_download_failing_midway_leaves_nothing(tmp_path, server, hub):
    server.cut_once = CutEveryTime({f"/{REPO}/resolve/main/{FILE}": 5000})
    entry = parse_choice("[download] tiny-lcm-lora-sd15").adapter
    with pytest.raises(
        RuntimeError, match=r"failed after 3 resumptions \(connection closed after .*nothing was kept"
    ):
        ensure_adapter(entry, [str(tmp_path / "loras")], arch="sd15")
    assert _listing(tmp_path / "loras") == []


def test_download_with_other_bytes_than_registered_leaves_nothing(tmp_path, server, hub, monkeypatch):
    other = lora_bytes(768, seed=5)
    registry_file(tmp_path / "adapters.json", [_entry("tiny-lcm-lora-sd15", other)])  # sha256 of other bytes
    entry = parse_choice("[download] tiny-lcm-lora-sd15").adapter
    with pytest.raises(
        ValueError, match=r"sha256 [0-9a-f]{64} does not match the expected .* was not installed"
    ):
        ensure_adapter(entry, [str(tmp_path / "loras")], arch="sd15")
    assert _listing(tmp_path / "loras") == []


def test_download_of_a_wrong_architecture_file_leaves_nothing(tmp_path, server, hub, monkeypatch):
    xl = lora_bytes(2048)
    server.add_hub_file("test-org/xl", FILE, xl, etag=sha256(xl))
    registry_file(tmp_path / "adapters.json", [_entry("liar", xl, repo="test-org/xl")])  # registered as sd15
    entry = parse_choice("[download] liar").adapter
    with pytest.raises(ValueError, match=r"is for Stable Diffusion XL \(sdxl.*not for Stable Diffusion 1.x"):
        ensure_adapter(entry, [str(tmp_path / "loras")], arch="sd15")
    assert _listing(tmp_path / "loras") == []


def test_missing_upstream_file_leaves_nothing(tmp_path, server, hub):
    registry_file(tmp_path / "adapters.json", [_entry("gone", hub, repo="test-org/gone")])
    with pytest.raises(FileNotFoundError, match=r"test-org/gone/resolve/main/.* does not exist \(HTTP 404\)"):
        ensure_adapter(parse_choice("[download] gone").adapter, [str(tmp_path / "loras")], arch="sd15")
    assert _listing(tmp_path / "loras") == []


def test_a_foreign_file_under_the_adapter_name_is_kept_and_reported(tmp_path, server, hub):
    loras = tmp_path / "loras"
    loras.mkdir()
    (loras / "tiny-lcm-lora-sd15.safetensors").write_bytes(b"my own file")
    entry = parse_choice("[download] tiny-lcm-lora-sd15").adapter
    with pytest.raises(
        ValueError, match=r"is 11 bytes, but tiny-lcm-lora-sd15 is \d+: .*delete or rename it"
    ):
        ensure_adapter(entry, [str(loras)], arch="sd15")
    assert (loras / "tiny-lcm-lora-sd15.safetensors").read_bytes() == b"my own file"
    assert server.requests == []


def test_offline_mode_says_where_to_put_the_file(tmp_path, server, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = parse_choice("[download] tiny-lcm-lora-sd15").adapter
    with pytest.raises(
        ValueError, match=r"offline \(HF_HUB_OFFLINE=1\) and tiny-lcm-lora-sd15.safetensors is not"
    ):
        ensure_adapter(entry, [str(tmp_path / "loras")], arch="sd15")
    assert server.requests == []


def test_the_loader_modules_import_only_torch_numpy_safetensors():
    """What ComfyUI start-up imports through the node must not pull in diffusers, peft, transformers or the hub."""
    import subprocess
    import sys

    code = (
        "import sys, lcm_plugin.adapters.for_comfyui, lcm_plugin.adapters.lora_sources\n"
        "heavy = {'diffusers', 'peft', 'transformers', 'huggingface_hub', 'accelerate'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


def test_an_extra_entry_with_a_built_in_name_replaces_it(tmp_path, monkeypatch):
    """A private mirror (or a test server) of a registry adapter keeps ``[download] <name>`` workflows working."""
    data = lora_bytes(768)
    path = tmp_path / "adapters.json"
    monkeypatch.setenv(ADAPTERS_FILE_ENV, str(path))
    registry_file(path, [_entry("lcm-lora-sd15", data)])
    choice = parse_choice("[download] lcm-lora-sd15")
    assert choice.adapter.repo_id == REPO and choice.adapter.sha256 == sha256(data)
    assert lora_choices([]).count("[download] lcm-lora-sd15") == 1
