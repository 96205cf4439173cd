"""The webhook's Flask app: ``POST /mutate`` (pods), ``POST /validate`` (workloads), ``GET /healthz``.

Settings: the extender's ``load_config`` (``--config FILE`` / ``QOSCHED_*``) for the service
classes, so an unknown ``qosched.io/class`` is refused exactly as the extender refuses it, plus
``QOSCHED_WEBHOOK_DEVICE_PLUGIN`` (``true``/``false``, default ``true``).
Production: ``qosched webhook serve`` (gunicorn, TLS).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import orjson
from flask import Flask, Response, request

from qosched.extender.server.app import class_mapper
from qosched.extender.server.settings import load_config
from qosched.extender.webhook.admission import ReviewError, mutate_review, validate_review
from qosched.extender.webhook.mutation import WebhookOptions

log = logging.getLogger(__name__)
#: AdmissionReview bodies are one object; the API server caps requests at 3 MiB anyway.
MAX_BODY_BYTES = 4 * 1024 * 1024


def options_from_env(environ: Mapping[str, str] | None = None) -> WebhookOptions:
    env = os.environ if environ is None else environ
    raw = str(env.get("QOSCHED_WEBHOOK_DEVICE_PLUGIN", "true")).strip().lower()
    if raw not in ("true", "false", "1", "0"):
        raise ValueError(f"QOSCHED_WEBHOOK_DEVICE_PLUGIN={raw!r}: expected true or false")
    return WebhookOptions(device_plugin=raw in ("true", "1"))


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


def create_app(settings: Mapping[str, Any] | None = None, options: WebhookOptions | None = None) -> Flask:
    settings = load_config() if settings is None else settings
    options = options_from_env() if options is None else options
    class_of = class_mapper(settings)
    app = Flask("qosched.webhook")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    def review_body() -> Any:
        try:
            return orjson.loads(request.get_data())
        except orjson.JSONDecodeError as err:
            raise ReviewError(f"body is not JSON: {err}") from None

    @app.post("/mutate")
    def mutate() -> Response:
        try:
            return _json(mutate_review(review_body(), options, class_of))
        except ReviewError as err:
            return _json({"error": f"bad AdmissionReview: {err}"}, 400)

    @app.post("/validate")
    def validate() -> Response:
        try:
            return _json(validate_review(review_body(), class_of))
        except ReviewError as err:
            return _json({"error": f"bad AdmissionReview: {err}"}, 400)

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"ok": True})

    return app
