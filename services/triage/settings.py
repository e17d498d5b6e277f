"""Settings of the triage service."""

from libs.common.settings import ServiceSettings


class TriageSettings(ServiceSettings):
    service_name: str = "triage"
    http_port: int = 8082
