from services.automation.catalogue.base import Action, Params


class DisableConsoleLogin(Params):
    iam_user: str


ACTION = Action(
    name="aws.disable_console_login",
    system="aws",
    description="Removes the AWS IAM user's console password so they can no longer sign in to the AWS "
    "Management Console.",
    params=DisableConsoleLogin,
    risk="medium",
    scope="aws.iam.login_profile.write",
    reversible=False,
    cues=(r"\b(?:disable|remove|revoke|block|delete)\b[^.;]{0,20}\bconsole\b",),
    examples=("disable console login for the IAM user",),
    target="iam_user",
)
