from services.automation.catalogue.base import Action, Params


class AttachPolicy(Params):
    iam_user: str
    policy: str


ACTION = Action(
    name="aws.attach_policy",
    system="aws",
    description="Attaches the named managed IAM policy (AWS-managed or customer-managed) to an AWS IAM user.",
    params=AttachPolicy,
    risk="high",
    scope="aws.iam.policies.write",
    reversible=True,
    cues=(r"\battach\b", r"\b(?:grant|give|add)\b[^.;]{0,30}\bpolicy\b"),
    examples=("attach the SecurityAudit policy to the IAM user",),
    target="iam_user",
)
