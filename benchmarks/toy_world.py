"""Run the toy-world standard table and put it into BENCHMARKS.md (section "Toy world", other sections kept).

    python benchmarks/toy_world.py [--n-samples 128] [--lcm-lora PATH] [extra `lcm-plugin toy evaluate` args]

The numbers come from ``lcm-plugin toy evaluate`` (see lcm_plugin/toy/evaluate.py); nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Toy world"


def replace_section(text: str, body: str, title: str = SECTION) -> str:
    """Return ``text`` with the section starting at ``title`` (up to the next "## " heading) set to ``body``."""
    block = f"{title}\n\n{body.rstrip()}\n"
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        return pattern.sub(lambda _: block + "\n", text, count=1).rstrip() + "\n"
    return (text.rstrip() + "\n\n" if text.strip() else "# Benchmarks\n\n") + block


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "outputs" / "toy_eval")
    parser.add_argument("--notes", default="", help="extra text placed under the table")
    args, extra = parser.parse_known_args(argv)
    from lcm_plugin.cli import main as cli_main

    rc = cli_main(["toy", "evaluate", "--out-dir", str(args.out_dir), *extra])
    if rc != 0:
        return rc
    table = (args.out_dir / "toy_eval.md").read_text(encoding="utf-8")
    intro = (
        "Teacher: the shipped toy SD pipeline (`lcm_plugin/toy/assets/teacher`). FD and KID are measured in the "
        "judge's 128-d penultimate features against the test-split images of the same prompts; "
        '"real vs real (re-render)" is the baseline: the same test scenes rendered again with independent jitter. Adherence = fraction of images whose every '
        "captioned attribute the judge reads back correctly (per-attribute columns follow).\n\n"
    )
    bench = ROOT / "BENCHMARKS.md"
    text = bench.read_text(encoding="utf-8") if bench.exists() else ""
    tmp = bench.with_name(bench.name + ".tmp")
    tmp.write_text(
        replace_section(text, intro + table + ("\n" + args.notes if args.notes else "")), encoding="utf-8"
    )
    os.replace(tmp, bench)
    print(f"updated {bench}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
