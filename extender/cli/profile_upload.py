"""``qosched profile upload FILE --url URL --token-file FILE``: put a profile into a running extender.

The file is validated here first (the same :func:`~qosched.profiles.schema.loads_profile` the
server runs), so a typo is reported with its field path before anything is sent; its
``accelerator`` and ``model`` give the URL ``PUT {URL}/profiles/<accelerator>/<model>``. The token
is sent as ``Authorization: Bearer <token>``; the extender stores the profile durably and
hot-reloads it (see :mod:`qosched.extender.server.uploads`).

Exit status: 0 uploaded; 1 the upload failed (connection error, timeout, or the server refused it:
its status and message are printed); 2 a usage error (unreadable or invalid profile file, empty
token file, bad option).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import click
import requests

from qosched.profiles.schema import ProfileError, loads_profile


def _read_token(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise click.BadParameter(f"cannot read {path}: {err}", param_hint="--token-file") from None
    if not token:
        raise click.BadParameter(f"{path} is empty", param_hint="--token-file")
    return token


def upload_url(base_url: str, accelerator: str, model: str) -> str:
    """``{base}/profiles/<accelerator>/<model>`` with each key percent-encoded as one segment."""
    return f"{base_url.rstrip('/')}/profiles/{quote(accelerator, safe='')}/{quote(model, safe='')}"


def _server_message(response: requests.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])
    return response.text.strip()[:500]


@click.command("upload")
@click.argument("profile_file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--url", required=True, help="Base URL of the extender, e.g. http://qosched.kube-system:8888.")
@click.option(
    "--token-file",
    required=True,
    type=click.Path(dir_okay=False),
    help="File holding the upload bearer token (the extender's UPLOAD_TOKEN_FILE / Secret).",
)
@click.option("--timeout", "timeout_s", default=10.0, show_default=True, type=float, help="Seconds to wait.")
def upload(profile_file: str, url: str, token_file: str, timeout_s: float) -> None:
    """Upload the profile FILE to the extender at URL (validated locally first)."""
    try:
        body = Path(profile_file).read_bytes()
    except OSError as err:
        raise click.BadParameter(
            f"cannot read {profile_file}: {err.strerror or err}", param_hint="FILE"
        ) from None
    try:
        profile = loads_profile(body, source=profile_file)
    except ProfileError as err:
        raise click.UsageError(str(err)) from None
    token = _read_token(token_file)
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"expected an http:// or https:// URL, got {url!r}", param_hint="--url")
    target = upload_url(url, profile.accelerator, profile.model)
    try:
        response = requests.put(
            target,
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=timeout_s,
        )
    except requests.Timeout:
        raise click.ClickException(f"PUT {target}: no answer within {timeout_s:g} s") from None
    except requests.RequestException as err:
        raise click.ClickException(f"PUT {target}: {type(err).__name__}: {err}") from None
    if response.status_code not in (200, 201):
        raise click.ClickException(f"PUT {target}: HTTP {response.status_code}: {_server_message(response)}")
    try:
        doc = response.json()
    except ValueError:
        doc = {}
    verb = "created" if response.status_code == 201 else "replaced"
    click.echo(
        f"uploaded {profile.accelerator}/{profile.model} ({verb}); stored in {doc.get('stored', '?')}; "
        f"profiles version {doc.get('version', '?')}"
    )
