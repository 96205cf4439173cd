"""The `qosched` console script: one click group, one module per subcommand."""

import logging
import os

import click


@click.group()
@click.version_option(package_name="qosched")
def main() -> None:
    """qosched: interference-aware, QoS-fair placement of inference services."""
    logging.basicConfig(
        level=os.environ.get("QOSCHED_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


from qosched.extender.cli.controller import controller  # noqa: E402
from qosched.extender.cli.demo import demo  # noqa: E402
from qosched.extender.cli.device_plugin import device_plugin  # noqa: E402
from qosched.extender.cli.predict import predict  # noqa: E402
from qosched.extender.cli.profile import profile  # noqa: E402
from qosched.extender.cli.serve import serve  # noqa: E402
from qosched.extender.cli.validate_latency import validate_latency  # noqa: E402
from qosched.extender.cli.webhook import webhook  # noqa: E402
from qosched.extender.cli.whatif import whatif  # noqa: E402

main.add_command(serve)
main.add_command(demo)
main.add_command(profile)
main.add_command(predict)
main.add_command(controller)
main.add_command(whatif)
main.add_command(validate_latency)
main.add_command(webhook)
main.add_command(device_plugin)

if __name__ == "__main__":
    main()
