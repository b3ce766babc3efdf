"""Download adapters into a host's LoRA folder: via huggingface_hub (cache, resume, offline mode,
``HF_ENDPOINT``/``HF_TOKEN``) or plain https (HTTP Range resume), always checked and placed atomically.

Placement: bytes go to a hidden temp file in the target folder, are checked (size, sha256, safetensors
header, base architecture), and only then ``os.replace``-d onto the final name. A failed check deletes the
temp file, so the final name never holds a half-written or wrong file.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lcm_plugin.adapters.registry import KnownAdapter, find
from lcm_plugin.adapters.safetensors_io import give_default_mode

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
DEFAULT_ENDPOINT = "https://huggingface.co"

ProgressCallback = Callable[[int, "int | None"], None]
"""``on_progress(bytes_done, bytes_total_or_None)``, called as chunks arrive (e.g. a host's progress bar)."""


@dataclass
class DownloadResult:
    """Where the file went and what it is."""

    path: Path
    size: int
    sha256: str
    source: str


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hub_endpoint() -> str:
    """``HF_ENDPOINT`` (read at call time, unlike huggingface_hub's import-time constant) or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _progress(total: int | None, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm  # a dependency of the package (the hosts ship it too)

    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        disable=not enabled,
        leave=False,
    )


def _fetch_once(
    url: str,
    part: Path,
    *,
    size: int | None,
    timeout: float,
    headers: dict[str, str],
    progress: bool,
    on_progress: ProgressCallback | None = None,
) -> None:
    """One GET into ``part``, resuming from its current length with an HTTP Range request."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is not None and have == size:
        return
    req_headers = dict(headers)
    if have:
        req_headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=req_headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (http/https only, checked by caller)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            return  # nothing left to send: the part is complete (verified by the caller)
        if err.code == 404:
            raise FileNotFoundError(f"{url} does not exist (HTTP 404)") from err
        if err.code in (401, 403):
            raise RuntimeError(
                f"{url} needs authorisation (HTTP {err.code}); set HF_TOKEN for gated Hub files"
            ) from err
        raise RuntimeError(f"download of {url} failed: HTTP {err.code} {err.reason}") from err
    with resp:
        mode = "ab"
        if have and resp.status == 200:
            logger.info("server ignored the Range request; restarting %s from byte 0", url)
            have, mode = 0, "wb"
        elif resp.status == 206:
            start = (resp.headers.get("Content-Range") or "").removeprefix("bytes ").split("-")[0]
            if start.strip() != str(have):
                raise RuntimeError(
                    f"server resumed {url} at {start!r}, expected byte {have}; delete {part} and retry"
                )
        length = resp.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        got = 0
        total = have + expected if expected is not None else size
        if on_progress is not None:
            on_progress(have, total)
        with (
            part.open(mode) as fh,
            _progress(have + expected if expected else size, have, part.name.strip("."), progress) as bar,
        ):
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                fh.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
                if on_progress is not None:
                    on_progress(have + got, total)
        if expected is not None and got < expected:
            raise ConnectionError(f"connection closed after {have + got} of {have + expected} bytes")


def download_url(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
    retries: int = 3,
    timeout: float = 30.0,
    progress: bool = True,
    expect_arch: str | None = None,
    headers: dict[str, str] | None = None,
    on_progress: ProgressCallback | None = None,
    keep_partial: bool = True,
) -> DownloadResult:
    """Download ``url`` to ``dest`` with resume, checks and atomic placement.

    The partial file ``.<name>.part`` next to ``dest`` survives interruptions, so a second call resumes it;
    with ``keep_partial=False`` it is deleted on any failure instead (nothing is left next to ``dest``).
    ``on_progress(bytes_done, bytes_total)`` reports the transfer (total None when the server sends no length).

    Raises:
        ValueError: bad URL, size/sha256 mismatch, not a safetensors LoRA, or wrong base architecture
            (the partial file is deleted in these cases).
        RuntimeError: the transfer kept failing after ``retries`` resumptions (the partial file is kept).
    """
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"only http(s) URLs can be downloaded, got {url!r}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.parent / f".{dest.name}.part"
    headers = dict(headers or {})
    token = os.environ.get("HF_TOKEN")
    if token and url.startswith(hub_endpoint()):
        headers.setdefault("Authorization", f"Bearer {token}")
    last: Exception | None = None
    for attempt in range(retries + 1):
        try:
            _fetch_once(
                url,
                part,
                size=size,
                timeout=timeout,
                headers=headers,
                progress=progress,
                on_progress=on_progress,
            )
            last = None
            break
        except (ConnectionError, http.client.HTTPException, TimeoutError, urllib.error.URLError) as err:
            last = err
            logger.warning(
                "download interrupted (%s); resuming (attempt %d of %d)", err, attempt + 1, retries
            )
        except BaseException:
            if not keep_partial:
                part.unlink(missing_ok=True)
            raise
    if last is not None and not keep_partial:
        part.unlink(missing_ok=True)
        raise RuntimeError(
            f"download of {url} failed after {retries} resumptions ({last}); nothing was kept: try again"
        )
    if last is not None:
        have = part.stat().st_size if part.exists() else 0
        if not have:
            part.unlink(missing_ok=True)
            raise RuntimeError(
                f"download of {url} failed after {retries} resumptions ({last}); nothing was received and nothing "
                f"was written to {dest.parent}: check the URL and the network, then run the same command again"
            )
        raise RuntimeError(
            f"download of {url} failed after {retries} resumptions ({last}); {have} bytes kept in "
            f"{part}: run the same command again to resume"
        )
    return _verify_and_place(
        part, dest, sha256=sha256, size=size, expect_arch=expect_arch, source=url, remove_src=True
    )


def _verify_and_place(
    src: Path,
    dest: Path,
    *,
    sha256: str | None,
    size: int | None,
    expect_arch: str | None,
    source: str,
    remove_src: bool,
) -> DownloadResult:
    """Check ``src`` and move (or copy) it onto ``dest`` atomically; on failure leave nothing at ``dest``."""
    tmp = src
    if not remove_src:  # copy (e.g. out of the hub cache) into a temp file in the target folder first
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        if tmp is not src:
            shutil.copyfile(src, tmp)
            give_default_mode(tmp)
        actual_size = tmp.stat().st_size
        if size is not None and actual_size != size:
            raise ValueError(
                f"{source}: size {actual_size} bytes, expected {size}; the download is incomplete or "
                "changed upstream; run again to re-download"
            )
        digest = sha256_file(tmp)
        if sha256 is not None and digest != sha256.lower():
            raise ValueError(
                f"{source}: sha256 {digest} does not match the expected {sha256}; the file is corrupt "
                "or changed upstream and was not installed; run again to re-download"
            )
        try:
            if expect_arch is not None:
                check_file_arch(tmp, expect_arch)
            else:
                from lcm_plugin.adapters.safetensors_io import read_header

                read_header(tmp)  # refuses pickles, truncated or foreign files before they are installed
        except ValueError as err:  # name what the user asked for, not our hidden temp file (deleted below)
            raise ValueError(
                f"{str(err).replace(tmp.name, source)}; nothing was installed in {dest.parent}"
            ) from err
        os.replace(tmp, dest)
    except BaseException:
        if remove_src or tmp is not src:
            tmp.unlink(missing_ok=True)
        raise
    logger.info("installed %s (%d bytes, sha256 %s)", dest, actual_size, digest)
    return DownloadResult(path=dest, size=actual_size, sha256=digest, source=source)


def check_file_arch(path: str | os.PathLike, expect_arch: str) -> None:
    """Raise ValueError unless ``path`` is a safetensors LoRA for ``expect_arch`` (header only, nothing loaded)."""
    from lcm_plugin.adapters.formats import parse_keys
    from lcm_plugin.adapters.inspection import check_arch, detect_arch
    from lcm_plugin.adapters.safetensors_io import read_header

    header = read_header(path)
    parsed = parse_keys(list(header.tensors))
    check_arch(
        detect_arch(parsed, {k: v.shape for k, v in header.tensors.items()}, header.metadata), expect_arch
    )


def check_file_name(name: str, url: str | None = None) -> None:
    """Refuse an install name that is not a plain ``*.safetensors`` file name (hosts load pickles by other names).

    Raises:
        ValueError: the name has a folder part or another suffix; the message says to pass ``--name``.
    """
    where = f" (taken from {url})" if url else ""
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise ValueError(f"file name {name!r}{where} must be a plain file name; the folder goes in --dest.")
    if not name.lower().endswith(".safetensors"):
        raise ValueError(
            f"file name {name!r}{where} does not end in .safetensors; only .safetensors adapters are installed "
            "(pickled .ckpt/.bin/.pt files can run code). If the file is safetensors, pass --name NAME.safetensors."
        )


def download_from_hub(repo_id: str, filename: str, *, revision: str = "main") -> Path:
    """Fetch one file into the Hugging Face cache (resumable) and return its cache path.

    Honours ``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` as set when called (but
    huggingface_hub reads ``HF_HUB_OFFLINE`` once, at import, and stays offline after that: see Raises).

    Raises:
        FileNotFoundError: offline and not cached (the message names the missing file), or not on the Hub.
        RuntimeError: the Hub could not be reached or refused access, or ``HF_HUB_OFFLINE`` was unset after
            huggingface_hub was imported with it set (that process stays offline).
    """
    try:
        from huggingface_hub import constants as hub_constants
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )
    except ImportError as err:
        raise RuntimeError(
            "huggingface_hub is not installed; `pip install lcm-plugin[hub]` or use --no-hub"
        ) from err
    offline = _env_true("HF_HUB_OFFLINE")
    cache_dir = os.environ.get("HF_HUB_CACHE") or None
    what = f"{repo_id}/{filename} (revision {revision})"
    if not offline and hub_constants.is_offline_mode():
        raise RuntimeError(
            f"cannot download {what}: huggingface_hub was imported while HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) "
            "was set and stays offline in this process; start a new process without it, or use --no-hub"
        )
    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=offline,
                endpoint=hub_endpoint(),
                token=os.environ.get("HF_TOKEN") or None,
            )
        )
    except LocalEntryNotFoundError as err:  # first: it subclasses EntryNotFoundError
        if offline:
            raise FileNotFoundError(
                f"offline (HF_HUB_OFFLINE=1) and {what} is not in the Hugging Face cache "
                f"{cache_dir or '(default ~/.cache/huggingface/hub)'}; download it once "
                "online or unset HF_HUB_OFFLINE"
            ) from err
        raise RuntimeError(f"could not download {what} from {hub_endpoint()}: {err}") from err
    except GatedRepoError as err:
        raise RuntimeError(f"{what} is gated; accept its licence on the Hub and set HF_TOKEN") from err
    except (RepositoryNotFoundError, EntryNotFoundError) as err:
        raise FileNotFoundError(f"{what} does not exist on {hub_endpoint()}") from err


