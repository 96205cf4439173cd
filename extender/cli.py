"""The `qosched` console script (filled in as subcommands land)."""

import click


@click.group()
def main() -> None:
    """qosched: interference-aware, QoS-fair placement of inference services."""


from qosched.extender.profile_cmd import profile  # noqa: E402

main.add_command(profile)
