"""``lcm-plugin demo`` on a reduced setting: runs offline, writes a PNG, handles a missing LoRA."""

from __future__ import annotations

from PIL import Image

from lcm_plugin.cli import main


def test_demo_with_lora_writes_grid(tmp_path, random_lora, capsys):
    out = tmp_path / "demo.png"
    rc = main(
        [
            "demo",
            "--seeds",
            "1",
            "--teacher-steps",
            "2",
            "--lcm-steps",
            "1,2",
            "--lora",
            str(random_lora),
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file()
    assert "teacher DDIM 2 steps" in text and "LCM-LoRA 1 step" in text and "LCM-LoRA 2 steps" in text
    assert "adherence" in text and "total" in text
    # UNet evaluations per image (toy.evaluate.unet_evals_per_step): 2 per step with CFG, 1 without
    assert "| teacher DDIM 2 steps, CFG 4 | 4 |" in text and "| LCM-LoRA 2 steps, CFG 1 | 2 |" in text
    with Image.open(out) as im:
        assert im.size[0] > 6 * 96 and im.size[1] >= 3 * 96  # 6 prompt columns, 3 method rows (1 seed)


def test_demo_without_lora_skips_lcm_rows(tmp_path, capsys):
    out = tmp_path / "demo.png"
    rc = main(
        [
            "demo",
            "--seeds",
            "1",
            "--teacher-steps",
            "1",
            "--lora",
            str(tmp_path / "none"),
            "--out",
            str(out),
            "--prompt",
            "a red circle on the left on a black background",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file()
    assert "LCM rows skipped: no LCM-LoRA at" in text and "n/a" in text


def test_demo_reports_a_missing_model(tmp_path, capsys):
    assert main(["demo", "--model", str(tmp_path / "nothing")]) == 1
    assert "--model " + str(tmp_path / "nothing") + " does not exist" in capsys.readouterr().err
    assert main(["demo", "--model", str(tmp_path)]) == 1  # a folder, but not a pipeline
    assert "not a diffusers pipeline folder (no model_index.json)" in capsys.readouterr().err


def test_demo_grid_shows_each_prompt_above_its_column(tmp_path):
    """The column titles are the prompts, in full (wrapped), not p1..p6."""
    import torch
    from PIL import ImageFont

    from lcm_plugin.toy.report import _wrap, image_grid

    prompts = [
        "a large red circle in the center on a black background",
        "a blue cross above a green triangle",
    ]
    rows = [("row", torch.zeros(2, 3, 32, 32))]
    out = image_grid(rows, tmp_path / "g.png", scale=3, column_titles=prompts)
    font = ImageFont.load_default(size=12)
    wrapped = _wrap(prompts[0], font, 32 * 3 + 4 - 6)
    assert " ".join(wrapped) == prompts[0] and len(wrapped) > 1
    assert all(font.getlength(line) <= 32 * 3 - 2 for line in wrapped)
    with Image.open(out) as im:  # the header grows to fit every line of the longest prompt
        assert im.size == (230 + 2 * 100, 6 + 14 * len(wrapped) + 100)
