"""Settings of the packet service."""

from libs.common.settings import ServiceSettings


class PacketSettings(ServiceSettings):
    service_name: str = "packet"
    http_port: int = 8083
