from services.automation.catalogue.base import Action, Params


class DisableAccount(Params):
    user: str


ACTION = Action(
    name="identity.disable_account",
    system="identity",
    description="Blocks the user's directory account from signing in (also called 'block sign-in') while "
    "keeping the account and its data.",
    params=DisableAccount,
    risk="high",
    scope="identity.account.disable",
    reversible=True,
    cues=(
        r"\b(?:disable|block|suspend|lock down)\b(?![^.;]*\b(?:console|iam|aws|access keys?|keys?)\b)"
        r"(?:[^.;]{0,20}\b(?:acct|account|user|login|sign-?in|it|him|her|them)\b)?",
    ),
    examples=("disable the account", "block sign-in"),
    repeatable=("user",),
    target="user",
)
