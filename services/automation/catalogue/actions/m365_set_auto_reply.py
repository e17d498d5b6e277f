from services.automation.catalogue.base import Action, Params


class SetAutoReply(Params):
    user: str
    message: str


ACTION = Action(
    name="m365.set_auto_reply",
    system="m365",
    description="Turns on the user's Exchange Online automatic reply (out-of-office) with the given text.",
    params=SetAutoReply,
    risk="low",
    scope="m365.mailbox.settings.write",
    reversible=True,
    cues=(r"\b(?:ooo|oof|out[- ]of[- ](?:the[- ])?office|auto-?(?:matic)? ?reply|autoreply|away message)\b",),
    examples=("set an out-of-office reply",),
    target="user",
)
