# One image for every etcd-mesh process: counter_svc, user_svc, the front and
# the gRPC ingress. docker-compose.yml picks the process with `command`.
# etcd is not in this image: it runs from the official etcd image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY registry ./registry
COPY counter_svc ./counter_svc
COPY user_svc ./user_svc
COPY front ./front
# Runtime dependencies only: the dev extras (etcd, test and lint tools) stay out.
RUN pip install . && rm -rf build ./*.egg-info

RUN useradd --system --uid 10001 --create-home --home-dir /home/mesh mesh
USER mesh
# Outside /src, so that `python -m` imports the installed package.
WORKDIR /home/mesh

CMD ["python", "-m", "counter_svc"]
