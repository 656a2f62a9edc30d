"""What every page shares: the app context and small helpers for user-facing errors."""
from __future__ import annotations

import datetime
import functools
import inspect
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from pipeline.browse import UPLOADS_QUOTA_MB
from pipeline.config import Profile
from pipeline.data import DataError

# one heavy job at a time per app: a second user waits in the queue and sees their position
HEAVY = dict(concurrency_limit=1, concurrency_id="heavy")


@dataclass
class AppContext:
    """What app.py hands to every page's build(ctx).

    shared: components published by earlier tabs for later ones (pass them as event inputs):
      "data_spec"  gr.State[str] — the Data tab's loaded source as a spec string (`phantom:24`,
                   `hc18:/abs/path`, `folder:/abs/path`; an uploaded zip becomes a folder:/hc18: spec under
                   work_dir/uploads). Per browser session; starts at `default_source`; use
                   `ctx.shared["data_spec"].change(...)` to react when the user loads another source, and
                   `pipeline.data.open_source(spec, ctx.allowed_roots)` to open it.
    """
    profile: Profile
    data_roots: list[Path]  # typed server paths must lie under one of these
    work_dir: Path  # runs/, LoRAs, synthetic datasets, uploads live here
    default_source: str = "phantom:24"
    max_upload_mb: int = 200
    # all extracted uploads together (work_dir/uploads); the least recently used go first (browse.open_upload)
    uploads_quota_mb: int = UPLOADS_QUOTA_MB
    # components a page shares with later pages (e.g. "data_spec": the Data tab's current source)
    shared: dict[str, Any] = field(default_factory=dict)
    tab: Any = None  # the gr.Tab being built (app.py sets it before each page's build): tab.select events
    demo: Any = None  # the gr.Blocks being built: demo.load events (when a browser page opens)

    @property
    def allowed_roots(self) -> list[Path]:
        return [*self.data_roots, self.work_dir]


