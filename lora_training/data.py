"""Training data: caption folders, webdataset tar shards, local Hugging Face datasets, and a latent cache.

Every source is read in a deterministic order that is a pure function of (seed, epoch, rank, world size), so a
resumed run sees exactly the batches an uninterrupted run would have seen: the trainer only stores
(epoch, batch index) in its checkpoint. No global RNG is used.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def load_image(data: bytes | str | os.PathLike, resolution: int) -> torch.Tensor:
    """Decode an image, resize its short side to ``resolution``, centre-crop, and return (3, H, W) in [-1, 1]."""
    from PIL import Image

    image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    image = image.convert("RGB")
    w, h = image.size
    scale = resolution / min(w, h)
    image = image.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.BICUBIC)
    w, h = image.size
    left, top = (w - resolution) // 2, (h - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).reshape(resolution, resolution, 3)
    return array.permute(2, 0, 1).float().div(127.5).sub(1.0)


def _check_bad(n_bad: int, n_total: int, max_bad_fraction: float, what: str, where: str) -> None:
    if n_total == 0 or n_total == n_bad:
        raise ValueError(f"empty dataset: no usable image+caption pairs in {where}; {what}.")
    if n_bad / n_total > max_bad_fraction:
        raise ValueError(
            f"{n_bad} of {n_total} samples in {where} are unusable ({what}); fix them or raise max_bad_fraction "
            f"(now {max_bad_fraction})."
        )
    if n_bad:
        logger.warning("skipped %d of %d samples in %s (%s)", n_bad, n_total, where, what)


CAPTION_INDEXES = ("metadata.jsonl", "captions.jsonl")


def _jsonl_captions(root: Path) -> dict[Path, str]:
    """Captions from a Hugging Face imagefolder-style ``metadata.jsonl`` (or ``captions.jsonl``): lines with
    ``file_name`` and ``text``."""
    import json

    out: dict[Path, str] = {}
    for name in CAPTION_INDEXES:
        index = root / name
        if not index.is_file():
            continue
        for n, line in enumerate(index.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out[(root / row["file_name"]).resolve()] = str(row["text"])
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{index} line {n} is not a JSON object with file_name and text: {err}") from err
    return out


class CaptionFolder:
    """Map-style dataset of ``NAME.png`` + ``NAME.txt`` pairs (recursively), or images listed in a
    ``metadata.jsonl``/``captions.jsonl`` (file_name, text). Missing captions and corrupt images are found at
    construction, skipped and counted (``self.skipped``); too many of them is an error."""

    def __init__(self, root: str | os.PathLike, *, resolution: int, max_bad_fraction: float = 0.05) -> None:
        from PIL import Image

        self.root, self.resolution = Path(root), resolution
        if not self.root.is_dir():
            raise FileNotFoundError(f"train_data_dir {self.root} does not exist or is not a folder.")
        images = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        self.items: list[tuple[Path, str]] = []
        self.skipped = {"missing_caption": 0, "corrupt_image": 0, "empty_caption": 0}
        indexed = _jsonl_captions(self.root)
        for path in images:
            cap = path.with_suffix(".txt")
            if cap.is_file():
                caption = cap.read_text(encoding="utf-8").strip()
            elif path.resolve() in indexed:
                caption = indexed[path.resolve()].strip()
            else:
                self.skipped["missing_caption"] += 1
                continue
            if not caption:
                self.skipped["empty_caption"] += 1
                continue
            try:
                with Image.open(path) as im:
                    im.verify()
            except Exception:  # PIL raises many types for broken files
                self.skipped["corrupt_image"] += 1
                continue
            self.items.append((path, caption))
        reasons = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in self.skipped.items() if v) or "no images found"
        _check_bad(sum(self.skipped.values()), len(images), max_bad_fraction, reasons, str(self.root))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        path, caption = self.items[index]
        return {"pixel_values": load_image(path, self.resolution), "caption": caption}


class HFDataset:
    """Map-style wrapper of a local Hugging Face dataset saved with ``save_to_disk`` (needs ``datasets``)."""

    def __init__(self, path: str, *, image_column: str, caption_column: str, resolution: int) -> None:
        try:
            import datasets
        except ImportError as err:
            raise RuntimeError("hf_dataset needs the `datasets` package: pip install datasets") from err
        self.ds = datasets.load_from_disk(path)
        if isinstance(self.ds, datasets.DatasetDict):
            self.ds = self.ds["train"]
        for col in (image_column, caption_column):
            if col not in self.ds.column_names:
                raise ValueError(f"column {col!r} not in dataset {path} (columns: {self.ds.column_names}).")
        if len(self.ds) == 0:
            raise ValueError(f"empty dataset: {path} has no rows.")
        self.image_column, self.caption_column, self.resolution = image_column, caption_column, resolution

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> dict:
        row = self.ds[index]
        image = row[self.image_column]
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return {"pixel_values": load_image(buf.getvalue(), self.resolution), "caption": str(row[self.caption_column])}


class LatentCache:
    """Map-style dataset over a precomputed cache: VAE latent mean/std and text embeddings per sample."""

    REQUIRED = ("latent_mean", "latent_std", "prompt_embeds")

    def __init__(self, path: str | os.PathLike) -> None:
        from safetensors.torch import load_file

        if not Path(path).is_file():
            raise FileNotFoundError(f"cache_file {path} does not exist; build it with `lcm-plugin train cache`.")
        self.tensors = load_file(str(path))
        missing = [k for k in self.REQUIRED if k not in self.tensors]
        if missing:
            raise ValueError(f"{path} is not a latent cache (missing {missing}); rebuild it with `lcm-plugin train cache`.")
        if self.tensors["latent_mean"].shape[0] == 0:
            raise ValueError(f"empty dataset: cache {path} holds no samples.")

    def __len__(self) -> int:
        return self.tensors["latent_mean"].shape[0]

    def __getitem__(self, index: int) -> dict:
        # "shared.*" tensors (the unconditional embedding) are stored once, with a leading dim of 1.
        return {k.removeprefix("shared."): v[0] if k.startswith("shared.") else v[index] for k, v in self.tensors.items()}


def _grouped_members(tar: tarfile.TarFile) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) for each run of adjacent files sharing a key in a streamed tar."""
    key, parts = None, {}
    for member in tar:
        if not member.isfile():
            continue
        stem, _, ext = member.name.partition(".")
        if stem != key:
            if key is not None:
                yield key, parts
            key, parts = stem, {}
        parts[ext.lower()] = tar.extractfile(member).read()
    if key is not None:
        yield key, parts


