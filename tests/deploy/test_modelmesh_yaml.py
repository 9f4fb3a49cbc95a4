"""YAML written for KServe ModelMesh Serving applies unchanged to meshserve's
CRDs. The documents below are written here from the fields ModelMesh Serving
documents and ships examples of (its Predictor spec page, its example
Predictors, its MLServer / Triton / custom runtimes), with our own values: old
and new spellings of storage, the deprecated fields, runtimes with probes,
resource fields, an adapter environment and a disabled storage helper."""

from __future__ import annotations

import pytest

from kube import predictor
from tests.deploy import manifests
from tests.deploy.manifests import Obj
from tests.deploy.test_custom_resources import validation_errors

PREDICTORS = {
    # The "complete example" of ModelMesh Serving's Predictor spec page: the
    # deprecated top-level path/schemaPath with the S3 form of storage.
    "spec-page-example": """
apiVersion: serving.kserve.io/v1alpha1
kind: Predictor
metadata:
  name: digits-tf
spec:
  modelType:
    name: tensorflow
    version: "2.11"   # optional
  runtime:            # optional
    name: triton-2.x
  path: tf/digits
  schemaPath: schemas/digits.json   # optional
  storage:
    s3:
      secretKey: team-bucket
      bucket: team-models   # optional
""",
    # The shape of its shipped example Predictors (XGBoost, ONNX, scikit-learn).
    "example-predictor": """
apiVersion: serving.kserve.io/v1alpha1
kind: Predictor
metadata:
  name: example-lightgbm-churn
spec:
  modelType:
    name: lightgbm
  path: lightgbm/churn.bst
  storage:
    s3:
      secretKey: localMinIO
""",
    # The current storage form, every field of it.
    "storage-key-path": """
apiVersion: serving.kserve.io/v1alpha1
kind: Predictor
metadata:
  name: fraud-onnx
  namespace: models
  labels:
    team: risk
  annotations:
    meshserve.io/min-copies: "2"
spec:
  modelType:
    name: onnx
    version: "1"
  storage:
    key: gcs-prod
    path: fraud/v7/model.onnx
    schemaPath: fraud/v7/schema.json
    parameters:
      bucket: risk-models
      type: gcs
""",
    # Deprecated fields ModelMesh Serving's CRD still carries.
    "deprecated-pvc-and-extras": """
apiVersion: serving.kserve.io/v1alpha1
kind: Predictor
metadata:
  name: torch-resnet
spec:
  modelType:
    name: pytorch
  gpu: required
  protocolVersion: grpc-v2
  serviceAccountName: models-reader
  storage:
    path: resnet/model.pt
    persistentVolumeClaim:
      claimName: shared-models
      readOnly: true
""",
    # A Predictor as `kubectl get -o yaml` shows it in ModelMesh Serving, with
    # the server's metadata and a status written by its controller.
    "with-status": """
apiVersion: serving.kserve.io/v1alpha1
kind: Predictor
metadata:
  name: example-sklearn-digits
  namespace: modelmesh-serving
  uid: 5c7e1e4a-7d0e-4b0e-9a53-0a4b2c1d9e8f
  resourceVersion: "90210"
  generation: 2
  creationTimestamp: 2024-03-01T12:00:00Z
  finalizers:
    - modelmesh.serving.kserve.io/predictor
spec:
  modelType:
    name: sklearn
  path: sklearn/digits-svm.joblib
  storage:
    s3:
      secretKey: localMinIO
status:
  available: true
  activeModelState: Loaded
  targetModelState: Loading
  transitionStatus: InProgress
  failedCopies: 0
  grpcEndpoint: grpc://modelmesh-serving.modelmesh-serving:8033
  httpEndpoint: ""
  lastFailureInfo:
    location: 7d9f8c6b5-x2x4q
    reason: RuntimeUnhealthy
    message: Waiting for runtime Pod to become available
    modelId: example-sklearn-digits__isvc-6b2eb0b8bf
    time: 2024-03-01T12:00:05Z
""",
}

