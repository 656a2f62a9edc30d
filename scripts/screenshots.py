"""Screenshots of every dashboard tab for the README:  .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

Starts `python app.py` on a free port with a temporary work dir (as tests/conftest.py does), drives each tab
in headless Debian chromium to the state a person sees after its first action, and saves one PNG per tab.
Offline and CPU-only: phantoms, LiteMedSAM and the tiny diffusion base.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_app(work: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = open(work / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--work-dir", str(work / "outputs"),
                             "--data-root", str(ROOT.parent / "shared" / "data")], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}"
    for _ in range(360):
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the dashboard exited: see {work / 'app.log'}")
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("the dashboard did not start in 3 minutes")


def _drag_box(page, box, wh):
    W, H = wh
    c = page.locator("#pg-ann canvas")
    c.scroll_into_view_if_needed()
    bb = c.bounding_box()
    s = min(bb["width"] / W, bb["height"] / H)
    ox, oy = bb["x"] + (bb["width"] - W * s) / 2, bb["y"] + (bb["height"] - H * s) / 2
    page.mouse.move(ox + box[0] * s, oy + box[1] * s)
    page.mouse.down()
    page.mouse.move(ox + box[2] * s, oy + box[3] * s, steps=10)
    page.mouse.up()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"), help="folder for the PNGs")
    ap.add_argument("--width", type=int, default=1400, help="browser width in px")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from pipeline.data import open_source
    from pipeline.masks import mask_bbox
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = _start_app(Path(tmp))
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": args.width, "height": 1000})

                def shot(name):
                    from PIL import Image
                    page.wait_for_timeout(800)
                    page.evaluate("() => window.scrollTo(0, 0)")
                    path = out / f"{name}.png"
                    page.screenshot(path=str(path), full_page=True)
                    # a 256-colour palette keeps each picture a few hundred kB (the UI has few colours)
                    Image.open(path).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
                    print("wrote", path, f"{path.stat().st_size // 1024} kB", flush=True)

                page.goto(url)
                page.get_by_text("Quick start").first.wait_for(timeout=60_000)
                shot("guide")

                page.get_by_role("tab", name="Data").click()
                page.wait_for_function("() => [...document.querySelectorAll('#data-gallery img')]"
                                       ".filter(i => i.complete && i.naturalWidth > 0).length >= 24", timeout=120_000)
                shot("data")

                page.get_by_role("tab", name="LoRA training").click()
                page.get_by_text("Hyper-parameters (paper defaults)").click()  # phantom:24 has 17 second-trimester
                page.locator("#lora-n input").wait_for(state="visible")
                page.wait_for_timeout(500)
                page.locator("#lora-n input").fill("8")
                page.locator("#lora-n input").press("Enter")
                page.locator("#lora-show").click()
                page.wait_for_function("() => document.querySelectorAll('#lora-selection img').length >= 4",
                                       timeout=120_000)
                shot("lora")

                page.get_by_role("tab", name="Generation").click()
                page.locator("#gen-n input").fill("4")
                page.locator("#gen-n input").press("Enter")
                page.locator("#gen-start").click()
                page.wait_for_function("() => [...document.querySelectorAll('#gen-gallery img')]"
                                       ".filter(i => i.complete && i.naturalWidth > 0).length >= 4", timeout=600_000)
                page.wait_for_function("() => document.querySelector('#gen-summary').innerText.includes('valid')",
                                       timeout=120_000)
                page.locator("#gen-gallery img").first.click()
                page.wait_for_function("() => document.querySelector('#gen-info').innerText.includes('seed')")
                shot("generation")

                page.get_by_role("tab", name="Fine-tune SAM").click()
                page.locator("#ft-start").wait_for()
                shot("finetune")

                s = open_source("phantom:24")[0]
                H, W = s.image.shape
                x0, y0, x1, y1 = mask_bbox(s.mask)
                page.get_by_role("tab", name="Playground").click()
                page.locator("#pg-load").click()
                page.locator("#pg-info").get_by_text(s.name).wait_for(timeout=60_000)
                page.wait_for_timeout(800)
                _drag_box(page, (max(0, x0 - 6), max(0, y0 - 6), min(W - 1, x1 + 6), min(H - 1, y1 + 6)), (W, H))
                page.wait_for_function("() => document.querySelector('#pg-metrics').innerText.includes('Dice')",
                                       timeout=180_000)
                shot("playground")

                page.get_by_role("tab", name="Experiments").click()
                page.locator("#sw-start").wait_for()
                shot("experiments")
                browser.close()
        finally:
            proc.terminate()
            proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
