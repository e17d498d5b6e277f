from services.automation.catalogue.base import Action, Params


class RebootDevice(Params):
    device: str


ACTION = Action(
    name="rmm.reboot_device",
    system="rmm",
    description="Restarts a managed device through the RMM agent.",
    params=RebootDevice,
    risk="medium",
    scope="rmm.devices.reboot",
    reversible=False,
    cues=(
        r"\breboot\w*\b",
        r"\b(?:restart|power ?cycle|bounce)\s+(?:the\s+|her\s+|his\s+|their\s+)?(?:zhost|pc\b|laptop|machine"
        r"|device|server|computer|desktop|workstation|box\b|it\b)",
    ),
    examples=("reboot the laptop",),
    repeatable=("device",),
    target="device",
)
