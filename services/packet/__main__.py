"""Run the packet service: `python -m services.packet` or `msp-packet`."""

from libs.common.service import run_service
from services.packet.app import build
from services.packet.settings import PacketSettings


def main() -> None:
    run_service(PacketSettings, build)


if __name__ == "__main__":
    main()
