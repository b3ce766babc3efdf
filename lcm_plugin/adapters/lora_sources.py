"""Where a host's LoRA comes from: a file in its LoRA folder(s), or a registry adapter downloaded into it.

One list of choices serves a host's LoRA picker (ComfyUI's ``loras`` combo): the folder's files as the host
lists them, then ``[download] <name>`` for every downloadable registry LoRA. A ``[download]`` choice installs
``<name>.safetensors`` into the first LoRA folder (temp file, size + sha256 + header + architecture checks,
atomic rename; :mod:`lcm_plugin.adapters.download`) and later runs find that file and use it, so a workflow
saved with a ``[download]`` choice works before and after the download.

Besides the built-in registry, ``LCM_PLUGIN_ADAPTERS_FILE`` may name a JSON list of extra entries
(``{"name", "repo_id", "filename", "arch", "sha256", "size"?, "revision"?}``), fetched from ``HF_ENDPOINT``
(default huggingface.co) like the built-in ones: a private mirror, your own LCM-LoRA, or a test server.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from lcm_plugin.adapters import registry
from lcm_plugin.adapters.download import ProgressCallback, download_url, hub_endpoint, sha256_file
from lcm_plugin.adapters.kohya_names import ARCHS
from lcm_plugin.adapters.registry import KnownAdapter

logger = logging.getLogger(__name__)

DOWNLOAD_PREFIX = "[download] "
ADAPTERS_FILE_ENV = "LCM_PLUGIN_ADAPTERS_FILE"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, so a re-run hashes once


@dataclass(frozen=True)
class LoraChoice:
    """A parsed picker value: a ``file`` in the LoRA folder(s), or a registry adapter to ``download``."""

    kind: str
    name: str
    adapter: KnownAdapter | None = None


def extra_adapters() -> list[KnownAdapter]:
    """The entries of the JSON file named by ``LCM_PLUGIN_ADAPTERS_FILE`` (none when unset).

    Raises:
        ValueError: the file is missing, not JSON, or an entry lacks a field or has a bad name/arch/sha256.
    """
    path = os.environ.get(ADAPTERS_FILE_ENV)
    if not path:
        return []
    try:
        items = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{ADAPTERS_FILE_ENV}={path}: cannot read it as JSON ({err}); fix or unset it"
        ) from err
    if not isinstance(items, list):
        raise ValueError(f"{ADAPTERS_FILE_ENV}={path}: expected a JSON list of adapter entries")
    out = []
    for i, item in enumerate(items):
        try:
            entry = KnownAdapter(
                name=item["name"],
                repo_id=item["repo_id"],
                filename=item["filename"],
                arch=item["arch"],
                kind="lora",
                size=item.get("size"),
                sha256=str(item["sha256"]).lower(),
                revision=item.get("revision", "main"),
                notes=item.get("notes", f"from {path}"),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(
                f"{ADAPTERS_FILE_ENV}={path}: entry {i} needs name, repo_id, filename, arch and sha256 ({err!r})"
            ) from err
        if not _NAME.fullmatch(entry.name) or entry.arch not in ARCHS or not _SHA256.fullmatch(entry.sha256):
            raise ValueError(
                f"{ADAPTERS_FILE_ENV}={path}: entry {i} ({entry.name!r}) needs a plain file-name-like name, "
                f"an arch among {', '.join(ARCHS)} and a 64-hex-digit sha256"
            )
        out.append(entry)
    return out


def downloadable_adapters() -> list[KnownAdapter]:
    """Registry LoRAs a host can download for an SD-family model (:func:`_built_in`), then the extra entries.

    An extra entry with a built-in name replaces that entry (a private mirror of it, or a test server), so
    workflows saved with ``[download] <name>`` keep working against the mirror.
    """
    extras = extra_adapters()
    replaced = {e.name for e in extras}
    return [*(e for e in _built_in() if e.name not in replaced), *extras]


def _built_in() -> list[KnownAdapter]:
    """The registry's LoRAs (LCM-LoRAs, then TCD, Hyper-SD, PCM, SDXL-Lightning, DMD2) a host can verify: known
    sha256, an SD-family architecture."""
    return [
        e for e in registry.every_adapter() if e.kind == "lora" and e.repo_id and e.sha256 and e.arch in ARCHS
    ]


def lora_choices(local_files: list[str]) -> list[str]:
    """The picker's options: ``local_files`` (the host's list of its LoRA folder), then ``[download] <name>``.

    A broken ``LCM_PLUGIN_ADAPTERS_FILE`` is logged and its entries left out, so the host still starts.
    """
    try:
        adapters = downloadable_adapters()
    except ValueError as err:
        logger.error("%s", err)
        adapters = _built_in()
    return [*local_files, *(DOWNLOAD_PREFIX + e.name for e in adapters)]


def parse_choice(value: str) -> LoraChoice:
    """Split a picker value into a file name or a registry adapter.

    Raises:
        ValueError: an unknown adapter name (the message lists the known ones), or an unsafe file name.
    """
    if not value.startswith(DOWNLOAD_PREFIX):
        return LoraChoice("file", safe_relative_name(value))
    name = value[len(DOWNLOAD_PREFIX) :].strip()
    adapters = downloadable_adapters()
    for entry in adapters:
        if entry.name == name:
            return LoraChoice("download", name, entry)
    known = ", ".join(e.name for e in adapters)
    raise ValueError(f"unknown adapter {name!r}; known adapters: {known} (pick one from the list)")


def safe_relative_name(name: str) -> str:
    """``name`` if it is a relative path that stays inside its folder (sub-folders are fine).

    Raises:
        ValueError: empty, absolute, a drive, or a ``..`` component (e.g. ``../../x``).
    """
    parts = [*PurePosixPath(name).parts, *PureWindowsPath(name).parts]
    if (
        not name.strip()
        or "\0" in name
        or PurePosixPath(name).is_absolute()
        or PureWindowsPath(name).drive
        or PureWindowsPath(name).root
        or ".." in parts
    ):
        raise ValueError(
            f"LoRA name {name!r} points outside the loras folder; pick a file from the list (a name "
            "relative to the loras folder, without '..')"
        )
    return name


def find_in_folders(name: str, folders: list[str]) -> Path:
    """The file ``name`` (checked by :func:`safe_relative_name`) in the first of ``folders`` that has it.

    Raises:
        ValueError: unsafe name, or no folder has the file (the message lists the folders).
    """
    safe_relative_name(name)
    for folder in folders:
        candidate = Path(folder) / name
        if candidate.is_file():
            return candidate
    raise ValueError(
        f"LoRA {name!r} is not in the loras folder ({', '.join(folders) or 'none configured'}); put the "
        "file there or pick one from the list"
    )


def installed_name(entry: KnownAdapter) -> str:
    """The file name a registry adapter is installed under (distinct per entry; upstream names all clash)."""
    return f"{entry.name}.safetensors"


def ensure_adapter(
    entry: KnownAdapter,
    folders: list[str],
    *,
    arch: str | None,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """The installed file of ``entry``: found in ``folders`` (verified once per process), or downloaded into
    ``folders[0]`` from ``HF_ENDPOINT`` with every check, nothing left behind on failure.

    Raises:
        ValueError: ``entry`` is for another architecture than ``arch``, a same-named file in the folder is
            not the registry's file, or the download failed its size/sha256/header/architecture checks.
        RuntimeError: the download kept failing (connection) or the server refused it.
        FileNotFoundError: the server does not have the file.
    """
    if arch is not None and entry.arch != arch:
        raise ValueError(
            f"{entry.name} is for {ARCHS[entry.arch].label}, but the MODEL is {ARCHS[arch].label}; pick a "
            f"[download] adapter for {ARCHS[arch].label}"
        )
    fname = installed_name(entry)
    for folder in folders:
        path = Path(folder) / fname
        if path.is_file():
            _check_installed(path, entry)
            return path
    if not folders:
        raise ValueError("no loras folder is configured; add one (e.g. in extra_model_paths.yaml)")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise ValueError(
            f"offline (HF_HUB_OFFLINE=1) and {fname} is not in the loras folder; unset HF_HUB_OFFLINE or put "
            f"the file there yourself ({entry.repo_id}/{entry.filename})"
        )
    url = f"{hub_endpoint()}/{entry.repo_id}/resolve/{entry.revision}/{entry.filename}"
    logger.info("downloading %s from %s into %s", entry.name, url, folders[0])
    result = download_url(
        url,
        Path(folders[0]) / fname,
        sha256=entry.sha256,
        size=entry.size,
        progress=False,
        expect_arch=entry.arch,
        on_progress=on_progress,
        keep_partial=False,
    )
    stat = result.path.stat()
    _verified[(str(result.path), stat.st_size, stat.st_mtime_ns)] = result.sha256
    return result.path


def _check_installed(path: Path, entry: KnownAdapter) -> None:
    stat = path.stat()
    if entry.size is not None and stat.st_size != entry.size:
        raise ValueError(
            f"{path} is {stat.st_size} bytes, but {entry.name} is {entry.size}: it is another or a damaged "
            "file; delete or rename it, then run again to download"
        )
    if entry.sha256 is None:
        return
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    digest = _verified.get(key) or sha256_file(path)
    if digest != entry.sha256.lower():
        raise ValueError(
            f"{path} is not {entry.name} (sha256 {digest[:12]}..., expected {entry.sha256[:12]}...); it is "
            "another or a damaged file: delete or rename it, then run again to download"
        )
    _verified[key] = digest
