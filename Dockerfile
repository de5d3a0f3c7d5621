# GPU image for people running fooocus-api on their own NVIDIA box.
# Build: docker build -t fooocus-api .
# Run:   docker run --gpus all -p 7865:7865 -p 7866:7866 -v $PWD/models:/app/models -v $PWD/outputs:/app/outputs fooocus-api
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The CUDA build of torch (the CPU pin in the Makefile is for development machines without a GPU).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128

COPY pyproject.toml README.md LICENSE ./
COPY src ./src
COPY config ./config
COPY migrations ./migrations
RUN pip install -e .

VOLUME ["/app/models", "/app/outputs"]
EXPOSE 7865 7866
CMD ["fooocus-api", "--listen", "--models-dir", "/app/models", "--output-path", "/app/outputs"]
