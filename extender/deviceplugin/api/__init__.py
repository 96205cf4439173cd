"""The kubelet device plugin API v1beta1: our proto and the stubs grpcio-tools generated from it
(``scripts/gen_deviceplugin_stubs.sh``; do not edit the ``*_pb2*`` files by hand)."""