def iter_tar_pairs(shards: list[str]) -> Iterator[tuple[str, bytes, str]]:
    """Stream (key, image bytes, caption) from webdataset shards in order; entries of one key must be adjacent
    (as webdataset writes them). Keys without an image or a caption are skipped and counted in the log."""
    skipped = 0
    for shard in shards:
        if not Path(shard).is_file():
            raise FileNotFoundError(f"webdataset shard {shard} does not exist.")
        with tarfile.open(shard, "r|*") as tar:
            for key, parts in _grouped_members(tar):
                pair = _pair(key, parts)
                if pair is None:
                    skipped += 1
                else:
                    yield pair
    if skipped:
        logger.warning("skipped %d webdataset keys without an image or a caption", skipped)


def _pair(key: str, parts: dict[str, bytes]) -> tuple[str, bytes, str] | None:
    image = next((parts[e] for e in ("png", "jpg", "jpeg", "webp") if e in parts), None)
    caption = parts.get("txt")
    if image is None or caption is None or not caption.strip():
        return None
    return key, image, caption.decode("utf-8").strip()


class WebDatasetShards:
    """Streaming webdataset source: shard order reshuffled per epoch (seeded), samples in shard order.

    Corrupt images are skipped and counted (``self.skipped``); ``max_bad_fraction`` is enforced per epoch.
    """

    def __init__(self, shards: list[str], *, resolution: int, max_bad_fraction: float = 0.05) -> None:
        missing = [s for s in shards if not Path(s).is_file()]
        if missing:
            raise FileNotFoundError(f"webdataset shards not found: {missing}.")
        self.shards, self.resolution, self.max_bad_fraction = list(shards), resolution, max_bad_fraction
        self.skipped = 0

    def samples(self, seed: int, epoch: int) -> Iterator[dict]:
        """All usable samples of one epoch, in the seeded order."""
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = [self.shards[i] for i in torch.randperm(len(self.shards), generator=gen).tolist()]
        n_total = n_bad = 0
        for _key, data, caption in iter_tar_pairs(order):
            n_total += 1
            try:
                pixels = load_image(data, self.resolution)
            except Exception:  # PIL raises many types for broken files
                n_bad += 1
                self.skipped += 1
                continue
            yield {"pixel_values": pixels, "caption": caption}
        _check_bad(n_bad, n_total, self.max_bad_fraction, f"{n_bad} corrupt images", "the webdataset shards")


