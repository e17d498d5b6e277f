"""Settings of the automation service."""

from libs.common.settings import ServiceSettings


class AutomationSettings(ServiceSettings):
    service_name: str = "automation"
    http_port: int = 8084
