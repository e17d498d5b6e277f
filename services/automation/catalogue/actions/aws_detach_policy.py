from services.automation.catalogue.base import Action, Params


class DetachPolicy(Params):
    iam_user: str
    policy: str


ACTION = Action(
    name="aws.detach_policy",
    system="aws",
    description="Detaches the named managed IAM policy from an AWS IAM user.",
    params=DetachPolicy,
    risk="medium",
    scope="aws.iam.policies.write",
    reversible=True,
    cues=(r"\bdetach\b", r"\b(?:remove|revoke|take)\b[^.;]{0,30}\bpolicy\b"),
    examples=("detach the policy from the IAM user",),
    target="iam_user",
)
