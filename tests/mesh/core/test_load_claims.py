"""The load-claim rule: one load of a model cluster-wide, extra copies up to
the model's maximum."""

from __future__ import annotations

import pytest

from mesh.core import errors, load_claims, records

NOW = 1_000_000


def instance() -> records.InstanceRecord:
    return records.InstanceRecord(endpoint="x:1", capacity_bytes=100)


def model(copies: dict[str, records.CopyState], max_copies: int = 0) -> records.ModelRecord:
    return records.ModelRecord(
        model_type="sklearn",
        path="m",
        copies={i: records.CopyInfo(state, 1) for i, state in copies.items()},
        failures={"n1": records.FailureInfo(5, "earlier")},
        max_copies=max_copies,
    )


LIVE = {"n1": instance(), "n2": instance(), "n3": instance()}


def test_a_model_nowhere_is_claimed_loading_and_its_failure_here_cleared() -> None:
    claim = load_claims.LoadClaim("m", "n1")
    rec = load_claims.claimed(claim, model({}), LIVE, NOW)
    assert rec.copies == {"n1": records.CopyInfo(records.CopyState.LOADING, NOW)}
    assert rec.failures == {}


@pytest.mark.parametrize("state", [records.CopyState.LOADING, records.CopyState.LOADED])
def test_a_model_another_live_node_holds_or_loads_is_rerouted(state: records.CopyState) -> None:
    claim = load_claims.LoadClaim("m", "n1")
    with pytest.raises(errors.Reroute, match="already on n2"):
        load_claims.claimed(claim, model({"n2": state}), LIVE, NOW)


def test_copies_on_dead_or_ignored_nodes_do_not_stop_a_claim() -> None:
    rec = model({"gone": records.CopyState.LOADED, "n2": records.CopyState.LOADED})
    claim = load_claims.LoadClaim("m", "n1", ignore=frozenset({"n2"}))
    assert load_claims.claimed(claim, rec, LIVE, NOW).copies["n1"].state is (
        records.CopyState.LOADING
    )


def test_a_copy_of_this_node_the_record_still_shows_does_not_stop_its_claim() -> None:
    claim = load_claims.LoadClaim("m", "n1")
    rec = load_claims.claimed(claim, model({"n1": records.CopyState.LOADED}), LIVE, NOW)
    assert rec.copies["n1"] == records.CopyInfo(records.CopyState.LOADING, NOW)


def test_an_extra_copy_is_claimed_beside_another_nodes_copy() -> None:
    claim = load_claims.LoadClaim("m", "n1", extra_copy=True)
    rec = load_claims.claimed(claim, model({"n2": records.CopyState.LOADED}), LIVE, NOW)
    assert set(rec.copies) == {"n1", "n2"}


def test_an_extra_copy_past_the_models_maximum_is_rerouted() -> None:
    claim = load_claims.LoadClaim("m", "n1", extra_copy=True)
    full = model({"n2": records.CopyState.LOADED, "n3": records.CopyState.LOADING}, max_copies=2)
    with pytest.raises(errors.Reroute, match="already has 2 copies"):
        load_claims.claimed(claim, full, LIVE, NOW)
