# The API image: scheduler + job_image (the scheduler imports the job's parameter model, and the
# local runner runs `python -m job_image`). The job image is job_image/Dockerfile.
#   scripts/build-images   (or: docker build -t fractal-scheduler:<tag in deploy/kustomization.yaml> .)
# The context is what .dockerignore allows (an allowlist): a new COPY source goes there too.
# The Debian release is in the tag: `python:3.11-slim` alone moved from bookworm to trixie under
# the same name, changing every system library (PoCL, the ICD loader) without a line changed here.
# To update: change the release in both Dockerfiles together (Dockerfile, job_image/Dockerfile),
# rebuild (scripts/build-images), run the render tests in the image, then bump the tags in
# deploy/kustomization.yaml. A digest (@sha256:...) pins it further, for releases.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/data

# PoCL: a CPU OpenCL driver, so RUNNER=local works in this image too.
RUN apt-get update \
 && apt-get install -y --no-install-recommends pocl-opencl-icd ocl-icd-libopencl1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY job_image/requirements.txt job_image/requirements.txt
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY job_image/ job_image/
COPY scheduler/ scheduler/

# Non-root, numeric so runAsNonRoot can verify it.
RUN groupadd --gid 10001 app && useradd --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app \
 && mkdir -p /data && chown app:app /data
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8888
CMD ["python", "-m", "scheduler", "--host", "0.0.0.0", "--port", "8888"]