RUNTIMES = {
    # A multi-model MLServer runtime as ModelMesh Serving ships it: runtime
    # container only (its controller added the rest), environment, resources.
    "mlserver-cluster-runtime": """
apiVersion: serving.kserve.io/v1alpha1
kind: ClusterServingRuntime
metadata:
  name: mlserver-team
  labels:
    name: team-mlserver-SR
spec:
  supportedModelFormats:
    - name: sklearn
      version: "1"
      autoSelect: true
    - name: lightgbm
      version: "4"
      autoSelect: true
  protocolVersions:
    - grpc-v2
  multiModel: true
  grpcEndpoint: "port:8085"
  grpcDataEndpoint: "port:8001"
  containers:
    - name: mlserver
      image: registry.example.com/mlserver:1.7.1
      env:
        - name: MLSERVER_MODELS_DIR
          value: /models/_mlserver_models/
        - name: MLSERVER_GRPC_PORT
          value: "8001"
        - name: MLSERVER_LOAD_MODELS_AT_STARTUP
          value: "false"
      resources:
        requests:
          cpu: 500m
          memory: 1Gi
        limits:
          cpu: "5"
          memory: 1Gi
  builtInAdapter:
    serverType: mlserver
    runtimeManagementPort: 8001
    memBufferBytes: 134217728
    modelLoadingTimeoutMillis: 90000
""",
    # A Triton runtime: annotations, a shell command, an exec liveness probe.
    "triton-runtime": """
apiVersion: serving.kserve.io/v1alpha1
kind: ServingRuntime
metadata:
  name: triton-team
  annotations:
    maxLoadingConcurrency: "2"
spec:
  supportedModelFormats:
    - name: onnx
      version: "1"
      autoSelect: true
    - name: tensorflow
      version: "2"
      autoSelect: true
      priority: 2
  multiModel: true
  grpcEndpoint: "port:8085"
  grpcDataEndpoint: "port:8001"
  containers:
    - name: triton
      image: registry.example.com/tritonserver:24.10-py3
      command: [/bin/sh]
      args:
        - -c
        - 'mkdir -p /models/_triton_models;
          exec tritonserver
          "--model-repository=/models/_triton_models"
          "--model-control-mode=explicit"
          '
      resources:
        requests:
          cpu: 500m
          memory: 1Gi
        limits:
          cpu: "5"
          memory: 1Gi
      livenessProbe:
        exec:
          command: [curl, --fail, --silent, --max-time, "9", http://localhost:8000/v2/health/live]
        initialDelaySeconds: 5
        periodSeconds: 30
        timeoutSeconds: 10
  builtInAdapter:
    serverType: triton
    runtimeManagementPort: 8001
    memBufferBytes: 134217728
    modelLoadingTimeoutMillis: 90000
""",
    # A custom runtime that reads storage itself: storage helper disabled,
    # memory passed in through the downward API.
    "custom-pullerless-runtime": """
apiVersion: serving.kserve.io/v1alpha1
kind: ServingRuntime
metadata:
  name: custom-pullerless
spec:
  containers:
    - name: modelserver
      image: registry.example.com/custom-runtime:2.0
      env:
        - name: MODEL_DIRECTORY_PATH
          value: /models
        - name: MODEL_SERVER_MEM_REQ_BYTES
          valueFrom:
            resourceFieldRef:
              containerName: modelserver
              resource: requests.memory
      resources:
        requests:
          cpu: 500m
          memory: 1Gi
  multiModel: true
  grpcDataEndpoint: port:8001
  grpcEndpoint: port:8001
  storageHelper:
    disabled: true
  supportedModelFormats:
    - name: custom-format
      version: "1"
      autoSelect: true
""",
    # Pod-level fields of KServe's ServingRuntimeSpec, and the adapter's env.
    "pod-level-fields": """
apiVersion: serving.kserve.io/v1alpha1
kind: ServingRuntime
metadata:
  name: ovms-gpu
spec:
  disabled: false
  replicas: 2
  supportedModelFormats:
    - name: openvino_ir
      version: opset1
      autoSelect: true
  protocolVersions: [grpc-v1]
  multiModel: true
  grpcEndpoint: port:8085
  grpcDataEndpoint: port:8001
  httpDataEndpoint: port:8888
  nodeSelector:
    accelerator: a10
  tolerations:
    - key: nvidia.com/gpu
      operator: Exists
      effect: NoSchedule
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
          - matchExpressions:
              - key: kubernetes.io/arch
                operator: In
                values: [amd64]
  imagePullSecrets:
    - name: registry-creds
  labels:
    team: vision
  annotations:
    prometheus.io/scrape: "true"
  volumes:
    - name: shm
      emptyDir:
        medium: Memory
        sizeLimit: 1Gi
  containers:
    - name: ovms
      image: registry.example.com/ovms:2024.1
      args: [--port=8001, --rest_port=8888, --model_store=/models]
      ports:
        - containerPort: 8001
          name: grpc
      volumeMounts:
        - name: shm
          mountPath: /dev/shm
      resources:
        limits:
          nvidia.com/gpu: 1
          memory: 4Gi
  builtInAdapter:
    serverType: ovms
    runtimeManagementPort: 8888
    memBufferBytes: 134217728
    modelLoadingTimeoutMillis: 90000
    env:
      - name: CONTAINER_MEM_REQ_BYTES
        value: "4294967296"
""",
}


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_modelmesh_serving_predictors_validate_unchanged(crds: dict[str, Obj], name: str) -> None:
    assert validation_errors(crds, manifests.load(PREDICTORS[name])) == []


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_modelmesh_serving_predictors_are_read_by_meshserve(name: str) -> None:
    """Valid for the API server is not enough: meshserve must understand them."""
    spec = predictor.parse(manifests.load(PREDICTORS[name]))
    assert spec.path


def test_both_storage_forms_mean_the_same_to_meshserve() -> None:
    old = predictor.parse(manifests.load(PREDICTORS["spec-page-example"]))
    assert (old.path, old.storage_key, old.schema_path) == (
        "tf/digits",
        "team-bucket",
        "schemas/digits.json",
    )
    assert old.storage_params["bucket"] == "team-models"
    assert old.runtime == "triton-2.x"


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_modelmesh_serving_runtimes_validate_unchanged(crds: dict[str, Obj], name: str) -> None:
    assert validation_errors(crds, manifests.load(RUNTIMES[name])) == []


def test_a_runtime_of_one_scope_is_valid_in_the_other(crds: dict[str, Obj]) -> None:
    for text in RUNTIMES.values():
        doc = manifests.load(text)
        other = (
            "ServingRuntime" if doc["kind"] == "ClusterServingRuntime" else "ClusterServingRuntime"
        )
        assert validation_errors(crds, {**doc, "kind": other}) == []
