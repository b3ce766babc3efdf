"""ComfyUI's web frontend in a real browser: Playwright's Python client driving Debian's chromium, headless.

    with Browser() as browser:
        page = browser.open(server)                     # ComfyPage: the app is loaded and idle
        page.load_workflow(ui_json)                     # app.loadGraphData(...)
        assert page.dialogs() == []                     # no missing-node / validation / error dialog
        prompt_id = page.queue()                        # clicks Run, returns the prompt_id /prompt gave
        page.wait_for_output_image()                    # the output image is loaded on its node in the page
        page.screenshot(folder / "txt2img.jpg")
        assert page.console_errors() == []              # errors apart from the known core noise below

Playwright's own browser download is never used (``playwright install`` is not run): chromium comes from apt
(/usr/bin/chromium; ``LCM_PLUGIN_CHROMIUM`` overrides). Each ``open`` gets a fresh browser context.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.comfyui.hosts import chromium_path

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# Console noise that ComfyUI a125cd84 + frontend 1.27.10 produce on a fresh user directory with no custom nodes
# (measured with custom_nodes empty): 404s for per-user files that do not exist yet and for /favicon.ico, requests to
# other hosts (the frontend asks api.comfy.org for release notes; ``open`` blocks every non-loopback request, so tests
# never depend on the network), and one TypeError that the frontend's settings store throws while registering core
# settings on first load.
KNOWN_CORE_NOISE = (
    re.compile(r"/api/userdata(/|\?)"),
    re.compile(r"/user\.css$"),
    re.compile(r"/favicon\.ico$"),
    re.compile(r"^https?://(?!127\.0\.0\.1[:/])"),  # outside requests (api.comfy.org release notes): blocked
    re.compile(r"^pageerror: Cannot read properties of undefined \(reading 'id'\)\n.*addSetting", re.S),
)
# Settings written for the test user before the page loads: no first-run template browser over the canvas, no
# minimap over the graph, and no low-detail node drawing when zoomed out (MinFontSizeForLOD 0), so a fitted
# screenshot of a whole workflow stays readable as a template thumbnail.
TEST_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Minimap.Visible": False,
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,
}
DIALOG_KINDS = (
    ("missing_nodes", re.compile(r"Some Nodes Are Missing|node types were not found", re.I)),
    ("validation", re.compile(r"failed validation|Prompt outputs failed|Required input is missing", re.I)),
    ("execution_error", re.compile(r"Error occurred when executing|exception|Traceback", re.I)),
)


@dataclass
class ConsoleEntry:
    kind: str  # console message type ("error", "warning", ...) or "pageerror"
    text: str
    url: str  # where it came from (the failing resource for "Failed to load resource")

    def __str__(self) -> str:
        return f"{self.kind}: {self.text}" + (f" ({self.url})" if self.url else "")

    def is_known_core_noise(self) -> bool:
        return any(p.search(self.url) or p.search(f"{self.kind}: {self.text}") for p in KNOWN_CORE_NOISE)


_SHARED: Browser | None = None


def shared_browser() -> Browser:
    """The process's one Browser, started on first use and closed at exit.

    Playwright's sync API runs one instance per thread at a time: a second ``sync_playwright().start()`` while the
    first is alive fails ("using Playwright Sync API inside the asyncio loop"), so every fixture that needs a
    browser (tests/comfyui, tests/comfyui_nodes) shares this one.
    """
    global _SHARED
    if _SHARED is None:
        import atexit

        _SHARED = Browser().__enter__()
        atexit.register(_SHARED.__exit__, None, None, None)
    return _SHARED


class Browser:
    """Playwright + chromium for a session (context manager); each ``open(server)`` is a fresh chromium profile."""

    def __init__(self, executable: str | None = None, viewport: tuple[int, int] = (1600, 900)) -> None:
        self.executable = executable or chromium_path()
        if self.executable is None:
            raise RuntimeError(
                "no chromium executable; apt-get install -y chromium (see hosts.browser_problem)"
            )
        self.viewport = {"width": viewport[0], "height": viewport[1]}
        self._pw = None
        self._pages: list[ComfyPage] = []

    def __enter__(self) -> Browser:
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        return self

    def __exit__(self, *exc) -> None:
        try:
            for page in list(self._pages):
                page.close()
        finally:
            self._pw.stop()

    def open(self, server, timeout: float = 120.0) -> ComfyPage:
        """Start chromium with a fresh --user-data-dir, open the server's page, wait until the app is ready.

        The frontend keeps the last workflow in the profile's storage; a fresh profile per page keeps tests apart.
        """
        for key, value in TEST_SETTINGS.items():
            server.request("POST", f"/settings/{key}", value)
        profile = tempfile.mkdtemp(prefix="lcm_chromium_")
        # Playwright passes --user-data-dir itself for a persistent context (it refuses the flag in args).
        context = self._pw.chromium.launch_persistent_context(
            profile,
            executable_path=self.executable,
            headless=True,
            args=list(CHROMIUM_FLAGS),
            viewport=self.viewport,
        )
        context.route(re.compile(r"^(?!https?://127\.0\.0\.1[:/]|data:|blob:)"), lambda route: route.abort())
        page = ComfyPage(context.pages[0] if context.pages else context.new_page(), server, profile)
        self._pages.append(page)
        page._owner = self._pages
        page.page.goto(server.url, timeout=timeout * 1000)
        page.page.wait_for_function(
            "() => window.app && window.app.graph && window.app.canvas && window.app.vueAppReady",
            timeout=timeout * 1000,
        )
        page.settle()
        return page


class ComfyPage:
    """One ComfyUI tab: load workflows, read dialogs and console, queue, wait for images, take screenshots."""

    def __init__(self, page, server, profile: str | None = None) -> None:
        self.page, self.server, self._profile = page, server, profile
        self._owner: list | None = None
        self.console: list[ConsoleEntry] = []
        self.prompt_ids: list[str] = []
        page.on("console", self._on_console)
        page.on(
            "pageerror", lambda err: self.console.append(ConsoleEntry("pageerror", f"{err}\n{err.stack}", ""))
        )
        page.on("response", self._on_response)

    def _on_console(self, msg) -> None:
        if msg.type in ("error", "warning"):
            self.console.append(ConsoleEntry(msg.type, msg.text, (msg.location or {}).get("url", "")))

    def _on_response(self, response) -> None:
        if response.request.method == "POST" and re.search(r"/(api/)?prompt$", response.url):
            try:
                body = response.json()
            except Exception:  # not JSON (an error page): the prompt_id stays unknown
                return
            if isinstance(body, dict) and body.get("prompt_id"):
                self.prompt_ids.append(body["prompt_id"])

    def close(self) -> None:
        """Close the page's chromium and remove its profile."""
        try:
            self.page.context.close()
        finally:
            if self._profile:
                shutil.rmtree(self._profile, ignore_errors=True)
            if self._owner is not None and self in self._owner:
                self._owner.remove(self)

    def settle(self, seconds: float = 0.5) -> None:
        """Let pending frontend work (dialogs, node registration) finish."""
        self.page.wait_for_load_state("networkidle")
        time.sleep(seconds)

    def load_workflow(self, ui_workflow: dict, *, fit: bool = True) -> None:
        """Load a UI-format workflow into the graph, as the frontend's "Load" does (app.loadGraphData).

        With ``fit`` the view is fitted to the graph: the canvas draws (and so loads images of) visible nodes only.
        """
        self.page.evaluate("async (g) => { await window.app.loadGraphData(g); }", ui_workflow)
        self.settle()
        if fit:
            self.fit_view()

    def graph(self) -> dict:
        """The current graph, serialized by the frontend (UI format)."""
        return self.page.evaluate("() => window.app.graph.serialize()")

    def graph_to_prompt(self) -> dict:
        """The API-format prompt the frontend would send for the current graph (app.graphToPrompt().output)."""
        return self.page.evaluate("async () => (await window.app.graphToPrompt()).output")

    def dialogs(self) -> list[tuple[str, str]]:
        """Open dialogs as (kind, text): kind is missing_nodes, validation, execution_error or other."""
        texts = self.page.evaluate(
            "() => Array.from(document.querySelectorAll('.p-dialog')).map(d => d.innerText || '')"
        )
        out = []
        for text in texts:
            kind = next((k for k, pattern in DIALOG_KINDS if pattern.search(text)), "other")
            out.append((kind, text.strip()))
        return out

    def console_errors(self, include_known_noise: bool = False) -> list[ConsoleEntry]:
        """Console errors and uncaught page errors so far, without the known core noise unless asked."""
        return [
            e
            for e in self.console
            if e.kind in ("error", "pageerror") and (include_known_noise or not e.is_known_core_noise())
        ]

    def queue(self, timeout: float = 30.0) -> str:
        """Queue the graph from the page (the Run button, as a user would) and return the prompt_id /prompt gave."""
        before = len(self.prompt_ids)
        with self.page.expect_response(
            lambda r: r.request.method == "POST" and re.search(r"/(api/)?prompt$", r.url) is not None,
            timeout=timeout * 1000,
        ):
            self.page.get_by_role("button", name="Run", exact=True).first.click()
        deadline = time.monotonic() + 5
        while len(self.prompt_ids) == before and time.monotonic() < deadline:
            self.page.wait_for_timeout(50)
        if len(self.prompt_ids) == before:
            raise RuntimeError(f"the page's /prompt was rejected; dialogs: {self.dialogs()}")
        return self.prompt_ids[-1]

    def wait_for_output_image(self, prompt_id: str | None = None, timeout: float = 180.0) -> list[str]:
        """Wait until the page shows the prompt's output images (loaded <img> on their nodes); returns file names.

        ``prompt_id`` defaults to the last prompt this page queued; the server's /history says which files it
        saved, and each must be loaded (complete, non-zero width) in a node's image list on the canvas.
        """
        prompt_id = prompt_id or (self.prompt_ids[-1] if self.prompt_ids else None)
        if prompt_id is None:
            raise ValueError("no prompt queued from this page; pass prompt_id")
        deadline = time.monotonic() + timeout
        entry: dict = {}
        while time.monotonic() < deadline:
            entry = self.server.history(prompt_id)
            if (
                entry.get("status", {}).get("completed")
                or entry.get("status", {}).get("status_str") == "error"
            ):
                break
            self.page.wait_for_timeout(250)
        status = entry.get("status", {})
        if status.get("status_str") != "success":
            raise RuntimeError(f"prompt {prompt_id} did not succeed ({status}); dialogs: {self.dialogs()}")
        names = [
            img["filename"] for out in entry.get("outputs", {}).values() for img in out.get("images", [])
        ]
        if not names:
            raise RuntimeError(f"prompt {prompt_id} saved no image; outputs: {entry.get('outputs')}")
        left = max(1.0, deadline - time.monotonic())
        self.page.wait_for_function(
            """(names) => {
                const nodes = window.app.graph ? window.app.graph.nodes : [];
                const loaded = nodes.flatMap(n => (n.imgs || []).filter(im => im.complete && im.naturalWidth > 0));
                return names.every(name => loaded.some(im => decodeURIComponent(im.src).includes(name)));
            }""",
            arg=names,
            timeout=left * 1000,
        )
        self.settle(0.3)
        return names

    def fit_view(self) -> None:
        """Fit the whole graph on the canvas (the frontend's Comfy.Canvas.FitView command, the "." shortcut)."""
        self.page.evaluate("() => window.app.extensionManager.command.execute('Comfy.Canvas.FitView')")
        self.settle(0.3)

    def screenshot(
        self, path: str | Path, *, fit: bool = True, canvas_only: bool = False, quality: int = 85
    ) -> Path:
        """Save a screenshot (JPEG for .jpg/.jpeg, else PNG); with ``fit`` the whole graph is in view first.

        ``canvas_only`` keeps just the graph canvas (no menus): the shape of a workflow template thumbnail.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if fit:
            self.fit_view()
        jpeg = path.suffix.lower() in (".jpg", ".jpeg")
        target = self.page.locator("canvas#graph-canvas") if canvas_only else self.page
        target.screenshot(path=str(path), type="jpeg" if jpeg else "png", quality=quality if jpeg else None)
        return path
