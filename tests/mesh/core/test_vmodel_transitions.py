"""The vmodel transition rule: a new target waits for its load unless forced
or nothing is served meanwhile; owners, expected targets and update-only are
honoured."""

from __future__ import annotations

import pytest

from mesh.core import errors, records
from mesh.core import vmodel_transitions as vt

SETTLED = records.VModelRecord("m1", "m1", owner="predictor")


def ask(
    current: records.VModelRecord | None,
    active_loaded: bool = True,
    *,
    target: str = "m2",
    owner: str = "",
    update_only: bool = False,
    force: bool = False,
    expected: str = "",
) -> records.VModelRecord:
    request = vt.VModelRequest("v", target, owner, update_only, force, expected)
    return vt.requested(current, request, active_loaded=active_loaded)


def test_a_new_vmodel_points_at_its_target_at_once() -> None:
    assert ask(None, owner="predictor") == records.VModelRecord("m2", "m2", owner="predictor")


def test_a_new_target_transitions_while_the_active_model_is_loaded() -> None:
    assert ask(SETTLED) == records.VModelRecord("m1", "m2", owner="predictor")


@pytest.mark.parametrize(
    ("active_loaded", "force"), [(False, False), (True, True)], ids=["not-loaded", "forced"]
)
def test_the_alias_moves_at_once_when_forced_or_the_active_model_is_not_loaded(
    active_loaded: bool, force: bool
) -> None:
    assert ask(SETTLED, active_loaded, force=force) == records.VModelRecord(
        "m2", "m2", owner="predictor"
    )


def test_pointing_back_at_the_active_model_ends_a_transition() -> None:
    moving = records.VModelRecord("m1", "m2")
    assert ask(moving, target="m1") == records.VModelRecord("m1", "m1")


def test_the_same_target_again_changes_nothing_unless_it_failed() -> None:
    assert ask(SETTLED, target="m1") is SETTLED
    stuck = records.VModelRecord("m1", "m2", failed=True)
    assert ask(stuck) == records.VModelRecord("m1", "m2", failed=False)


def test_update_only_of_no_vmodel_is_not_found() -> None:
    with pytest.raises(errors.ModelNotFound):
        ask(None, update_only=True)


def test_a_vmodel_owned_by_someone_else_is_refused() -> None:
    with pytest.raises(errors.AlreadyExists, match="owned by 'predictor'"):
        ask(SETTLED, owner="someone")
    assert ask(SETTLED, owner="").target_model == "m2"  # no owner given: anyone


@pytest.mark.parametrize(
    ("current", "expected"), [(SETTLED, "m9"), (None, "m9")], ids=["other-target", "unset"]
)
def test_an_unexpected_current_target_is_a_conflict(
    current: records.VModelRecord | None, expected: str
) -> None:
    with pytest.raises(errors.Conflict, match="not the expected 'm9'"):
        ask(current, expected=expected)


def test_the_expected_target_lets_the_change_through() -> None:
    assert ask(SETTLED, expected="m1").target_model == "m2"
    assert ask(None, expected="m2") == records.VModelRecord("m2", "m2")


def test_a_loaded_target_becomes_active_and_a_failed_one_marks_the_transition() -> None:
    moving = records.VModelRecord("m1", "m2")
    assert vt.completed(moving, "m2", target_failed=False) == records.VModelRecord("m2", "m2")
    assert vt.completed(moving, "m2", target_failed=True) == records.VModelRecord(
        "m1", "m2", failed=True
    )


def test_a_vmodel_deleted_or_retargeted_meanwhile_is_left_alone() -> None:
    assert vt.completed(None, "m2", target_failed=False) is None
    retargeted = records.VModelRecord("m1", "m3")
    assert vt.completed(retargeted, "m2", target_failed=False) is retargeted


def test_a_vmodel_refers_to_its_active_and_target_models() -> None:
    assert vt.models_of(records.VModelRecord("m1", "m2")) == {"m1", "m2"}
    assert vt.models_of(None) == set()


def test_a_canary_holds_the_move_until_promoted_and_back_to_the_old_model_rolls_back() -> None:
    split = vt.requested(
        SETTLED, vt.VModelRequest("v", "m2", canary_percent=10), active_loaded=True
    )
    assert (split.active_model, split.target_model, split.canary_percent) == ("m1", "m2", 10)
    loaded = vt.completed(split, "m2", target_failed=False)
    assert loaded == split  # loaded, but the split holds
    wider = vt.requested(loaded, vt.VModelRequest("v", "m2", canary_percent=50), active_loaded=True)
    assert wider.canary_percent == 50 and wider.active_model == "m1"
    for promote in (None, 100):
        promoted = vt.requested(
            wider, vt.VModelRequest("v", "m2", canary_percent=promote), active_loaded=True
        )
        assert promoted.canary_percent is None and promoted.transitioning  # the node moves it
        moved = vt.completed(promoted, "m2", target_failed=False)
        assert moved is not None and moved.active_model == "m2"
    back = vt.requested(wider, vt.VModelRequest("v", "m1"), active_loaded=True)
    assert (back.active_model, back.target_model, back.canary_percent) == ("m1", "m1", None)


def test_a_canary_that_fails_to_load_leaves_everything_on_the_old_model() -> None:
    split = vt.requested(
        SETTLED, vt.VModelRequest("v", "m2", canary_percent=30), active_loaded=True
    )
    failed = vt.completed(split, "m2", target_failed=True)
    assert failed is not None and failed.failed and failed.active_model == "m1"


@pytest.mark.parametrize("percent", [-1, 101])
def test_a_canary_percent_outside_0_to_100_is_refused(percent: int) -> None:
    with pytest.raises(errors.InvalidRequest, match="between 0 and 100"):
        vt.requested(
            SETTLED, vt.VModelRequest("v", "m2", canary_percent=percent), active_loaded=True
        )


def test_a_canary_survives_the_records_json() -> None:
    v = records.VModelRecord("m1", "m2", owner="inferenceservice", canary_percent=0)
    assert records.VModelRecord.from_json(v.to_json()) == v
    assert "canary" not in SETTLED.to_json().decode()


def test_a_chain_is_set_at_once_whatever_the_transition_and_kept_when_not_given() -> None:
    chain = vt.Chain(transformer="t1", explainer="e1")
    request = vt.VModelRequest("v", "m2", chain=chain)
    moving = vt.requested(SETTLED, request, active_loaded=True)
    assert (moving.active_model, moving.target_model) == ("m1", "m2")
    assert (moving.transformer, moving.explainer) == ("t1", "e1")
    kept = vt.requested(moving, vt.VModelRequest("v", "m2"), active_loaded=True)
    assert kept == moving
    cleared = vt.requested(
        moving, vt.VModelRequest("v", "m2", chain=vt.Chain()), active_loaded=True
    )
    assert (cleared.transformer, cleared.explainer) == ("", "")


def test_a_vmodel_refers_to_its_chain_models_too() -> None:
    v = records.VModelRecord("m1", "m1", transformer="t1", explainer="e1")
    assert vt.models_of(v) == {"m1", "t1", "e1"}
    assert records.VModelRecord.from_json(v.to_json()) == v
