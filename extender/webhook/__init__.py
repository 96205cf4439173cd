"""qosched's admission webhook (``qosched webhook``): validates and completes qosched pods.

``mutation`` decides the JSONPatch of one pod, ``admission`` speaks ``admission.k8s.io/v1``
``AdmissionReview``, ``app`` serves both over Flask (gunicorn, TLS), ``certs`` provisions the
serving certificate when cert-manager is absent. See docs/device-layer.md.
"""
