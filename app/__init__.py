"""The Gradio web app of the ACMR zero-shot studio (``python -m app`` or ``acmr serve``).

Where things are:

* :mod:`app.cli` – the ``acmr serve`` / ``python -m app`` options; :mod:`app.__main__` – ``python -m app``.
* :mod:`app.server` – start-up: port check, building the queued Blocks while the model loads, serving,
  SIGTERM. :mod:`app.paths` – the example gallery and the per-process scratch folder.
* :mod:`app.ui` – the Blocks: the header and the three tabs (:mod:`app.predict_panel`,
  :mod:`app.define_panel` with :mod:`app.describe`, :mod:`app.latent_panel`), laid out with
  :mod:`app.layout`, :mod:`app.tables`, :mod:`app.examples` and :mod:`app.widgets`.
* :mod:`app.api` – the documented HTTP endpoints for ``gradio_client`` (see docs/app.md).

Modules of the app import a name from the module that defines it, never from this face. Importing ``app``
stays cheap (no Gradio, no torch): they load only when a server is built.
"""

from __future__ import annotations

from app.server import create_app, serve

__all__ = ["create_app", "serve"]
