# vlpeft: one image for every pipeline stage and Kubeflow component.
# Python 3.11 (Debian 12 slim), torch 2.13.0 with its own CUDA wheels, the project's lock (the same file CI
# installs), the package, Java 17 for the caption metrics (PTB tokenizer, METEOR, SPICE), and the Stanford
# CoreNLP 3.6.0 jars that SPICE loads. Runs as the numeric non-root user 1000:1000.
#
#   make image                                   # = docker|podman build -t vlpeft:0.1.0 .   (see README)
#   docker build --build-arg TORCH_INDEX_URL=<PyTorch's whl/cpu index> -t vlpeft:0.1.0-cpu .
#   docker build --build-arg WITH_SPICE=0 ...     # no CoreNLP jars: SPICE is reported as null
#
# Base image: pinned by tag here. To pin it by digest on a machine that can reach the registry, resolve the
# tag once and pass (or write here) the digest form:
#   docker pull python:3.11-slim-bookworm
#   docker image inspect --format '{{index .RepoDigests 0}}' python:3.11-slim-bookworm
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> ...
# (`docker buildx imagetools inspect python:3.11-slim-bookworm` prints the same digest without pulling.)
#
# torch: TORCH_INDEX_URL empty = pip's default index, whose Linux wheel of torch 2.13.0 depends on the CUDA 13
# runtime wheels (cuda-toolkit 13.0.3, cuDNN 9, NCCL): no CUDA base image is needed, only an NVIDIA driver
# new enough for CUDA 13 on the node. Any PEP 503 index serving torch 2.13.0 (a CPU build, another CUDA
# build, an internal mirror) can be given instead.
#
# Offline build (scripts/image/build-local.sh, `make image-local`): every wheel in ./wheelhouse and
# --build-arg PIP_OFFLINE=1; the online build copies the empty ./wheelhouse (it holds only .gitkeep).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=""
ARG PIP_OFFLINE=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY wheelhouse/ /tmp/wheelhouse/
# torch first and alone (as `make setup` does), so that the lock cannot pull a different torch build.
RUN if [ -n "${TORCH_INDEX_URL}" ]; then export PIP_INDEX_URL="${TORCH_INDEX_URL}"; fi \
 && pip install --no-cache-dir ${PIP_OFFLINE:+--no-index --find-links /tmp/wheelhouse} "torch==${TORCH_VERSION}"
COPY requirements/lock.txt /tmp/lock.txt
RUN pip install --no-cache-dir ${PIP_OFFLINE:+--no-index --find-links /tmp/wheelhouse} -r /tmp/lock.txt
COPY pyproject.toml README.md /src/
COPY vlpeft /src/vlpeft
# The package itself from this source tree; its dependencies are all pinned by the lock above.
RUN pip install --no-cache-dir ${PIP_OFFLINE:+--no-index --find-links /tmp/wheelhouse} --no-deps /src \
 && rm -rf /src /tmp/lock.txt /tmp/wheelhouse

FROM ${PYTHON_IMAGE} AS corenlp
# SPICE (pycocoevalcap/spice/spice-1.0.jar, whose manifest Class-Path names lib/stanford-corenlp-3.6.0.jar and
# lib/stanford-corenlp-3.6.0-models.jar) needs the two jars of Stanford CoreNLP 3.6.0. pycocoevalcap's own
# get_stanford_models.py takes them from Stanford's stanford-corenlp-full-2015-12-09.zip at run time; here the
# same zip is fetched at build time, checked by SHA-256 and only the two jars are kept.
# CORENLP_SHA256 (of the zip) could NOT be obtained where this file was written (no route to Stanford's
# server or to any copy of the zip), so it has no default and none is invented: a build with WITH_SPICE=1 and
# no CORENLP_SHA256 downloads the zip, prints its SHA-256 and stops. Check that sum, then pass it with
# --build-arg CORENLP_SHA256=<sum> (or put it in the ARG below). CORENLP_URL may point at a mirror of the zip.
ARG WITH_SPICE=1
ARG CORENLP_URL=https://nlp.stanford.edu/software/stanford-corenlp-full-2015-12-09.zip
ARG CORENLP_SHA256=""
COPY scripts/image/fetch_corenlp.py /usr/local/bin/fetch_corenlp.py
RUN mkdir /corenlp \
 && if [ "${WITH_SPICE}" = "1" ]; then \
      python3 /usr/local/bin/fetch_corenlp.py "${CORENLP_URL}" "${CORENLP_SHA256}" /corenlp; \
    fi

FROM ${PYTHON_IMAGE} AS runtime
ARG UID=1000
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYCOCOEVALCAP=/opt/venv/lib/python3.11/site-packages/pycocoevalcap
# Java runs pycocoevalcap's PTB tokenizer, METEOR and SPICE (`java -jar`).
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless=17.* \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid "${UID}" --user-group --create-home --shell /bin/bash vlpeft \
 && install -d -o "${UID}" -g "${UID}" /home/vlpeft/work
COPY --from=build /opt/venv /opt/venv
COPY --from=corenlp /corenlp/ ${PYCOCOEVALCAP}/spice/lib/
# pycocoevalcap writes its temp files inside the installed package: PTBTokenizer next to its jar
# (tokenizer/), SPICE into spice/tmp and its LMDB cache into spice/cache. The runtime user owns exactly those
# directories (the jars and the code stay root-owned); without this every caption evaluation fails with
# PermissionError as a non-root user.
RUN chown "${UID}:${UID}" "${PYCOCOEVALCAP}/tokenizer" \
 && install -d -o "${UID}" -g "${UID}" "${PYCOCOEVALCAP}/spice/tmp" "${PYCOCOEVALCAP}/spice/cache"
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/vlpeft HF_HOME=/home/vlpeft/.cache/huggingface \
    MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true DVC_NO_ANALYTICS=1 TOKENIZERS_PARALLELISM=false \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
# Created above with its owner: WORKDIR alone would create it root-owned (./mlflow.db, outputs -> EACCES).
WORKDIR /home/vlpeft/work
# Numeric, so that Kubernetes can check runAsNonRoot.
USER ${UID}:${UID}
CMD ["vlpeft", "--help"]
