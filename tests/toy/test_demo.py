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
    assert "not a diffusers pipeline folder" in capsys.readouterr().err
