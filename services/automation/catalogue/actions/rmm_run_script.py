from services.automation.catalogue.base import Action, Params

# Scripts an RMM library commonly holds; a tenant's own library (its tool map) adds to it.
LIBRARY = (
    "flush_dns",
    "gpupdate",
    "clear_temp_files",
    "clear_teams_cache",
    "restart_print_spooler",
    "clear_print_queue",
    "reset_network_stack",
    "repair_windows_update",
    "sfc_scan",
    "disk_cleanup",
    "restart_explorer",
)


class RunScript(Params):
    device: str
    script: str


ACTION = Action(
    name="rmm.run_script",
    system="rmm",
    description="Runs a named script from the RMM script library (for example flush_dns or gpupdate) on a "
    "managed device.",
    params=RunScript,
    risk="medium",
    scope="rmm.scripts.run",
    reversible=False,
    cues=(
        r"\b(?:run|execute|launch|kick off)\b",
        r"\bzscript\b",
        # "flush dns", "clear temp files", "clear the teams cache": a library script in words.
        *(
            r"\b" + r"(?:[\s_]+(?:the|all|any|his|her|their)\b)?[\s_]*".join(name.split("_")) + r"\b"
            for name in LIBRARY
        ),
    ),
    examples=("run the flush_dns script on the laptop",),
    repeatable=("device", "script"),
    target="device",
    extra={"library": LIBRARY},
)
