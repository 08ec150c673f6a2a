"""Click to applied, as a person sees it: the trial page in headless Chromium against a real worker.

Each round steps the LR control by x1.25 (or /1.25), clicks send, and waits until
the page lists the request as applied. The time is measured in the page
(`performance.now()` at the click and when the applied line appears), so it is
what the person sees: the app's poll, the worker's poll and both writes.
Needs the test tools (Playwright) and Debian's Chromium.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import threading
from pathlib import Path
from typing import Any

from steer.bench.harness import first_trial_control, packaged_spec, percentile, start_worker, write_spec

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]


def click_to_applied(clicks: int = 20) -> dict[str, Any]:
    """`clicks` LR changes sent from the trial page; the seconds from each click to "applied" on the page."""
    from playwright.sync_api import sync_playwright

    from steer.dashboards import ids, server
    from steer.dashboards.app import create_app

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    spec = packaged_spec("steering")
    name = spec["study"]["name"]
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / f'{name}.db'}"
        proc = start_worker(write_spec(spec, Path(tmp) / "bench.toml"))
        srv = None
        try:
            first_trial_control(url, name, proc)
            srv = server.make_server(create_app(url, name), "127.0.0.1", 0)
            threading.Thread(target=srv.run, daemon=True).start()
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("dialog", lambda dialog: dialog.accept())  # a step past the searched range asks first
                page.goto(f"http://127.0.0.1:{srv.effective_port}/trial/0?study={name}")
                newest = (f"() => Math.max(0, ...[...document.querySelectorAll('#{ids.REQUESTS} li[data-command]')]"
                          ".map(li => Number(li.dataset.command)))")
                applied = (f"(n) => [...document.querySelectorAll('#{ids.REQUESTS} li.cmd-applied[data-command]')]"
                           ".some(li => Number(li.dataset.command) > n)")
                page.locator(f"#{ids.LR_SEND}").wait_for()
                for i in range(clicks):
                    page.locator(f"#{ids.LR_HINT}", has_text="the trial's LR now").wait_for()  # idle
                    before = page.evaluate(newest)
                    page.click(f"#{ids.LR_STEP}-{'mul125' if i % 2 == 0 else 'div125'}")
                    page.locator(f"#{ids.LR_HINT}", has_text="not sent yet").wait_for()  # stepped and checked
                    page.evaluate("window.__clicked = performance.now()")
                    page.click(f"#{ids.LR_SEND}")
                    page.wait_for_function(applied, arg=before, timeout=30_000, polling="raf")
                    times.append(page.evaluate("performance.now() - window.__clicked") / 1000)
                    page.wait_for_timeout(200 + (i % 5) * 60)  # spread the clicks over the poll phases
                browser.close()
        finally:
            if srv is not None:
                srv.close()
            proc.kill()
            proc.wait()
    return {"clicks": clicks, "p50_s": percentile(times, 0.5), "p95_s": percentile(times, 0.95), "max_s": max(times),
            "mean_s": statistics.fmean(times)}
