"""MLServer runtime classes that ship with meshserve, for the formats
MLServer has no runtime package for (ONNX). They run inside MLServer, never
in the mesh: the adapter puts this folder on the ``PYTHONPATH`` of the
MLServer it starts, where each module imports as a top-level one
(``meshserve_onnx``); see :mod:`runtime_adapters.mlserver_formats`."""
