"""Markdown tables, metric charts and image grids for evaluation rows (PIL only, no matplotlib)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from lcm_plugin.toy.evaluate import EvalRow

_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75))


def _atomic_save(img: Image.Image, path: str | os.PathLike) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    img.save(tmp)
    os.replace(tmp, out)
    return out


def markdown_table(rows: Sequence[EvalRow]) -> str:
    """One Markdown table: sampler, steps, CFG, UNet evaluations, FD, KID, adherence (all and per attribute)."""
    attrs = [k for k in (rows[0].adherence if rows else {}) if k != "all"]
    head = [
        "sampler",
        "steps",
        "CFG",
        "UNet evals/img",
        "FD",
        "KID (x1e3)",
        "adherence all",
        *attrs,
        "time (s)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r.sampler,
            str(r.steps),
            f"{r.guidance_scale:g}",
            str(r.unet_evals),
            f"{r.fd:.3f}",
            f"{1e3 * r.kid:.2f} ± {1e3 * r.kid_std:.2f}",
            f"{r.adherence.get('all', float('nan')):.3f}",
            *(f"{r.adherence.get(a, float('nan')):.3f}" for a in attrs),
            f"{r.seconds:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(rows: Sequence[EvalRow], path: str | os.PathLike, preamble: str = "") -> Path:
    """Write ``preamble`` and the table to ``path`` atomically."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(preamble + markdown_table(rows), encoding="utf-8")
    os.replace(tmp, out)
    return out


def _panel(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    title: str,
    series: dict[str, list[tuple[int, float]]],
    baseline: float | None,
    font,
) -> None:
    """A log-x line chart of metric vs steps inside ``box``."""
    import math

    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=(0, 0, 0))
    draw.text((x0 + 4, y0 - 16), title, fill=(0, 0, 0), font=font)
    values = [v for pts in series.values() for _, v in pts] + ([baseline] if baseline is not None else [])
    steps = sorted({s for pts in series.values() for s, _ in pts}) or [1]
    lo, hi = min(values, default=0.0), max(values, default=1.0)
    lo, hi = (lo - 0.05 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
    smin, smax = math.log(min(steps)), math.log(max(steps)) + 1e-9

    def xy(s: int, v: float) -> tuple[float, float]:
        fx = (math.log(s) - smin) / (smax - smin) if smax - smin > 1e-6 else 0.5
        return x0 + 10 + fx * (x1 - x0 - 20), y1 - 10 - (v - lo) / (hi - lo) * (y1 - y0 - 20)

    for s in steps:
        x, _ = xy(s, lo)
        draw.text((x - 4, y1 + 2), str(s), fill=(0, 0, 0), font=font)
    draw.text((x0 - 2, y0 + 2), f"{hi:.3g}", fill=(90, 90, 90), font=font)
    draw.text((x0 - 2, y1 - 14), f"{lo:.3g}", fill=(90, 90, 90), font=font)
    if baseline is not None:
        _, yb = xy(steps[0], baseline)
        draw.line((x0, yb, x1, yb), fill=(150, 150, 150), width=1)
    for k, pts in enumerate(series.values()):
        colour = _COLOURS[k % len(_COLOURS)]
        coords = [xy(s, v) for s, v in sorted(pts)]
        if len(coords) > 1:
            draw.line(coords, fill=colour, width=2)
        for cx, cy in coords:
            draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=colour)


def metrics_chart(rows: Sequence[EvalRow], path: str | os.PathLike) -> Path:
    """PNG with three panels (FD, KID, all-attribute adherence vs steps, log x); grey line = real-vs-real."""
    font = ImageFont.load_default(size=12)
    img = Image.new("RGB", (960, 330), "white")
    draw = ImageDraw.Draw(img)
    base = rows[0] if rows and rows[0].steps == 0 else None
    gen = [r for r in rows if r.steps > 0]
    names = list(dict.fromkeys(r.sampler for r in gen))
    for i, (title, get) in enumerate(
        (
            ("FD (lower is better)", lambda r: r.fd),
            ("KID (lower is better)", lambda r: r.kid),
            ("adherence, all attributes (higher is better)", lambda r: r.adherence["all"]),
        )
    ):
        series = {n: [(r.steps, get(r)) for r in gen if r.sampler == n] for n in names}
        _panel(draw, (40 + i * 310, 30, 300 + i * 310, 270), title, series, get(base) if base else None, font)
    for k, n in enumerate(names + (["real vs real"] if base else [])):
        colour = _COLOURS[k % len(_COLOURS)] if k < len(names) else (150, 150, 150)
        draw.rectangle((40 + k * 150, 305, 52 + k * 150, 317), fill=colour)
        draw.text((58 + k * 150, 304), n, fill=(0, 0, 0), font=font)
    return _atomic_save(img, path)


def _wrap(text: str, font, width: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels (a longer word gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def image_grid(
    rows_of_images: Sequence[tuple[str, torch.Tensor]],
    path: str | os.PathLike,
    scale: int = 3,
    column_titles: Sequence[str] | None = None,
) -> Path:
    """PNG grid: one labelled row per (label, images (N, 3, H, W) in [0, 1]), images upscaled ``scale`` x.

    ``column_titles`` (e.g. the prompts) are printed in full above their columns, wrapped to the column width.
    """
    font = ImageFont.load_default(size=12)
    if not rows_of_images:
        raise ValueError("image_grid needs at least one row of images")
    n = max(len(t) for _, t in rows_of_images)
    h, w = rows_of_images[0][1].shape[-2:]
    cell_w, cell_h, label_w, line_h = w * scale + 4, h * scale + 4, 230, 14
    wrapped = [_wrap(t, font, cell_w - 6) for t in column_titles or []]
    top = 6 + line_h * max((len(x) for x in wrapped), default=0) if wrapped else 4
    img = Image.new("RGB", (label_w + n * cell_w, top + len(rows_of_images) * cell_h), "white")
    draw = ImageDraw.Draw(img)
    for j, lines in enumerate(wrapped):
        for k, line in enumerate(lines):
            draw.text((label_w + j * cell_w + 3, 2 + k * line_h), line, fill=(0, 0, 0), font=font)
    for i, (label, images) in enumerate(rows_of_images):
        y = top + i * cell_h
        draw.text((4, y + cell_h // 2 - 7), label, fill=(0, 0, 0), font=font)
        for j, im in enumerate(images):
            arr = (im.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            tile = Image.fromarray(arr).resize((w * scale, h * scale), Image.NEAREST)
            img.paste(tile, (label_w + j * cell_w + 2, y + 2))
    return _atomic_save(img, path)