def picture_file(image) -> str:
    """An image for a gr.Gallery / gr.Image output, as a PNG written once under the system temp folder and
    named by its content. A page that streams a gallery re-sends its earlier pictures with every update;
    handed over as arrays, Gradio re-encodes each one and rewrites its cache file IN PLACE, truncating it
    while the browser may still be downloading it (uvicorn: "Too little data for declared Content-Length").
    A file path is copied into Gradio's cache once, atomically, and never rewritten."""
    import hashlib
    import tempfile

    import cv2
    import numpy as np

    from pipeline.fileio import atomic_write_bytes
    a = np.ascontiguousarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"picture_file takes uint8 images, not {a.dtype}")
    bgr = a if a.ndim == 2 else cv2.cvtColor(a, cv2.COLOR_RGB2BGR if a.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    h = hashlib.sha256(f"{a.shape}|".encode() + a.tobytes()).hexdigest()[:32]
    root, today = Path(tempfile.gettempdir()) / "sonosynth-pictures", datetime.date.today()
    if not (root / today.isoformat()).is_dir():  # the first picture of a day clears the days before yesterday
        prune_pictures(root, today)
    path = root / today.isoformat() / h[:2] / f"{h}.png"
    if not path.is_file():
        ok, png = cv2.imencode(".png", bgr)
        if not ok:
            raise ValueError(f"could not encode a {a.shape} image as PNG")
        atomic_write_bytes(path, png.tobytes())
    return str(path)


def prune_pictures(root: Path, today: datetime.date) -> int:
    """Remove picture_file's day folders older than yesterday (and the flat layout before day folders); returns
    how many folders went. A picture is copied into Gradio's cache within seconds of being handed over, so
    nothing in use is older than yesterday; Gradio's own cache is cleared after a day as well (app.py)."""
    import re
    import shutil
    if not root.is_dir():
        return 0
    oldest_kept = (today - datetime.timedelta(days=1)).isoformat()
    gone = 0
    for d in root.iterdir():
        dated = re.fullmatch(r"\d{4}-\d{2}-\d{2}", d.name)
        if d.is_dir() and ((dated and d.name < oldest_kept) or re.fullmatch(r"[0-9a-f]{2}", d.name)):
            shutil.rmtree(d, ignore_errors=True)
            gone += 1
    return gone


def gallery_files(items) -> list:
    """Gallery items (image, caption) with every array image as a picture_file."""
    return [(picture_file(im) if hasattr(im, "dtype") else im, cap) for im, cap in items]


def user_error(exc: BaseException) -> gr.Error:
    """A clear message for the page, never a stack trace (print_exception=False: Gradio would otherwise
    print a full traceback in the server log for every refused input)."""
    if isinstance(exc, (DataError, ValueError, FileNotFoundError)):
        return gr.Error(str(exc), print_exception=False)
    return gr.Error(f"{type(exc).__name__}: {exc}", print_exception=False)


def _name_the_field(preprocess):
    """Gradio checks a Number's / Slider's minimum and maximum and a Dropdown's / Radio's choices itself,
    before any handler runs, with a message that does not say which field ("Value 0 is less than minimum
    value 1."), and a Slider given a string such as "NaN" fails with a TypeError; both leave a traceback in the
    server log. This puts the field's label in front of a clear message and logs one warning line instead."""
    @functools.wraps(preprocess)
    def checked(self, payload):
        try:
            return preprocess(self, payload)
        except gr.Error as exc:
            msg = f"{self.label or 'a number field'}: {getattr(exc, 'message', exc)}"
        except (TypeError, ValueError):  # e.g. the string "NaN" from a raw API client: a Slider compares it
            msg = f"{self.label or 'a number field'}: expected a number, got {str(payload)[:40]!r}"
        logging.getLogger(__name__).warning("refused input: %s", msg)
        raise gr.Error(msg, print_exception=False) from None
    return checked


def _checked_class(cls):
    """A subclass of a Gradio field class whose preprocess names the field; same class name, so Gradio's
    front end and API describe it as the original (get_block_name is the lower-case class name). Made with
    ABCMeta.__new__, not Gradio's ComponentMeta.__new__: for a subclass without __init__ or EVENTS the latter
    only adds writing a .pyi stub beside the defining module's source."""
    from abc import ABCMeta
    ns = {"preprocess": _name_the_field(cls.preprocess), "__module__": __name__, "__doc__": cls.__doc__,
          "__qualname__": cls.__name__}
    return ABCMeta.__new__(type(cls), cls.__name__, (cls,), ns)


# ranges and choices; Gradio's own classes are left as they are (they were once patched at import)
CHECKED_FIELDS = {cls: _checked_class(cls) for cls in (gr.Number, gr.Slider, gr.Dropdown, gr.Radio, gr.CheckboxGroup)}


def name_the_fields(demo: gr.Blocks) -> gr.Blocks:
    """Make every Number, Slider, Dropdown, Radio and CheckboxGroup of a built app refuse a bad value with the
    field's name (_name_the_field). Called once by app.build_app after the pages are built: each field becomes
    an instance of its CHECKED_FIELDS subclass, which Gradio also uses when it re-creates a field for a
    session's update (block.__class__(**kwargs)), so the check survives updates."""
    for block in demo.blocks.values():
        checked = CHECKED_FIELDS.get(type(block))
        if checked is not None:
            block.__class__ = checked
    return demo


def _label(block) -> str:
    return getattr(block, "label", None) or getattr(block, "elem_id", None) or type(block).__name__


def _refuse(msg: str) -> gr.Error:
    logging.getLogger(__name__).warning("refused input: %s", msg)
    return gr.Error(msg, print_exception=False)


def _endpoint(block_fn) -> str:
    name = getattr(block_fn, "api_name", None) or getattr(block_fn, "name", None) or "this endpoint"
    return f"/{name}" if name and not str(name).startswith(("/", "this")) else str(name)


def _validate_inputs_clearly(validate):
    """Gradio refuses a call with fewer arguments than the endpoint has inputs with a ValueError about
    "a Javascript function", which reaches an API client as {"error": null} and leaves a traceback in the
    server log (issue 35). This names the endpoint and the missing inputs by their labels instead."""
    @functools.wraps(validate)
    def checked(self, block_fn, inputs):
        wanted = list(block_fn.inputs)
        if len(inputs) < len(wanted):
            missing = ", ".join(_label(b) for b in wanted[len(inputs):])
            raise _refuse(f"{_endpoint(block_fn)} takes {len(wanted)} arguments "
                          f"({', '.join(_label(b) for b in wanted)}), got {len(inputs)}: add {missing}")
        return validate(self, block_fn, inputs)
    checked._clear = True  # type: ignore[attr-defined]
    return checked


def _move_files_clearly(move):
    """A file input that names a path on the server instead of an uploaded file is refused by Gradio with an
    InvalidPathError whose text reaches an API client as {"error": null} (issue 35): this names the field
    and the fix. Only the check of inputs (check_in_upload_folder) is translated; outputs keep Gradio's."""
    from gradio.exceptions import InvalidPathError

    from pydantic import ValidationError

    @functools.wraps(move)
    async def checked(data, block, *args, **kwargs):
        inputs = "check_in_upload_folder" in kwargs and not kwargs.get("postprocess")  # preprocess_data's call
        try:
            out = await move(data, block, *args, **kwargs)
        except InvalidPathError:
            if not inputs:
                raise
            raise _refuse(f"{_label(block)}: that file was not uploaded to this server: upload it first (with "
                          f"gradio_client: handle_file(path)); server paths are not accepted") from None
        model = getattr(block, "data_model", None)
        if inputs and model is not None and out is not None:
            # Gradio validates this next, and a failure (a bare path string, a dict without its FileData
            # meta, a number) reached the client as {"error": null} with a traceback in the log (issue 35)
            try:
                model.model_validate(out, context={"validate_meta": True})
            except ValidationError:
                hint = ("an uploaded file (gradio_client: handle_file(path)); server paths are not accepted"
                        if isinstance(block, (gr.File, gr.Image, gr.UploadButton)) else
                        f"a value of the form {type(block).__name__} takes")
                raise _refuse(f"{_label(block)}: cannot read {repr(data)[:60]} as its value: send {hint}") from None
        return out
    checked._clear = True  # type: ignore[attr-defined]
    return checked


if not getattr(gr.Blocks.validate_inputs, "_clear", False):
    gr.Blocks.validate_inputs = _validate_inputs_clearly(gr.Blocks.validate_inputs)


def _patch_move_files() -> None:
    from gradio import processing_utils
    if not getattr(processing_utils.async_move_files_to_cache, "_clear", False):
        processing_utils.async_move_files_to_cache = _move_files_clearly(processing_utils.async_move_files_to_cache)


_patch_move_files()


def guarded(fn):
    """Wrap an event handler so that any failure reaches the page as a clear gr.Error (a toast for a
    person, an error message for gradio_client), never a stack trace; unexpected ones are logged."""
    def translate(exc: Exception) -> gr.Error:
        log = logging.getLogger(fn.__module__)
        if isinstance(exc, gr.Error):
            log.warning("refused input to %s: %s", fn.__name__, getattr(exc, "message", exc))
            exc.print_exception = False
            return exc
        if isinstance(exc, (DataError, ValueError, FileNotFoundError)):
            # the server log: one warning line for a refused input; a traceback only for a bug (below)
            log.warning("refused input to %s: %s", fn.__name__, exc)
        else:
            log.exception("%s failed", fn.__name__)
        return user_error(exc)

    if inspect.isgeneratorfunction(fn):  # streaming handlers (progress, live plots)
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001
                raise translate(exc) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise translate(exc) from None
    return wrapper


# ----------------------------------------------------------------------------- helpers every page shares
def safe_name(name: str, what: str, example: str = "ux-second") -> str:
    """A user-chosen folder name (run, LoRA, sweep, dataset), refused when blank, unsafe or too long, never
    cut or defaulted: either may match another run's (pipeline.validate.check_name)."""
    from pipeline.validate import check_name
    return check_name(name, what, example)


class StopRegistry:
    """The Stop buttons of one page's long job, one flag per browser session (gradio_client calls: "api").

    A handler decorated with `job` gets a fresh flag for its call (`flag(request)`), dropped when the call
    ends, so the registry holds only the jobs running now (a dict of flags that were never removed grew by
    one per session that ever trained). `stop(request)` sets the flag of that session's running job."""

    def __init__(self) -> None:
        self._flags: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(request) -> str:
        return getattr(request, "session_hash", None) or "api"

    def job(self, fn):
        """Decorate a streaming handler that takes `request`: its session's flag lives as long as the call."""
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            key = self._key(sig.bind_partial(*args, **kwargs).arguments.get("request"))
            flag = threading.Event()
            with self._lock:
                self._flags[key] = flag
            try:
                yield from fn(*args, **kwargs)
            finally:
                with self._lock:
                    if self._flags.get(key) is flag:
                        del self._flags[key]
        return wrapper

    def flag(self, request) -> threading.Event:
        """The running job's flag (inside a `job` handler): pass `flag.is_set` to the pipeline as `stop`."""
        with self._lock:
            return self._flags[self._key(request)]

    def stop(self, request) -> bool:
        """Ask this session's running job to stop; False when it has none."""
        with self._lock:
            flag = self._flags.get(self._key(request))
        if flag is not None:
            flag.set()
        return flag is not None

    def __len__(self) -> int:
        return len(self._flags)


def follow_data_tab(ctx: AppContext, source) -> Any:
    """Keep a page's source box on the Data tab's loaded source (ctx.shared["data_spec"]); returns the
    change event (chain .then(...) on it), or None in a build without the Data tab."""
    spec_state = ctx.shared.get("data_spec")
    if spec_state is None:
        return None
    return spec_state.change(lambda s: s, inputs=[spec_state], outputs=[source], api_visibility="private")


def bind_ctx(fn, ctx: AppContext):
    """A module-level handler fn(ctx, ...) as the event handler of its other parameters. Gradio reads a
    handler's signature and type hints (gr.Request, gr.Progress) to fill its special arguments, which a
    functools.partial hides from it, so the handler gets them explicitly here."""
    import typing
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())[1:]  # without ctx
    if inspect.isgeneratorfunction(fn) or inspect.isgeneratorfunction(inspect.unwrap(fn)):
        def handler(*args, **kwargs):
            yield from fn(ctx, *args, **kwargs)
    else:
        def handler(*args, **kwargs):
            return fn(ctx, *args, **kwargs)
    handler.__name__ = handler.__qualname__ = fn.__name__
    handler.__doc__ = fn.__doc__
    handler.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    names = {p.name for p in params}
    handler.__annotations__ = {k: v for k, v in typing.get_type_hints(fn).items() if k in names}
    return handler


