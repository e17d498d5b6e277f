from services.automation.catalogue.base import Action, Params


class AddToGroup(Params):
    user: str
    group: str


ACTION = Action(
    name="identity.add_to_group",
    system="identity",
    description="Makes the user a member of the named directory or security group.",
    params=AddToGroup,
    risk="medium",
    scope="identity.groups.write",
    reversible=True,
    cues=(
        r"\b(?:add|put|place|include)\b(?![^.;]*\bnote\b)[^.;]{0,60}\b(?:to|in|into)\b",
        r"\b(?:grant|give)\b[^.;]{0,30}\bmembership\b",
    ),
    examples=("add her to the VPN-Users group", "put him in Finance-RO"),
    repeatable=("user", "group"),
    target="user",
    extra={"group_of": True},
)
