# syntax=docker/dockerfile:1
# qosched images (docs/install.md, "Build the image").
#
#   docker build -t qosched:0.1.0 .                          # extender, controller, webhook, CLI
#   docker build --target profiler -t qosched-profiler:0.1.0 .   # + torch (CPU) for `qosched profile run`
#
# Stage 1 builds wheels of qosched and of every dependency at the versions CI tests
# (constraints.txt); the final stages install only those wheels, so no compiler, pip cache or
# source tree reaches them. The default image leaves the profiler's torch out (~700 MB).
# Runs as a fixed non-root UID and writes nothing outside /tmp: it works with
# readOnlyRootFilesystem: true and an emptyDir at /tmp.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Must equal `version` in setup.cfg (tests/test_dockerfile.py checks it).
ARG QOSCHED_VERSION=0.1.0

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY constraints.txt setup.cfg pyproject.toml README.md ./
COPY policies policies
COPY extender extender
COPY profiles profiles
RUN pip wheel --wheel-dir /wheels -c constraints.txt .

FROM ${PYTHON_IMAGE} AS runtime
ARG QOSCHED_VERSION
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib HOME=/tmp
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "qosched==${QOSCHED_VERSION}" \
    && useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin qosched
WORKDIR /tmp
USER 65532:65532
EXPOSE 8888 9090
# The extender; the manifests override the command for the controller, webhook and device plugin.
CMD ["gunicorn", "--config=python:qosched.extender.server.gunicorn_conf", "qosched.extender.server.app:create_app()"]

FROM runtime AS profiler
USER 0:0
# The CPU build of torch (the default index's wheel pulls several GB of CUDA libraries).
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
USER 65532:65532
