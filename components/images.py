"""Container images the components run in.

KFP's cache key includes the image string, so a cluster deployment must pin images by digest
(`...@sha256:...`): set VESSELSEG_IMAGE_CPU / VESSELSEG_IMAGE_GPU when compiling. `kfp.local`'s
SubprocessRunner ignores the image and runs the body in the current interpreter.
"""

import os

CPU_IMAGE = os.environ.get("VESSELSEG_IMAGE_CPU", "ghcr.io/vesselseg/vesselseg-cpu:0.1.0")
GPU_IMAGE = os.environ.get("VESSELSEG_IMAGE_GPU", "ghcr.io/vesselseg/vesselseg-cuda:0.1.0")
