# One image for all five services; the command picks the service.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY libs ./libs
COPY services ./services
RUN pip install --no-cache-dir . && useradd --uid 10001 msp
USER msp
ENV MSP_HTTP_HOST=0.0.0.0
CMD ["python", "-m", "services.ingest"]
