"""Host discovery: the skip reasons say what is missing and how to get it (these tests need no ComfyUI)."""

from __future__ import annotations

from tests.comfyui import hosts


def test_comfyui_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(hosts.COMFYUI_ENV, str(tmp_path))
    assert hosts.comfyui_path() == tmp_path.resolve()
    assert hosts.comfyui_problem() == (
        f"no ComfyUI checkout at {tmp_path.resolve()} (set LCM_PLUGIN_COMFYUI_PATH to one, "
        f"or lay it out at {hosts.DEFAULT_COMFYUI})"
    )
    monkeypatch.delenv(hosts.COMFYUI_ENV)
    assert hosts.comfyui_path() == hosts.DEFAULT_COMFYUI.resolve()


def test_missing_requirements_are_named(monkeypatch, tmp_path):
    (tmp_path / "comfy").mkdir()
    (tmp_path / "main.py").write_text("")
    monkeypatch.setenv(hosts.COMFYUI_ENV, str(tmp_path))
    monkeypatch.setattr(
        hosts, "COMFYUI_MODULES", (("aiohttp", "aiohttp"), ("no_such_module_x", "no-such-pkg"))
    )
    assert hosts.comfyui_problem() == (
        "ComfyUI's requirements are not installed (no-such-pkg); run `bash scripts/install.sh --tests`"
    )


def test_browser_problem_names_chromium(monkeypatch, tmp_path):
    monkeypatch.setenv(hosts.CHROMIUM_ENV, str(tmp_path / "nope"))
    monkeypatch.setattr(hosts, "DEFAULT_CHROMIUM", str(tmp_path / "nope"))
    monkeypatch.setattr(hosts.shutil, "which", lambda name: None)
    problem = hosts.browser_problem()
    if hosts.importlib.util.find_spec("playwright") is None:
        assert problem.startswith("Playwright's Python client is not installed")
    else:
        assert problem == (
            "no chromium executable (apt-get install -y chromium, or set LCM_PLUGIN_CHROMIUM); "
            "Playwright's own browser download is not used"
        )
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv(hosts.CHROMIUM_ENV, str(fake))
    assert hosts.chromium_path() == str(fake)
