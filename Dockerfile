#
# Two stages: the build stage resolves the project and every dependency at the
# versions in constraints.txt into wheels and installs them into a venv; the
# runtime stage copies only that venv, so no build tooling, wheel, pip cache or
# source tree reaches the final image.
#
# No `# syntax=` line: it makes BuildKit fetch a frontend from a registry; the
# built-in one already knows RUN --mount. Build with BuildKit, e.g.
#   DOCKER_BUILDKIT=1 docker build -t birthdayd .

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# .dockerignore admits only what the wheel needs (package, sql/, pyproject,
# constraints.txt).
COPY . .
# Every pinned dependency publishes manylinux wheels for CPython 3.11, so no
# compiler is installed; if one ever lacks a wheel this step fails loudly.
# -c constraints.txt pins the transitive dependencies too (make constraints).
# The venv has no pip, setuptools or wheel (--without-pip): this stage's pip
# installs into it from the outside (--python), wheels only, no index.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels -c constraints.txt . \
    && python -m venv --without-pip /opt/birthdayd \
    && pip --python /opt/birthdayd/bin/python install --no-index --find-links=/wheels \
        -c constraints.txt birthdayd \
    && /opt/birthdayd/bin/birthdayd --help > /dev/null


FROM ${PYTHON_IMAGE} AS runtime

# tini as PID 1 forwards SIGTERM to birthdayd and reaps zombies the same way under
# compose, plain `docker run` and Kubernetes (which has no --init); birthdayd then
# drains on SIGTERM and exits 0. Not version-pinned: Debian replaces point
# versions with security updates, and the base tag already fixes the release.
# The package cache and lists are removed here, whatever the base image's apt
# settings say.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb

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

# Same base image, same interpreter path: the venv's python link stays valid.
COPY --from=build /opt/birthdayd /opt/birthdayd

USER 10001:10001
EXPOSE 3000

# `birthdayd healthcheck` reads the command PID 1 (tini) runs and probes what that
# subcommand serves: `run` its /health on its PORT (no I/O, so a failure means the
# process is wedged), `fake-email` its own port; `migrate` has nothing to probe.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["birthdayd", "healthcheck"]

ENTRYPOINT ["tini", "--", "birthdayd"]
CMD ["run"]
