from services.automation.catalogue.base import Action, Params


class SendSms(Params):
    user: str
    text: str


ACTION = Action(
    name="notify.send_sms",
    system="sms",
    description="Sends a text message to the mobile number on record for the user.",
    params=SendSms,
    risk="low",
    scope="sms.send",
    reversible=False,
    cues=(
        r"\bsms\b",
        r"\btext (?:him|her|them|the user|the requester|zuser)\b",
        r"\bsend (?:(?:him|her|them) )?(?:an? )?(?:text|sms)\b",
    ),
    examples=("text her that the account is unlocked",),
    target="user",
)