def download_adapter(
    spec: str,
    target_dir: str | os.PathLike,
    *,
    name: str | None = None,
    expect_arch: str | None = None,
    sha256: str | None = None,
    use_hub: bool = True,
    progress: bool = True,
    retries: int = 3,
    filename: str = "pytorch_lora_weights.safetensors",
    revision: str = "main",
) -> DownloadResult:
    """Install a registry adapter (by name), any Hub LoRA (``org/repo`` + ``filename``) or an https URL into
    ``target_dir`` (e.g. ComfyUI ``models/loras`` or A1111 ``models/Lora``).

    ``expect_arch`` is compared with the registry entry before any byte is fetched, and with the file's own
    keys and shapes before it is placed.
    """
    target = Path(target_dir)
    if name is not None:
        check_file_name(name)
    if spec.startswith(("http://", "https://")):
        fname = name or Path(urllib.parse.urlparse(spec).path).name or "adapter.safetensors"
        check_file_name(fname, url=spec)
        target.mkdir(parents=True, exist_ok=True)
        return download_url(
            spec, target / fname, sha256=sha256, retries=retries, progress=progress, expect_arch=expect_arch
        )
    try:
        entry: KnownAdapter = find(spec)
    except ValueError:
        if spec.count("/") != 1:
            raise
        # An unregistered Hub repository: base architecture unknown until the header is checked.
        entry = KnownAdapter(
            name=spec.replace("/", "--"),
            repo_id=spec,
            filename=filename,
            arch="unknown",
            kind="lora",
            revision=revision,
        )
    if expect_arch is not None and entry.arch not in ("unknown", expect_arch):
        raise ValueError(
            f"{entry.name} is for {entry.arch}, not {expect_arch}; pick an adapter for {expect_arch} "
            "(see `lcm-plugin adapters list`)"
        )
    target.mkdir(parents=True, exist_ok=True)
    dest = target / (name or f"{entry.name}.safetensors")
    digest = sha256 or entry.sha256
    file_arch = expect_arch if entry.kind == "lora" else None
    if entry.repo_id is None:
        if entry.local_path is None:
            raise FileNotFoundError(f"{entry.name}: {entry.notes} Build it with the toy commands first.")
        return _verify_and_place(
            entry.local_path,
            dest,
            sha256=digest,
            size=entry.size,
            expect_arch=None,
            source=str(entry.local_path),
            remove_src=False,
        )
    if use_hub:
        cached = download_from_hub(entry.repo_id, entry.filename, revision=entry.revision)
        return _verify_and_place(
            cached,
            dest,
            sha256=digest,
            size=entry.size,
            expect_arch=file_arch,
            source=f"hub:{entry.repo_id}/{entry.filename}",
            remove_src=False,
        )
    if _env_true("HF_HUB_OFFLINE"):
        raise FileNotFoundError(
            f"offline (HF_HUB_OFFLINE=1): --no-hub downloads of {entry.repo_id}/{entry.filename} "
            "need the network; unset HF_HUB_OFFLINE or use the Hub cache (drop --no-hub)"
        )
    url = f"{hub_endpoint()}/{entry.repo_id}/resolve/{entry.revision}/{entry.filename}"
    return download_url(
        url, dest, sha256=digest, size=entry.size, retries=retries, progress=progress, expect_arch=file_arch
    )
