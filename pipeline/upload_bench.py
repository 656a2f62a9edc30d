"""`python -m pipeline bench upload`: what a refused dataset upload costs the server (issue 35).

Builds, in a temporary folder, the zips of the issue's probe: `images/a.png` = 400 MiB of zeros (a ~400 KB
zip, under the 500 MiB unpacked limit), and a real PNG followed by 400 MiB of zeros (a header that passes, bytes that do not); each goes through
pipeline.browse.open_upload and, when accepted, the first gallery page, as the Data tab's upload does. Prints, per case, the answer, the resident memory
before and after and the peak during the call (Linux: VmHWM, reset before each case), the seconds it took
and the bytes left behind in uploads/. Goals: a refused upload leaves 0 bytes and raises the peak by well
under 100 MB. A good upload sent twice shows the content-hash reuse (one folder).
"""
from __future__ import annotations

import tempfile
import time
import zipfile
from pathlib import Path

ZEROS_MIB = 400


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: VmHWM := VmRSS
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


def _rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else float("nan")


def _png(seed: int = 0) -> bytes:
    import cv2

    from .phantom import make_phantom
    return cv2.imencode(".png", make_phantom(seed).image)[1].tobytes()


def zeros_zip(path: Path, head: bytes = b"", mib: int = ZEROS_MIB) -> Path:
    """images/a.png = head + `mib` MiB of zeros, written as a stream (the bench itself stays small)."""
    block = b"\0" * 2**20
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("images/a.png", "w", force_zip64=True) as f:
            f.write(head)
            for _ in range(mib):
                f.write(block)
    return path


def _good_zip(path: Path) -> Path:
    import cv2
    import numpy as np

    from .phantom import make_phantom
    with zipfile.ZipFile(path, "w") as z:
        for i in range(3):
            ph = make_phantom(i)
            z.writestr(f"ds/images/p{i}.png", cv2.imencode(".png", ph.image)[1].tobytes())
            z.writestr(f"ds/masks/p{i}.png", cv2.imencode(".png", ph.mask.astype(np.uint8) * 255)[1].tobytes())
    return path


def _disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def run_bench(args=None) -> dict:
    from .browse import gallery_page, open_upload
    from .data import DataError, open_source
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="sonosynth-upload-bench-") as tmp:
        tmp = Path(tmp)
        uploads = tmp / "work" / "uploads"
        cases = {"zeros": zeros_zip(tmp / "zeros.zip"),
                 "png_then_zeros": zeros_zip(tmp / "png_then_zeros.zip", head=_png()),
                 "good": _good_zip(tmp / "good.zip")}
        out["peak_reset"] = _reset_peak()
        for name, z in [*cases.items(), ("good_again", cases["good"])]:
            before = _rss_mb()
            _reset_peak()
            t = time.perf_counter()
            try:  # what the Data tab does: open the upload, then show its first page
                spec = open_upload(z, uploads)
                answer = "accepted: " + spec.replace(str(uploads), "uploads")
                problems = gallery_page(open_source(spec, [uploads]), 0)[3]
                answer += f"; first page: {len(problems)} unreadable" if problems else "; first page shown"
            except DataError as exc:
                answer = f"refused: {exc}"
            out[f"{name}_zip_kb"] = round(z.stat().st_size / 1024, 1)
            out[f"{name}_answer"] = answer
            out[f"{name}_seconds"] = round(time.perf_counter() - t, 3)
            out[f"{name}_rss_before_mb"] = round(before, 1)
            out[f"{name}_rss_after_mb"] = round(_rss_mb(), 1)
            out[f"{name}_peak_increase_mb"] = round(_peak_mb() - before, 1)
            out[f"{name}_uploads_bytes_after"] = _disk(uploads)
            out[f"{name}_upload_folders_after"] = len(list(uploads.iterdir())) if uploads.is_dir() else 0
    return out


if __name__ == "__main__":  # pragma: no cover
    for k, v in run_bench().items():
        print(f"{k:>34}: {v}")
