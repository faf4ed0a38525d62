"""Running the pipeline on a Kubernetes cluster with Kubeflow Pipelines.

- `platform`: per-stage cluster wiring (image, resources, GPUs, scheduling, secrets, retries) applied to
  KFP tasks, and the cluster compile that refuses images not pinned by digest;
- `client`: upload / version / run / schedule through `kfp.Client`, with clear errors for host and token;
- `champion`: the promote gate for scheduled retraining (`models/champion.json` in the object store);
- `trainjob`: a Kubeflow Trainer `TrainJob` (DeepSpeed runtime) built from any stage config;
- `commands`: the `vesselseg compile-cluster|upload|submit|schedule` subcommands.
"""
