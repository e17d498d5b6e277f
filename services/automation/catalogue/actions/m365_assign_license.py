from services.automation.catalogue.base import Action, Params


class AssignLicense(Params):
    user: str
    sku: str


ACTION = Action(
    name="m365.assign_license",
    system="m365",
    description="Assigns the Microsoft 365 licence identified by its SKU part number to the user.",
    params=AssignLicense,
    risk="low",
    scope="m365.licenses.write",
    reversible=True,
    cues=(r"\blicen[cs]es?\b", r"\bassign\b[^.;]{0,10}\bzsku\b", r"\b(?:give|add)\b[^.;]{0,10}\bzsku\b"),
    examples=("assign a Microsoft 365 licence to the new starter",),
    repeatable=("sku",),
    target="user",
)
