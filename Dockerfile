# lstm-serve: the serving image (models/, service/ and the shipped checkpoints; no training code).
#   docker build -t lstm-serve .                                   # CPU torch from PyTorch's CPU index
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t lstm-serve:cuda .
#   docker build --build-arg TORCH_INDEX_URL= -t lstm-serve .      # plain pip (whatever it resolves)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"; \
    else pip install "$TORCH_SPEC"; fi
COPY pyproject.toml README.md /src/
COPY models /src/models
COPY service /src/service
# The service never reads torch's C++ headers (62 MB), its C++ test programs (torch/test and all
# of torch/bin but torch_shm_manager, which `import torch` checks for: 133 MB) or pip and
# setuptools (25 MB): removed in this stage, they never reach the image.
RUN pip install /src && rm -rf /src \
 && site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
 && rm -rf "$site/torch/include" "$site/torch/test" \
 && find "$site/torch/bin" -mindepth 1 ! -name torch_shm_manager -delete \
 && pip uninstall --yes --quiet pip setuptools
# The checkpoints readable by the service's user whatever the modes of the checkout; done here
# so that the image holds them once, in the one COPY of the final stage.
COPY artifacts /app/artifacts
RUN chmod -R a+rX,go-w /app/artifacts

FROM ${PYTHON_IMAGE}
# tcmalloc: under mixed traffic glibc's allocator kept growing the heap (bench/soak.py); tcmalloc
# kept resident memory flat and generation faster (jemalloc was flat too, but halved the speed of
# a lone generation). docs/RELIABILITY.md has the figures.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libtcmalloc-minimal4 \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s "$(find /usr/lib -name libtcmalloc_minimal.so.4 | head -n 1)" /usr/local/lib/libtcmalloc_minimal.so.4
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin lstm
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app/artifacts /app/artifacts
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LSTM_SERVE_ARTIFACTS_DIR=/app/artifacts \
    LD_PRELOAD=/usr/local/lib/libtcmalloc_minimal.so.4
WORKDIR /app
USER lstm
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]
