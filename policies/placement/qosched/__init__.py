"""The full ``qosched`` placement policy: interference-aware, fragmentation-aware, QoS-fair."""

from qosched.policies.placement.qosched.config import QoschedConfig
from qosched.policies.placement.qosched.fairness_hook import FairnessHook, FairnessInputs, SnapshotFairness

__all__ = ["FairnessHook", "FairnessInputs", "QoschedConfig", "SnapshotFairness"]
