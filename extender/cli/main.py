"""The `qosched` console script: one click group, one module per subcommand.

Subcommands are imported when they run (or when ``--help`` lists them), not when the script
starts: ``validate-latency`` pulls in scipy.optimize and ``demo`` the what-if, 0.6 s of imports in
all that ``qosched serve`` (whose gunicorn master runs this module) never uses. The lazy group is
click's documented pattern ("Lazily Loading Subcommands").
"""

import importlib
import logging
import os

import click

#: Subcommand name → ``module:attribute`` of its click command.
SUBCOMMANDS: dict[str, str] = {
    "serve": "qosched.extender.cli.serve:serve",
    "demo": "qosched.extender.cli.demo:demo",
    "profile": "qosched.extender.cli.profile:profile",
    "predict": "qosched.extender.cli.predict:predict",
    "controller": "qosched.extender.cli.controller:controller",
    "whatif": "qosched.extender.cli.whatif:whatif",
    "validate-latency": "qosched.extender.cli.validate_latency:validate_latency",
    "webhook": "qosched.extender.cli.webhook:webhook",
    "device-plugin": "qosched.extender.cli.device_plugin:device_plugin",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def __init__(self, *args: object, lazy: dict[str, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, attr = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self.lazy[cmd_name]} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy=SUBCOMMANDS)
@click.version_option(package_name="qosched")
def main() -> None:
    """qosched: interference-aware, QoS-fair placement of inference services."""
    logging.basicConfig(
        level=os.environ.get("QOSCHED_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


if __name__ == "__main__":
    main()
