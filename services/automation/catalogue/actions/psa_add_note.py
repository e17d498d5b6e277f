from services.automation.catalogue.base import Action, Params


class AddNote(Params):
    text: str


ACTION = Action(
    name="psa.add_note",
    system="psa",
    description="Appends a note with the given text to the current ticket in the PSA.",
    params=AddNote,
    risk="low",
    scope="psa.notes.write",
    reversible=False,
    cues=(
        r"\b(?:add|put|drop|post|write|leave|log|make)\b[^.;]{0,25}\bnote\b",
        r"\bnote (?:in|on|to) (?:the )?ticket\b",
    ),
    examples=("add a note to the ticket",),
    target=None,
)
