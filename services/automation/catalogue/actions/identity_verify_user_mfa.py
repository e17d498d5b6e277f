from typing import Literal

from services.automation.catalogue.base import Action, Params


class VerifyUserMfa(Params):
    user: str
    method: Literal["push", "sms", "call"]


ACTION = Action(
    name="identity.verify_user_mfa",
    system="identity",
    description="Challenges the user through a registered MFA method (app push, SMS code or phone call) "
    "to confirm their identity before other changes are made.",
    params=VerifyUserMfa,
    risk="low",
    scope="identity.mfa.challenge",
    reversible=True,
    cues=(
        r"\bverif(?:y|ied|ication)\b",
        r"\bconfirm (?:it'?s|it is|that it'?s|(?:his|her|their) identity|identity|who)\b",
        r"\b(?:mfa|identity) (?:check|challenge)\b",
        r"\bchallenge (?:him|her|them|the user)\b",
    ),
    examples=("verify the user with an MFA push", "confirm it's her with an SMS code"),
    target="user",
    extra={
        "synonyms": {
            "method": {
                "push": ("push", "authenticator", "app"),
                "sms": ("sms", "text"),
                "call": ("call", "phone", "voice"),
            }
        }
    },
)
