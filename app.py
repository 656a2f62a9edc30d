"""SonoSynth Lab dashboard.  python app.py [--host 127.0.0.1] [--port 7860] [--profile tiny|paper]

Builds one gr.Blocks with a tab per page (pages.PAGES). No model is loaded until a tab needs one.
"""
from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

import pipeline
from pipeline import browse

import gradio as gr

from pages import PAGES
from pages.common import AppContext, name_the_fields
from pipeline.config import PROFILES, ROOT, resolve_profile

DEFAULT_DATA_ROOTS = [ROOT.parent / "shared" / "data", ROOT / "data"]
# Gallery captions wrap instead of being cut: the verdict and QC of a generated sample and the pair names
# of the LoRA tab sit at the end of their captions (issue 11)
CSS = """
.gallery-item .caption-label, .thumbnail-item .caption-label, .preview .caption {
  white-space: normal !important; overflow: visible !important; text-overflow: clip !important;
  max-width: calc(100% - 8px) !important; line-height: 1.25;
}
/* the Guide's tables: the first column (a tab, a glossary word) is never broken inside a word ("Wor d",
   "LoR A" beside a long meaning, issue 33) */
#guide-text table td:first-child, #guide-text table th:first-child {
  min-width: 11em; word-break: normal !important; overflow-wrap: normal !important; hyphens: manual;
}
"""


def build_app(ctx: AppContext) -> gr.Blocks:
    # delete_cache: thumbnails and results Gradio caches per request are removed after a day
    pages = {name: importlib.import_module(f"pages.{name}") for name in PAGES}
    with gr.Blocks(title="SonoSynth Lab", delete_cache=(3600, 86400)) as demo:
        ctx.demo = demo  # pages may run something when a page opens (demo.load)
        gr.Markdown(f"# SonoSynth Lab · profile `{ctx.profile.name}`")
        with gr.Tabs():
            for name, page in pages.items():
                with gr.Tab(page.TITLE, id=name) as tab:
                    ctx.tab = tab  # a page may refresh its lists when its tab is opened (tab.select)
                    page.build(ctx)
    name_the_fields(demo)  # a refused field value names its field (pages.common)
    # every event goes through the queue: heavy ones share one worker (pages.common.HEAVY), so a second
    # user waits and sees their queue position; light ones run at most two at a time
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo


def page_head() -> str:
    """The pages' small browser scripts (a page module's HEAD), for launch(head=...) (Gradio 6)."""
    return "\n".join(getattr(importlib.import_module(f"pages.{name}"), "HEAD", "") for name in PAGES)


def make_context(profile: str | None = None, data_roots: list[str] | None = None,
                 work_dir: str | None = None) -> AppContext:
    roots = [Path(r).resolve() for r in (data_roots or [])] or \
        [r.resolve() for r in DEFAULT_DATA_ROOTS]
    work = Path(work_dir or os.environ.get("SONOSYNTH_WORK_DIR") or ROOT / "outputs").resolve()
    work.mkdir(parents=True, exist_ok=True)
    return AppContext(profile=resolve_profile(profile), data_roots=roots, work_dir=work)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="SonoSynth Lab dashboard")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--profile", choices=sorted(PROFILES), default=None,
                   help="tiny (offline CPU default) or paper (SAM ViT-B + SD v1.5, GPU)")
    p.add_argument("--data-root", action="append", default=None,
                   help="a folder whose data may be opened by typed path (repeatable); "
                        "default: ../shared/data and ./data")
    p.add_argument("--work-dir", default=None, help="where runs, LoRAs and datasets are written (default ./outputs)")
    p.add_argument("--max-upload-mb", type=int, default=200, help="largest accepted upload (default 200 MB)")
    p.add_argument("--uploads-quota-mb", type=int, default=browse.UPLOADS_QUOTA_MB,
                   help="disk for all extracted dataset uploads together; the least recently used are removed "
                        f"to make room (default {browse.UPLOADS_QUOTA_MB} MB, env SONOSYNTH_UPLOADS_QUOTA_MB)")
    args = p.parse_args(argv)
    pipeline.prepare_process()  # before anything loads torch: the OpenMP wait policy is read once, at its start
    ctx = make_context(args.profile, args.data_root, args.work_dir)
    ctx.max_upload_mb = args.max_upload_mb
    ctx.uploads_quota_mb = args.uploads_quota_mb
    print(f"SonoSynth Lab: profile {ctx.profile.name}, work dir {ctx.work_dir}, typed paths allowed under "
          f"{', '.join(map(str, ctx.allowed_roots))}", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {args.host}: anyone who can reach this address can use the dashboard and "
              "read data under the folders above (choose them with --data-root)", flush=True)
    demo = build_app(ctx)
    # serve only what a page hands out: files a handler returns are copied into Gradio's cache and served
    # from there; of the work dir only exports/ (per-session, unguessable names) may be read by URL, never
    # runs/, checkpoints, other users' uploads (Gradio serves allowed_paths + its cache, not the cwd)
    (ctx.work_dir / "exports").mkdir(parents=True, exist_ok=True)
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=f"{ctx.max_upload_mb}mb",
                allowed_paths=[str(ctx.work_dir / "exports")], theme=gr.themes.Soft(), css=CSS, head=page_head())


if __name__ == "__main__":
    main()
