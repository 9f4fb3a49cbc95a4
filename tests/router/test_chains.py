"""A vmodel's chain walked over the data plane's routing (a recording step
here, real runtimes in tests/integration/test_chains.py): which calls walk
it, what each step is sent, and that a step's failure names the step and
keeps its status."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tritonclient.grpc import service_pb2

from mesh.core import errors, records
from mesh.kv import memory_kv, placement_table, records_store
from mesh.node import metrics
from router import chain_wire, chains, request_parsing, upstream

CHAINED = records.VModelRecord("pred-1", "pred-1", transformer="tr-1", explainer="ex-1")
PLAIN = records.VModelRecord("plain-1", "plain-1")


@pytest.fixture
async def mirror() -> AsyncIterator[placement_table.PlacementTable]:
    kv = memory_kv.MemoryKV()
    store = records_store.RecordStore(kv, "mm")
    for name, record in (("chained", CHAINED), ("plain", PLAIN)):

        def put(
            _: records.VModelRecord | None, r: records.VModelRecord = record
        ) -> records.VModelRecord:
            return r

        await store.update_vmodel(name, put)
    table = placement_table.PlacementTable(kv, "mm")
    await table.start()
    try:
        yield table
    finally:
        await table.stop()


def asked(
    name: str, kind: str = "any", *, balanced: bool = False, explain: bool = False
) -> request_parsing.Requested:
    return request_parsing.Requested(kind, name, balanced=balanced, explain=explain)


async def test_which_calls_walk_a_chain(mirror: placement_table.PlacementTable) -> None:
    assert chains.chain_of(mirror, asked("chained"), "ModelInfer") == CHAINED
    assert chains.chain_of(mirror, asked("plain"), "ModelInfer") is None
    assert chains.chain_of(mirror, asked("chained"), "ModelMetadata") is None
    assert chains.chain_of(mirror, asked("chained", balanced=True), "ModelInfer") is None
    assert chains.chain_of(mirror, asked("pred-1", "model"), "ModelInfer") is None
    with pytest.raises(errors.NoExplainer, match="'plain' has no explainer"):
        chains.chain_of(mirror, asked("plain", explain=True), "ModelInfer")


class Recorder:
    """A step that answers each request with its inputs as outputs."""

    def __init__(self, fail_at: str = "", error: Exception | None = None) -> None:
        self.sent: list[service_pb2.ModelInferRequest] = []
        self.fail_at = fail_at
        self.error = error

    async def __call__(self, model_id: str, request: bytes, timeout: float | None) -> bytes:
        req = service_pb2.ModelInferRequest.FromString(request)
        assert req.model_name == model_id
        self.sent.append(req)
        if model_id == self.fail_at and self.error is not None:
            raise self.error
        resp = service_pb2.ModelInferResponse(model_name=model_id, id=req.id)
        for i in req.inputs:
            resp.outputs.add(name=f"{i.name}>{model_id}", datatype=i.datatype, shape=i.shape)
        resp.raw_output_contents.extend(req.raw_input_contents)
        out: bytes = resp.SerializeToString()
        return out


def request() -> bytes:
    req = service_pb2.ModelInferRequest(model_name="chained", id="r1")
    req.inputs.add(name="x", datatype="FP64", shape=[1, 1])
    req.raw_input_contents.append(b"\0" * 8)
    out: bytes = req.SerializeToString()
    return out


def stage(req: service_pb2.ModelInferRequest, key: str) -> str:
    value: str = req.parameters[key].string_param
    return value


async def test_infer_goes_through_preprocess_the_predictor_and_postprocess() -> None:
    step, meters = Recorder(), metrics.Metrics()
    runner = chains.ChainRunner(step, meters)
    answer = await runner.run(CHAINED, asked("chained"), "pred-1", request(), 5.0)
    assert [(r.model_name, stage(r, chain_wire.STAGE_PARAMETER)) for r in step.sent] == [
        ("tr-1", "preprocess"),
        ("pred-1", ""),
        ("tr-1", "postprocess"),
    ]
    final = service_pb2.ModelInferResponse.FromString(answer)
    assert final.model_name == "chained" and final.id == "r1"
    assert [o.name for o in final.outputs] == ["x>tr-1>pred-1>tr-1"]
    assert final.raw_output_contents == [b"\0" * 8]
    assert 'meshserve_chain_stage_milliseconds_count{stage="predict"} 1.0' in (
        meters.exposition().decode()
    )


async def test_explain_goes_to_the_explainer_naming_the_predictor() -> None:
    step = Recorder()
    runner = chains.ChainRunner(step, metrics.Metrics())
    answer = await runner.run(CHAINED, asked("chained", explain=True), "pred-1", request(), None)
    [sent] = step.sent
    assert sent.model_name == "ex-1"
    assert stage(sent, chain_wire.PREDICTOR_PARAMETER) == "pred-1"
    assert service_pb2.ModelInferResponse.FromString(answer).model_name == "chained"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (upstream.UpstreamError("INVALID_ARGUMENT", "bad row"), upstream.UpstreamError),
        (errors.ModelLoadFailed("pred-1", "no file"), errors.ModelLoadFailed),
    ],
)
async def test_a_steps_failure_names_the_step_and_keeps_its_kind(
    error: Exception, kind: type[Exception]
) -> None:
    runner = chains.ChainRunner(Recorder("pred-1", error), metrics.Metrics())
    with pytest.raises(kind) as raised:
        await runner.run(CHAINED, asked("chained"), "pred-1", request(), 5.0)
    assert "predict step of 'chained'" in str(raised.value)
    if isinstance(raised.value, upstream.UpstreamError):
        assert raised.value.code == "INVALID_ARGUMENT"


async def test_a_stream_that_would_need_a_chain_is_refused_saying_so(
    mirror: placement_table.PlacementTable,
) -> None:
    with pytest.raises(errors.InvalidRequest, match="streams are not walked through a chain"):
        chains.refuse_stream(mirror, asked("chained"))
    with pytest.raises(errors.InvalidRequest):
        chains.refuse_stream(mirror, asked("plain", explain=True))
    chains.refuse_stream(mirror, asked("plain"))
    chains.refuse_stream(mirror, asked("chained", balanced=True))
