# syntax=docker/dockerfile:1
#
# Two stages: the build stage turns the project and its pinned dependencies into
# wheels; the runtime stage installs only those wheels into a venv, so no build
# tooling, source tree or pip cache reaches the final image.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# .dockerignore admits only what the wheel needs (package, sql/, pyproject).
COPY . .
# Every pinned dependency publishes manylinux wheels for CPython 3.11, so no
# compiler is installed; if one ever lacks a wheel this step fails loudly.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels .


FROM ${PYTHON_IMAGE} AS runtime

# tini as PID 1 forwards SIGTERM to birthdayd and reaps zombies the same way under
# compose, plain `docker run` and Kubernetes (which has no --init); birthdayd then
# drains on SIGTERM and exits 0. Not version-pinned: Debian replaces point
# versions with security updates, and the base tag already fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid lets Kubernetes' runAsNonRoot verify it without a passwd lookup.
RUN groupadd --system --gid 10001 birthdayd \
    && useradd --system --uid 10001 --gid birthdayd --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin birthdayd

ENV VIRTUAL_ENV=/opt/birthdayd \
    PATH=/opt/birthdayd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=3000 \
    HOST=0.0.0.0 \
    LOG_FORMAT=json

# The wheels are bind-mounted rather than copied so they never become a layer.
# --no-index: the runtime stage installs exactly what the build stage resolved.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv "$VIRTUAL_ENV" \
    && "$VIRTUAL_ENV/bin/pip" install --no-cache-dir --no-index --find-links=/wheels birthdayd \
    && birthdayd --help > /dev/null

USER 10001:10001
EXPOSE 3000

# /health does no I/O, so a failing check means the process itself is wedged.
# python, because slim images have neither curl nor wget; PORT follows overrides.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '3000'), timeout=4)"]

ENTRYPOINT ["tini", "--", "birthdayd"]
CMD ["run"]
