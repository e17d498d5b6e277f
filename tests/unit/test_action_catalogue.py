"""The action catalogue is the contract: it holds every action of the published catalogue with
the same parameters, types, required flags, allowed values and defaults."""

from __future__ import annotations

import json
import typing

import pytest
from pydantic import ValidationError

from libs.common.settings import REPO_ROOT
from services.automation.catalogue import catalogue, get, idempotency_key

PUBLISHED = REPO_ROOT.parent / "shared" / "data" / "instructions" / "catalogue.json"
TYPES = {"string": (str,), "boolean": (bool,)}


@pytest.mark.skipif(not PUBLISHED.exists(), reason="the shared data folder is not beside the repository")
def test_every_published_action_is_in_the_catalogue_with_the_same_parameters() -> None:
    published = json.loads(PUBLISHED.read_text())
    assert sorted(a["action"] for a in published) == sorted(catalogue())
    for entry in published:
        action = catalogue()[entry["action"]]
        fields = action.params.model_fields
        assert set(fields) == set(entry["params"]), entry["action"]
        for name, spec in entry["params"].items():
            f = fields[name]
            assert f.is_required() == spec["required"], (entry["action"], name)
            if "enum" in spec:
                assert list(typing.get_args(f.annotation)) == spec["enum"], (entry["action"], name)
            if "default" in spec:
                assert f.default == spec["default"], (entry["action"], name)


def test_each_action_says_its_risk_scope_reversibility_and_schema() -> None:
    for action in catalogue().values():
        described = action.describe()
        assert described["risk"] in ("low", "medium", "high")
        assert described["scope"] and described["dry_run"] is True
        assert described["params_schema"]["type"] == "object"
        assert set(described["params_schema"].get("required", [])) == set(action.required())


def test_parameters_are_typed_and_unknown_ones_refused() -> None:
    reset = get("identity.reset_password")
    assert reset is not None
    assert reset.validate({"user": "ann"}).must_change_at_next_logon is True  # type: ignore[attr-defined]
    with pytest.raises(ValidationError):
        reset.validate({"user": "ann", "password": "chosen-by-someone"})
    verify = get("identity.verify_user_mfa")
    assert verify is not None
    with pytest.raises(ValidationError):
        verify.validate({"user": "ann", "method": "carrier pigeon"})


def test_an_idempotency_key_names_one_step_of_one_run() -> None:
    assert idempotency_key("run-1", 0) == idempotency_key("run-1", 0)
    assert len({idempotency_key("run-1", 0), idempotency_key("run-1", 1), idempotency_key("run-2", 0)}) == 3
