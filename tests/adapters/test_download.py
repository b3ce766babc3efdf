"""Downloads: plain https with Range resume, a hub-compatible endpoint via HF_ENDPOINT, offline mode,
checksums, architecture checks and atomic placement -- all against a loopback server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hub_constants
from safetensors.torch import save as st_save

from lcm_plugin.adapters import registry
from lcm_plugin.adapters.download import download_adapter, download_from_hub, download_url
from lcm_plugin.adapters.registry import KnownAdapter
from tests.adapters.servers import FileServer

REPO = "test-org/tiny-lcm-lora"
FILE = "pytorch_lora_weights.safetensors"


def lora_bytes(ctx: int, seed: int = 0) -> bytes:
    """A small kohya LoRA whose cross-attention context dim is ``ctx`` (768 = SD1.x, 2048 = SDXL)."""
    g = torch.Generator().manual_seed(seed)
    t = {}
    names = [f"down_blocks_{min(i, 2)}_attentions_{i % 2}_transformer_blocks_0_attn2_to_k" for i in range(4)]
    for name in [
        "lora_unet_" + n for n in names + ["mid_block_attentions_0_transformer_blocks_0_attn2_to_k"]
    ]:
        t[f"{name}.lora_down.weight"] = torch.randn(8, ctx, generator=g)
        t[f"{name}.lora_up.weight"] = torch.randn(320, 8, generator=g)
        t[f"{name}.alpha"] = torch.tensor(8.0)
    return st_save(t, metadata={"ss_network_dim": "8"})


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture()
def server():
    with FileServer() as srv:
        yield srv


@pytest.fixture()
def hub_env(tmp_path, monkeypatch, server):
    """Point huggingface_hub at the loopback server, with an empty cache of our own."""
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: other test packages' conftests set it before that
    # import (tests/training, tests/toy, tests/cli), which would leave the hub offline whatever the env says now.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    data = lora_bytes(768)
    sha = hashlib.sha256(data).hexdigest()
    server.add_hub_file(REPO, FILE, data, etag=sha)
    entry = KnownAdapter(
        name="tiny", repo_id=REPO, filename=FILE, arch="sd15", kind="lora", size=len(data), sha256=sha
    )
    monkeypatch.setattr(registry, "KNOWN_ADAPTERS", (entry,))
    return data, sha


def test_url_download_resumes_in_the_same_call_after_a_cut(tmp_path, server):
    data = lora_bytes(768)
    url = server.add("/a.safetensors", data)
    server.cut_once["/a.safetensors"] = len(data) // 3
    result = download_url(
        url, tmp_path / "a.safetensors", sha256=hashlib.sha256(data).hexdigest(), progress=False
    )
    assert result.path.read_bytes() == data
    assert ("GET", "/a.safetensors", f"bytes={len(data) // 3}-") in server.requests
    assert leftovers(tmp_path) == ["a.safetensors"]


def test_url_download_resumes_across_calls(tmp_path, server):
    data = lora_bytes(768)
    url = server.add("/a.safetensors", data)
    server.cut_once["/a.safetensors"] = 1000
    with pytest.raises(RuntimeError, match="run the same command again to resume"):
        download_url(url, tmp_path / "a.safetensors", retries=0, progress=False)
    assert leftovers(tmp_path) == [".a.safetensors.part"]
    assert (tmp_path / ".a.safetensors.part").stat().st_size == 1000
    download_url(url, tmp_path / "a.safetensors", retries=0, progress=False)
    assert server.requests[-1] == ("GET", "/a.safetensors", "bytes=1000-")
    assert (tmp_path / "a.safetensors").read_bytes() == data
    assert leftovers(tmp_path) == ["a.safetensors"]


def test_corrupted_byte_fails_the_checksum_and_leaves_nothing(tmp_path, server):
    data = lora_bytes(768)
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    url = server.add("/a.safetensors", bytes(bad))
    (tmp_path / "a.safetensors").write_bytes(b"previous version")  # an existing file must survive untouched
    with pytest.raises(ValueError, match="does not match the expected"):
        download_url(url, tmp_path / "a.safetensors", sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert leftovers(tmp_path) == ["a.safetensors"]
    assert (tmp_path / "a.safetensors").read_bytes() == b"previous version"


def test_wrong_architecture_from_a_url_is_refused_before_placement(tmp_path, server):
    url = server.add("/xl.safetensors", lora_bytes(2048))
    with pytest.raises(ValueError, match=r"Stable Diffusion XL \(sdxl.*not for Stable Diffusion 1.x"):
        download_adapter(url, tmp_path, expect_arch="sd15", progress=False)
    assert leftovers(tmp_path) == []


def test_pickle_served_as_an_adapter_is_refused(tmp_path, server):
    pickle_bytes = b"\x80\x04\x95" + b"\x00" * 64
    url = server.add("/evil.safetensors", pickle_bytes)
    for arch in ("sd15", None):  # the content is checked with and without --for
        with pytest.raises(
            ValueError, match=rf"{url} is a Python pickle.*refusing to unpickle.*nothing was installed"
        ):
            download_adapter(url, tmp_path, expect_arch=arch, progress=False)
        assert leftovers(tmp_path) == []
    # a pickle name is refused before any byte is fetched (hosts would load it by its suffix)
    ckpt = server.add("/evil.ckpt", pickle_bytes)
    with pytest.raises(
        ValueError, match=r"'evil.ckpt' \(taken from .*\) does not end in .safetensors.*--name"
    ):
        download_adapter(ckpt, tmp_path, progress=False)
    assert ("GET", "/evil.ckpt", None) not in server.requests and leftovers(tmp_path) == []


def test_hub_download_through_hf_endpoint_resumes_and_places_atomically(
    tmp_path, server, hub_env, monkeypatch
):
    import huggingface_hub.constants

    monkeypatch.setattr(
        huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 1024
    )  # flush to disk before the cut
    data, sha = hub_env
    path = f"/{REPO}/resolve/main/{FILE}"
    server.cut_once[path] = 5000
    result = download_adapter("tiny", tmp_path / "loras", expect_arch="sd15", progress=False)
    assert result.path == tmp_path / "loras" / "tiny.safetensors" and result.sha256 == sha
    assert result.path.read_bytes() == data
    assert ("GET", path, "bytes=4096-") in server.requests  # huggingface_hub resumed the cut transfer
    assert leftovers(tmp_path / "loras") == ["tiny.safetensors"]


def test_hub_wrong_architecture_is_refused_before_any_request(tmp_path, server, hub_env):
    with pytest.raises(ValueError, match="tiny is for sd15, not sdxl"):
        download_adapter("tiny", tmp_path, expect_arch="sdxl", progress=False)
    assert server.requests == []


def test_offline_mode_uses_the_cache_or_names_what_is_missing(tmp_path, server, hub_env, monkeypatch):
    data, _ = hub_env
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        FileNotFoundError,
        match=rf"offline \(HF_HUB_OFFLINE=1\) and {REPO}/{FILE} \(revision main\) "
        r"is not in the Hugging Face cache",
    ):
        download_adapter("tiny", tmp_path / "a", progress=False)
    assert server.requests == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    download_from_hub(REPO, FILE)  # fill the cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seen = len(server.requests)
    result = download_adapter("tiny", tmp_path / "b", progress=False)
    assert result.path.read_bytes() == data and len(server.requests) == seen


def test_hub_left_offline_at_import_is_named(tmp_path, server, hub_env, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # imported with HF_HUB_OFFLINE=1, unset since
    with pytest.raises(
        RuntimeError, match="huggingface_hub was imported while HF_HUB_OFFLINE .* start a new process"
    ):
        download_adapter("tiny", tmp_path, progress=False)
    assert server.requests == [] and not (tmp_path / "tiny.safetensors").exists()


def test_no_hub_download_uses_hf_endpoint_urls(tmp_path, server, hub_env, monkeypatch):
    data, _ = hub_env
    result = download_adapter("tiny", tmp_path, use_hub=False, progress=False)
    assert result.path.read_bytes() == data
    assert server.requests[-1][1] == f"/{REPO}/resolve/main/{FILE}"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        FileNotFoundError, match="--no-hub downloads of test-org/tiny-lcm-lora/.* need the network"
    ):
        download_adapter("tiny", tmp_path / "offline", use_hub=False, progress=False)


def test_missing_toy_adapter_and_unknown_names_are_clear(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "TOY_ADAPTER_DIR", tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="lcm-lora-toy: Not present in this install"):
        download_adapter("lcm-lora-toy", tmp_path)
    with pytest.raises(ValueError, match="unknown adapter 'lcm-lora-sd3'; known adapters: lcm-lora-sd15"):
        download_adapter("lcm-lora-sd3", tmp_path)
    with pytest.raises(ValueError, match="only http"):
        download_url("ftp://example.invalid/x", tmp_path / "x")


def test_unregistered_hub_repo_is_checked_from_its_own_keys(tmp_path, server, hub_env, monkeypatch):
    data, _ = hub_env
    monkeypatch.setattr(registry, "KNOWN_ADAPTERS", ())
    result = download_adapter(REPO, tmp_path, expect_arch="sd15", progress=False)
    assert result.path.name == "test-org--tiny-lcm-lora.safetensors" and result.path.read_bytes() == data
    with pytest.raises(ValueError, match=r"is for Stable Diffusion 1.x \(sd15.*not for Stable Diffusion XL"):
        download_adapter(REPO, tmp_path / "xl", expect_arch="sdxl", progress=False)
    assert leftovers(tmp_path / "xl") == []


def test_toy_adapter_is_listed_and_installed_when_present(tmp_path, monkeypatch):
    toy_dir = tmp_path / "assets" / "lcm_lora"
    toy_dir.mkdir(parents=True)
    (toy_dir / "toy_lcm_lora.safetensors").write_bytes(lora_bytes(768))
    monkeypatch.setattr(registry, "TOY_ADAPTER_DIR", toy_dir)
    entry = registry.find("lcm-lora-toy")
    assert entry.local_path == toy_dir / "toy_lcm_lora.safetensors" and entry.size == len(lora_bytes(768))
    result = download_adapter("lcm-lora-toy", tmp_path / "loras")
    assert result.path.read_bytes() == lora_bytes(768)
    assert leftovers(tmp_path / "loras") == ["lcm-lora-toy.safetensors"]


def test_truncated_safetensors_from_a_url_is_refused_even_without_checksum(tmp_path, server):
    url = server.add("/a.safetensors", lora_bytes(768)[:-10])
    # the message names the URL, not the hidden .part file (deleted by then)
    with pytest.raises(
        ValueError, match=rf"^{url} is truncated: tensors need \d+ bytes.*nothing was installed"
    ):
        download_url(url, tmp_path / "a.safetensors", progress=False)
    assert leftovers(tmp_path) == []