def collate(samples: list[dict]) -> dict:
    """Stack tensors, keep strings as lists."""
    out = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out


@dataclass
class DataPosition:
    """Where the data stream is: the epoch and the number of batches already consumed in it."""

    epoch: int = 0
    batch: int = 0


class BatchStream:
    """Deterministic, resumable batches for one process of ``world_size``.

    Map-style sources: a seeded permutation per epoch, split round-robin over processes, cut into full batches
    (the remainder is dropped). Streams: every ``world_size``-th sample. ``position`` says what comes next.
    """

    def __init__(self, source, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.source, self.batch_size, self.seed, self.rank, self.world = source, batch_size, seed, rank, world_size
        self.position = DataPosition()
        if hasattr(source, "__len__") and len(source) < batch_size * world_size:
            raise ValueError(
                f"dataset has {len(source)} samples, fewer than one batch ({batch_size} x {world_size} processes); "
                "add data or lower train_batch_size."
            )

    def _epoch_batches(self, epoch: int) -> Iterator:
        """Zero-argument loaders of this epoch's batches for this process."""
        if hasattr(self.source, "samples"):
            it = (s for i, s in enumerate(self.source.samples(self.seed, epoch)) if i % self.world == self.rank)
            batch: list[dict] = []
            for sample in it:
                batch.append(sample)
                if len(batch) == self.batch_size:
                    yield lambda b=batch: b
                    batch = []
            return
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.source), generator=gen)[self.rank :: self.world].tolist()
        for b in range(len(perm) // self.batch_size):
            idx = perm[b * self.batch_size : (b + 1) * self.batch_size]
            yield lambda idx=idx: [self.source[i] for i in idx]  # loaded only if not skipped

    def __iter__(self) -> Iterator[dict]:
        while True:
            produced = False
            for b, batch in enumerate(self._epoch_batches(self.position.epoch)):
                produced = True
                if b < self.position.batch:
                    continue  # resume: skip what was consumed before the checkpoint
                self.position.batch = b + 1
                yield collate(batch())
            if not produced:
                raise ValueError("empty dataset: an epoch produced no full batch; add data or lower train_batch_size.")
            self.position = DataPosition(self.position.epoch + 1, 0)


def build_source(cfg) -> object:
    """The data source named by a TrainConfig."""
    if cfg.cache_file:
        return LatentCache(cfg.cache_file)
    if cfg.train_data_dir:
        return CaptionFolder(cfg.train_data_dir, resolution=cfg.resolution, max_bad_fraction=cfg.max_bad_fraction)
    if cfg.hf_dataset:
        return HFDataset(cfg.hf_dataset, image_column=cfg.hf_image_column, caption_column=cfg.hf_caption_column,
                         resolution=cfg.resolution)  # fmt: skip
    return WebDatasetShards(cfg.webdataset_shards, resolution=cfg.resolution, max_bad_fraction=cfg.max_bad_fraction)
