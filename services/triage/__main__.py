"""Run the triage service: `python -m services.triage` or `msp-triage`."""

from libs.common.service import run_service
from services.triage.app import build
from services.triage.settings import TriageSettings


def main() -> None:
    run_service(TriageSettings, build)


if __name__ == "__main__":
    main()
