"""qosched's kubelet device plugin (``qosched device-plugin``): the share resource
``qosched.io/gpu-share`` (1/100 GPU per unit), allocated to the GPU qosched chose at bind.

``inventory`` finds the GPUs (NVML, or a fake inventory file), ``allocation`` turns a pod's bind
annotations into the container's environment and mounts, ``pods`` finds the pod a kubelet
``Allocate`` is for, ``server`` speaks the kubelet device plugin API v1beta1 over gRPC
(``api/`` holds the proto and the stubs generated from it). See docs/device-layer.md.
"""
