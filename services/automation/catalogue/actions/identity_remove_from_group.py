from services.automation.catalogue.base import Action, Params


class RemoveFromGroup(Params):
    user: str
    group: str


ACTION = Action(
    name="identity.remove_from_group",
    system="identity",
    description="Takes the user out of the named directory or security group.",
    params=RemoveFromGroup,
    risk="medium",
    scope="identity.groups.write",
    reversible=True,
    cues=(
        r"\b(?:remove|take|drop|pull|kick)\b(?![^.;]*\b(?:policy|iam)\b)[^.;]{0,60}\b(?:from|out of|off)\b",
    ),
    examples=("remove him from Finance-RW", "take her out of the group"),
    repeatable=("user", "group"),
    target="user",
    extra={"group_of": True},
)
