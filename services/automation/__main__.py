"""Run the automation service: `python -m services.automation` or `msp-automation`."""

from libs.common.service import run_service
from services.automation.app import build
from services.automation.settings import AutomationSettings


def main() -> None:
    run_service(AutomationSettings, build)


if __name__ == "__main__":
    main()
