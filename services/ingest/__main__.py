"""Run the ingest service: `python -m services.ingest` or `msp-ingest`."""

from libs.common.service import run_service
from services.ingest.app import build
from services.ingest.settings import IngestSettings


def main() -> None:
    run_service(IngestSettings, build)


if __name__ == "__main__":
    main()
