"""Interference-blind baselines: Kubernetes' own scores, the Ibis knapsacks, the FGD paper's baselines."""
