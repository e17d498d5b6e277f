"""Run the audit service: `python -m services.audit` or `msp-audit`."""

from libs.common.service import run_service
from services.audit.app import build
from services.audit.settings import AuditSettings


def main() -> None:
    run_service(AuditSettings, build)


if __name__ == "__main__":
    main()
