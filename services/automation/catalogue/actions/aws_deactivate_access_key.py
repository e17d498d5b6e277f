from services.automation.catalogue.base import Action, Params


class DeactivateAccessKey(Params):
    iam_user: str
    access_key_id: str | None = None


ACTION = Action(
    name="aws.deactivate_access_key",
    system="aws",
    description="Marks an AWS IAM user's access key inactive, the given key when an ID is supplied and "
    "otherwise the user's keys, without deleting them.",
    params=DeactivateAccessKey,
    risk="medium",
    scope="aws.iam.access_keys.write",
    reversible=True,
    cues=(
        r"\b(?:deactivate|disable|inactivate|revoke|rotate out)\b[^.;]{0,40}\b(?:access keys?|keys?|zakey)\b",
    ),
    examples=("deactivate the IAM user's access key",),
    target="iam_user",
)
