"""Kubernetes resources and the controller that serves them.

Predictor documents and their status, ServingRuntime selection and the
Deployments that run runtimes, the management-API client that registers a
resource's model with the mesh, and the ``meshserve controller`` built on kopf.
"""
