"""Helpers shared by every panel: error display, the raw image input, and the concurrency limits."""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import gradio as gr

from acmr_core.errors import ACMRError
from acmr_core.serving.service import StudioService
from acmr_core.serving.visitors import is_visitor_key, new_visitor_token

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
# Two predictions at once keep both CPU cores busy.
PREDICT_CONCURRENCY = 2
#: Reading attributes from example images (1-10 backbone forwards per request) runs one request at a time,
#: in its own group: Gradio gives a shared concurrency id the lowest limit of its events, so sharing "predict"
#: made every prediction wait behind one such request.
IMAGE_READING_CONCURRENCY = 1
IMAGE_READING_ID = "image_readings"
#: Class edits (add, rename, delete, import) of all visitors: two at once keep both cores busy; one
#: visitor's edits are serialised by the service's per-visitor lock, so visitors do not queue behind one
#: another's slow import for long.
CLASS_EDIT_CONCURRENCY = 2
CLASS_EDIT_ID = "classes"
#: A session's bundle name and visitor token -> the bundle's service as that visitor sees it (the registry
#: opens a bundle on first use). Without a visitor: the bundle's own classes only.
ServiceFor = Callable[..., StudioService]
#: The browser's localStorage key of its visitor token. Fixed (Gradio's default is random per server start),
#: so a visitor keeps their classes across reloads and server restarts.
VISITOR_STORAGE_KEY = "acmr-studio-visitor"
#: Gradio encrypts a BrowserState value with this. It is sent to every page in the app's config, so it
#: hides nothing: a token is private because it is 256 random bits kept in one browser's localStorage
#: (same-origin), not because of this. Fixed for the same reason as the key.
VISITOR_STORAGE_SECRET = "acmr-studio-visitor-token"


@dataclass
class Session:
    """Per-browser-session state shared by the panels."""

    bundle: gr.State  # the name of the bundle this session uses
    visitor: gr.BrowserState  # this browser's visitor token (set on the first load; see ensure_visitor)
    last_query: gr.State  # QueryPoint of this session's last prediction
    last_latent: gr.State  # that image's visual latent (a draft class's preview compares with it)
    try_path: gr.State  # the example that best shows the user's newest class

    @property
    def who(self) -> list[Any]:
        """The inputs that name whose service a handler gets: ``(bundle_name, visitor)``."""
        return [self.bundle, self.visitor]


def visitor_state() -> gr.BrowserState:
    return gr.BrowserState(None, storage_key=VISITOR_STORAGE_KEY, secret=VISITOR_STORAGE_SECRET)


def ensure_visitor(token: Any) -> str:
    """This browser's visitor token: the one it has, or a new one (first visit, or a value not ours)."""
    return token if is_visitor_key(token) else new_visitor_token()


def user_errors(handler: F) -> F:
    """Show :class:`ACMRError` messages in the page (escaped: Gradio renders them as HTML)."""
    return _raising_gr_error(handler, lambda message: html.escape(message, quote=False))


def api_errors(handler: F) -> F:
    """Return :class:`ACMRError` messages to ``gradio_client`` callers as the plain text they are.

    For the API endpoints only: their events are declared with ``gr.api``, so their errors never reach a
    page (and the page's error toast sanitises HTML anyway); escaping there turned ``<`` into ``&lt;``.
    """
    return _raising_gr_error(handler, str)


def _raising_gr_error(handler: F, shown: Callable[[str], str]) -> F:
    @functools.wraps(handler)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except ACMRError as error:
            log.warning("refused: %s", error)  # one line, no traceback: the user gets the message
            raise gr.Error(shown(str(error)), print_exception=False) from None

    return wrapped  # type: ignore[return-value]


def raw_image_input(**kwargs: Any) -> gr.Image:
    """A ``gr.Image`` input whose upload reaches the handler as an undecoded file path.

    ``gr.Image`` opens uploads with PIL before the handler runs, so a non-image or a decompression bomb would
    fail inside Gradio with a generic message; :func:`acmr_core.data.images.load_image` gives the
    specific one.
    (Set on the instance: subclassing a Gradio component writes a .pyi stub next to this module.)
    """
    image = gr.Image(type="filepath", **kwargs)
    decode = image.preprocess

    def undecoded(payload: Any) -> Any:
        path = getattr(payload, "path", None)
        return str(path) if path else decode(payload)

    image.preprocess = undecoded  # type: ignore[method-assign]
    return image


def uploaded_path(payload: Any) -> str | None:
    """The file path of an image input's raw payload, for events run with ``preprocess=False``.

    Gradio re-creates a component (as its plain class) once an event has written to it, which drops the
    instance-level ``preprocess`` of :func:`raw_image_input`; an event whose input is also an output (the
    query image: examples and refusals write to it) therefore skips preprocessing and reads the path here.
    The file has already been moved into Gradio's upload cache and checked to be there.
    """
    if isinstance(payload, dict):
        payload = payload.get("path")
    return str(payload) if payload else None


def uploaded_paths(payload: Any) -> list[str]:
    """The file paths of a ``gr.File`` input's raw payload (one file or a list), for events run with
    ``preprocess=False``.

    ``gr.File(type="filepath")``'s own preprocessing (Gradio 6.31) creates an empty, never-used temporary
    file in the upload cache for every file it passes on: thousands of them on a busy server. Raw, the
    payload is the upload already moved into the cache and checked (as for :func:`uploaded_path`).
    """
    items = payload if isinstance(payload, list) else [payload]
    return [path for path in map(uploaded_path, items) if path]