# ----------------------------------------------------------------------------- jobs that outlive their page
_SKIP = {"__type__": "update"}  # what gr.skip() returns
# session -> the browser's own id (kept in its localStorage, see CLIENT_ID_JS): a reload is a new Gradio
# session of the same browser, so a job is found again by this id
_CLIENTS: dict[str, str] = {}
_CLIENTS_MAX = 10_000
CLIENT_ID_JS = """(x) => { const k = 'sonosynth-client-id'; let id = localStorage.getItem(k);
  if (!id) { id = (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2) + Date.now());
             localStorage.setItem(k, id); }
  return id; }"""


def register_client(client_id, request) -> None:
    """Remember which browser this session belongs to (called from a page's load event)."""
    sh = getattr(request, "session_hash", None)
    if sh and client_id:
        if len(_CLIENTS) >= _CLIENTS_MAX:
            _CLIENTS.pop(next(iter(_CLIENTS)))
        _CLIENTS[sh] = str(client_id)[:80]


def client_key(request) -> str:
    """The key of this caller's jobs: its browser's id when known, else its session (gradio_client: "api")."""
    sh = getattr(request, "session_hash", None)
    return _CLIENTS.get(sh) or sh or "api"


class LiveJob:
    """A long job (a streaming handler's body) run in a thread of its own. Gradio stops a streaming handler
    when its page is closed or reloaded; the job went with it, and the reloaded page knew nothing of it (issue
    33). Here the handler only follows the job, and a reloaded page follows it again (`follow(attach=True)`).

    The body yields records: ("out", tuple of outputs, gr.skip() for 'unchanged'), ("progress", (args, kwargs)
    for gr.Progress) or ("info" / "warning", message); it gets the job's stop flag. Followers see the newest value of each output
    (values left out by a skip keep the one before), so no saved result is missed however slowly they read."""

    def __init__(self, body, label: str, n_outputs: int):
        self.label, self.stop = label, threading.Event()
        self.values: list = [_SKIP] * n_outputs
        self.versions = [0] * n_outputs
        self.seq, self.progress, self.infos = 0, None, []
        self.error: BaseException | None = None
        self.done = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(body,), daemon=True, name=f"job {label}")

    def _run(self, body) -> None:
        try:
            for kind, value in body(self.stop):
                with self._cond:
                    self.seq += 1
                    if kind == "out":
                        for i, v in enumerate(value):
                            if not (isinstance(v, dict) and v == _SKIP):
                                self.values[i], self.versions[i] = v, self.seq
                    elif kind == "progress":
                        self.progress = value
                    elif kind in ("info", "warning"):
                        self.infos.append((kind, value))
                    self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - handed to the followers, which raise it
            self.error = exc
        finally:
            with self._cond:
                self.done = True
                self.seq += 1
                self._cond.notify_all()

    @property
    def running(self) -> bool:
        return not self.done

    def follow(self, progress=None, attach: bool = False):
        """Yield the outputs as they change until the job ends (then raise its error, if any). attach: a page
        that joins a running job starts from the current values, without the notes shown before it joined."""
        seen = [0] * len(self.values)
        infos_seen = len(self.infos) if attach else 0
        last_seq, last_progress = -1, None
        while True:
            with self._cond:
                while self.seq == last_seq:
                    self._cond.wait(timeout=5)
                last_seq, done = self.seq, self.done
                out = tuple(v if ver > s else _SKIP for v, ver, s in zip(self.values, self.versions, seen))
                seen = list(self.versions)
                infos, infos_seen = self.infos[infos_seen:], len(self.infos)
                prog = self.progress
            for kind, msg in infos:
                (gr.Warning if kind == "warning" else gr.Info)(msg)
            if progress is not None and prog is not None and prog is not last_progress:
                last_progress = prog
                progress(*prog[0], **prog[1])
            if any(not (isinstance(v, dict) and v == _SKIP) for v in out):
                yield out
            if done:
                if self.error is not None:
                    raise self.error
                return


