# The API image: scheduler + job_image (the scheduler imports the job's parameter model, and the
# local runner runs `python -m job_image`). The job image is job_image/Dockerfile.
#   docker build -t fractal-scheduler:latest .
# The context is what .dockerignore allows (an allowlist): a new COPY source goes there too.
FROM python:3.11-slim

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
