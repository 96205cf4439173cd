"""Errors every qosched process shares.

``ConfigError`` lives in the Kubernetes boundary (the lowest layer of the shell) because the
boundary raises it too — an unreadable kubeconfig, an unknown context — and the server's
settings, the controller and the node layer all report it the same way: one line naming what is
wrong.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration file, variable or client setting is invalid (the message names it)."""


__all__ = ["ConfigError"]
