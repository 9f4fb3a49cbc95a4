"""Triton Inference Server as a mesh runtime, in the steps it takes: the
format table (:mod:`.formats`: which model types, which backend), the
``config.pbtxt`` text (:mod:`.pbtxt`), the model folder's layout
(:mod:`.layout`), starting ``tritonserver`` (:mod:`.launch`), and the adapter
that drives it over V2 gRPC and sizes its models (:mod:`.adapter`)."""
