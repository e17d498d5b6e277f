from typing import Literal

from services.automation.catalogue.base import Action, Params


class GrantMailboxAccess(Params):
    mailbox: str
    user: str
    rights: Literal["FullAccess", "SendAs", "ReadPermission"]


ACTION = Action(
    name="m365.grant_mailbox_access",
    system="m365",
    description="Delegates one Exchange Online permission on a mailbox (open it, send as it, or read-only) "
    "to a user; each right is a separate grant.",
    params=GrantMailboxAccess,
    risk="medium",
    scope="m365.mailbox.permissions.write",
    reversible=True,
    cues=(
        r"\b(?:full ?access|send ?as|read ?permission|read-?only access)\b",
        r"\b(?:grant|give|delegate)\b[^.;]{0,40}\bmailbox\b",
    ),
    examples=("grant FullAccess on the shared mailbox to the user",),
    repeatable=("rights",),
    target="mailbox",
    extra={
        "synonyms": {
            "rights": {
                "FullAccess": ("full access", "fullaccess", "full"),
                "SendAs": ("send as", "sendas"),
                "ReadPermission": (
                    "read permission",
                    "readpermission",
                    "read-only",
                    "read only",
                    "read access",
                ),
            }
        }
    },
)
