from services.automation.catalogue.base import Action, Params


class RestartService(Params):
    device: str
    service: str


ACTION = Action(
    name="rmm.restart_service",
    system="rmm",
    description="Restarts the named operating-system service on a managed device through the RMM agent.",
    params=RestartService,
    risk="medium",
    scope="rmm.services.restart",
    reversible=False,
    cues=(
        r"\b(?:restart|bounce|recycle)\s+(?:the\s+)?(?!zhost|pc\b|laptop|machine|device|server|computer"
        r"|desktop|workstation|box\b|it\b|her\b|his\b|their\b)[\w$-]+",
    ),
    examples=("restart the Spooler service on the server",),
    repeatable=("device",),
    target="device",
)
