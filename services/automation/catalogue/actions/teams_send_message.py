from services.automation.catalogue.base import Action, Params


class SendTeamsMessage(Params):
    to: str
    text: str


ACTION = Action(
    name="teams.send_message",
    system="teams",
    description="Posts a Microsoft Teams message to a user (by login) or to a channel (written with a "
    "leading '#').",
    params=SendTeamsMessage,
    risk="low",
    scope="teams.messages.send",
    reversible=False,
    cues=(
        r"\bteams\b(?!\s+(?:cache|client|app)\b)",
        r"\b(?:post|message|msg|ping)\b[^.;]{0,10}(?:\b(?:in|to|on)\b\s*)?#",
        r"\b(?:post|message|write)\b[^.;]{0,20}\bchannel\b",
    ),
    examples=("post in the #it-ops channel", "message him on Teams"),
    target="to",
)