class LiveJobs:
    """One page's LiveJobs, one running per browser (client_key): a second Start while one runs is refused
    with what is running, instead of waiting unseen in the queue; Stop finds the job after a reload."""

    def __init__(self, what: str, idle: str = "nothing is running: there is nothing to stop",
                 stopping: str = "⏹ stopping after the current step…"):
        self.what, self.idle, self.stopping = what, idle, stopping
        self._jobs: dict[str, LiveJob] = {}
        self._lock = threading.Lock()

    def running(self, request) -> LiveJob | None:
        job = self._jobs.get(client_key(request))
        return job if job is not None and job.running else None

    def refuse_if_running(self, request: gr.Request) -> None:
        """Start's first handler: a press while one runs is refused by name (a second press waited unseen in
        the queue, issue 33)."""
        job = self.running(request)
        if job is not None:
            raise gr.Error(f"{self.what} is already running ({job.label}): wait for it, or press Stop first",
                           print_exception=False)

    def start(self, request, body, label: str, n_outputs: int) -> LiveJob:
        with self._lock:
            self.refuse_if_running(request)
            job = self._jobs[client_key(request)] = LiveJob(body, label, n_outputs)
        job._thread.start()
        return job

    def stop(self, request) -> bool:
        job = self.running(request)
        if job is not None:
            job.stop.set()
        return job is not None

    def stop_handler(self, request: gr.Request) -> str:
        """Stop's handler: the status line (it answered "stopping…" with nothing running, issue 33)."""
        return self.stopping if self.stop(request) else self.idle

    def attach_handler(self, client_id, request: gr.Request):
        """The page's load handler: a page opened (or reloaded) while this browser's job runs shows it running,
        to the end."""
        register_client(client_id, request)
        job = self.running(request)
        if job is not None:
            yield from job.follow(attach=True)
