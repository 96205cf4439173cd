"""Pod rules of kube-apiserver that an extender can trip over: binding, resize, update limits.

Upstream sources mirrored here (Kubernetes v1.33–v1.36):

- ``pkg/registry/core/pod/storage/storage.go`` ``BindingREST.Create`` → ``assignPod`` →
  ``setPodNodeAndMetadata``: one guarded read-modify-write of the pod (:func:`bind`).
- ``pkg/registry/core/pod/strategy.go`` ``podResizeStrategy`` / ``dropNonResizeUpdates`` and
  ``ValidatePodResize`` in ``pkg/apis/core/validation/validation.go`` (:func:`resize`).
- ``ValidatePodUpdate``: through the main resource only images, ``activeDeadlineSeconds``,
  tolerations (additions), ``terminationGracePeriodSeconds`` and scheduling-gate removal may change
  in ``spec`` (:func:`check_pod_update`); status is reset from the stored pod (status is a
  subresource).
- ``pkg/apis/core/v1/defaults.go`` and ``qos.ComputePodQOS`` for the fields the apiserver fills
  in at create (:func:`default_pod`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from datetime import datetime
from fractions import Fraction
from typing import Any

from .status import ApiError, FieldError, GroupResource, aggregate, bad_request, conflict, failure, invalid

JsonDict = dict[str, Any]

PODS = GroupResource("", "pods")
POD_BINDINGS = GroupResource("", "pods/binding")

_QUANTITY = re.compile(
    r"^(?P<num>[+-]?(\d+\.?\d*|\.\d+))(?P<suffix>[eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$"
)
_SUFFIX: Mapping[str, Fraction] = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}

#: ``qos.supportedQoSComputeResources``: only these decide a pod's QoS class.
QOS_RESOURCES = ("cpu", "memory")
#: Resources that ``pods/resize`` may change (``ValidatePodResize``).
RESIZABLE_RESOURCES = frozenset(QOS_RESOURCES)


def parse_quantity(text: Any) -> Fraction:
    """``resource.ParseQuantity``: ``"250m"`` → 1/4, ``"1Gi"`` → 2**30, ``"1e3"`` → 1000; exact.

    Raises
    ------
    ValueError
        When the text is not a Kubernetes quantity.
    """
    if isinstance(text, bool):
        raise ValueError(f"quantities must match the regular expression, got {text!r}")
    if isinstance(text, int | float):
        return Fraction(text)
    m = _QUANTITY.match(str(text).strip())
    if not m:
        raise ValueError(
            "quantities must match the regular expression "
            f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', got {text!r}"
        )
    suffix = m["suffix"] or ""
    number = Fraction(m["num"])
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return number * Fraction(10) ** int(suffix[1:])
    return number * _SUFFIX[suffix]


def _containers(pod: Mapping[str, Any]) -> list[JsonDict]:
    spec = pod.get("spec") or {}
    return list(spec.get("containers") or []) + list(spec.get("initContainers") or [])


def compute_qos_class(pod: Mapping[str, Any]) -> str:
    """``qos.ComputePodQOS`` over cpu and memory: ``Guaranteed``, ``Burstable`` or ``BestEffort``.

    Guaranteed: every container limits cpu and memory and the summed requests equal the summed
    limits; BestEffort: no container requests or limits either; Burstable otherwise. Zero
    quantities count as absent.
    """
    requests: dict[str, Fraction] = {}
    limits: dict[str, Fraction] = {}
    guaranteed = True
    for container in _containers(pod):
        resources = container.get("resources") or {}
        for name, value in (resources.get("requests") or {}).items():
            if name in QOS_RESOURCES and parse_quantity(value) != 0:
                requests[name] = requests.get(name, Fraction(0)) + parse_quantity(value)
        found: set[str] = set()
        for name, value in (resources.get("limits") or {}).items():
            if name in QOS_RESOURCES and parse_quantity(value) != 0:
                found.add(name)
                limits[name] = limits.get(name, Fraction(0)) + parse_quantity(value)
        if not found.issuperset(QOS_RESOURCES):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and all(limits.get(n) == v for n, v in requests.items()) and len(requests) == len(limits):
        return "Guaranteed"
    return "Burstable"


def default_requests(container: JsonDict) -> None:
    """``SetDefaults_Container`` … requests default to limits for each limited resource."""
    resources = container.get("resources")
    if not isinstance(resources, dict) or not resources.get("limits"):
        return
    requests = resources.setdefault("requests", {})
    for name, value in resources["limits"].items():
        requests.setdefault(name, value)


def default_pod_spec(pod: JsonDict) -> JsonDict:
    """``SetDefaults_PodSpec`` (the part qosched can observe): scheduler, restart and DNS policy,
    grace period, requests from limits. Runs on every decode, so on updates as on creates."""
    spec = pod.setdefault("spec", {})
    spec.setdefault("containers", [])
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    for container in _containers(pod):
        default_requests(container)
    return pod


def default_pod(pod: JsonDict) -> JsonDict:
    """Fill what the apiserver sets on create: spec defaults, phase, QoS class, generation.

    Mutates and returns ``pod``. Existing values are kept (a snapshot's pods stay as recorded).
    """
    default_pod_spec(pod)
    status = pod.setdefault("status", {})
    status.setdefault("phase", "Pending")
    status.setdefault("qosClass", compute_qos_class(pod))
    pod.setdefault("metadata", {}).setdefault("generation", 1)
    return pod


def rfc3339(moment: datetime) -> str:
    """``metav1.Time`` wire form: seconds precision, UTC, ``Z``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def update_pod_condition(pod: JsonDict, ctype: str, status: str, now: datetime) -> None:
    """``podutil.UpdatePodCondition``: replace the condition of that type; the transition time
    moves only when ``status`` flips."""
    conditions: list[JsonDict] = pod.setdefault("status", {}).setdefault("conditions", [])
    new = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": rfc3339(now)}
    for i, old in enumerate(conditions):
        if old.get("type") == ctype:
            if old.get("status") == status and old.get("lastTransitionTime"):
                new["lastTransitionTime"] = old["lastTransitionTime"]
            conditions[i] = new
            return
    conditions.append(new)


# --------------------------------------------------------------------------- binding


def check_binding(url_name: str | None, url_namespace: str, binding: Any) -> tuple[str, str]:
    """The checks ``BindingREST.Create`` makes before touching the pod.

    Returns ``(pod name, target node)``. The legacy ``POST .../bindings`` passes ``url_name=None``
    and takes the name from the body (``LegacyBindingREST``).
    """
    if not isinstance(binding, dict) or binding.get("kind", "Binding") != "Binding":
        kind = binding.get("kind") if isinstance(binding, dict) else type(binding).__name__
        raise bad_request(f"not a Binding object: {kind}")
    meta = binding.get("metadata") or {}
    name = meta.get("name") or ""
    if url_name is not None and name != url_name:
        raise bad_request("name in URL does not match name in Binding object")
    if meta.get("namespace") and meta["namespace"] != url_namespace:
        raise bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    target = binding.get("target") or {}
    errors: list[FieldError] = []
    if target.get("kind") and target["kind"] != "Node":
        errors.append(FieldError("target.kind", "NotSupported", '"Node", "<empty>"', target["kind"]))
    if not target.get("name"):
        errors.append(FieldError("target.name", "Required"))
    if errors:
        # ValidatePodBinding's ErrorList.ToAggregate() is not an API status, so the handler's
        # ErrorToAPIStatus answers it as a 500 with reason "" — kept as upstream does.
        raise ApiError(failure(500, aggregate(errors), ""))
    return name, str(target["name"])


def bind(pod: JsonDict, binding: JsonDict, node: str, now: datetime) -> JsonDict:
    """``setPodNodeAndMetadata``'s update closure: the bound pod, or a 409 on ``pods/binding``.

    Preconditions (UID, resourceVersion) are checked by the store before this runs, as
    ``GuaranteedUpdate`` does.
    """
    name = pod["metadata"]["name"]
    if pod["metadata"].get("deletionTimestamp"):
        raise conflict(POD_BINDINGS, name, f"pod {name} is being deleted, cannot be assigned to a host")
    current = (pod.get("spec") or {}).get("nodeName") or ""
    if current:
        raise conflict(POD_BINDINGS, name, f'pod {name} is already assigned to node "{current}"')
    if (pod.get("spec") or {}).get("schedulingGates"):
        raise conflict(POD_BINDINGS, name, f"pod {name} has non-empty .spec.schedulingGates")
    out = copy.deepcopy(pod)
    out["spec"]["nodeName"] = node
    out.setdefault("status", {}).pop("nominatedNodeName", None)  # ClearingNominatedNodeNameAfterBinding
    meta = binding.get("metadata") or {}
    out["metadata"].setdefault("annotations", {}).update(meta.get("annotations") or {})
    if meta.get("labels"):  # PodTopologyLabelsAdmission copies the binding's labels
        out["metadata"].setdefault("labels", {}).update(meta["labels"])
    update_pod_condition(out, "PodScheduled", "True", now)
    return out


# --------------------------------------------------------------------------- updates and resize

_MUTABLE_SPEC_MSG = (
    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)


def check_pod_update(old: JsonDict, new: JsonDict) -> None:
    """``ValidatePodUpdate``'s spec rule for writes through the main resource (PUT/PATCH pods)."""
    old_spec = old.get("spec") or {}
    probe = copy.deepcopy(new.get("spec") or {})
    for field in ("containers", "initContainers"):
        olds = old_spec.get(field) or []
        news = probe.get(field) or []
        if len(olds) == len(news):
            for o, n in zip(olds, news, strict=True):
                if isinstance(n, dict) and "image" in o:
                    n["image"] = o["image"]
    for field in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
        if field in old_spec:
            probe[field] = old_spec[field]
        else:
            probe.pop(field, None)
    old_gates = old_spec.get("schedulingGates") or []
    new_gates = probe.pop("schedulingGates", None) or []
    if not all(g in old_gates for g in new_gates):
        raise invalid(
            "Pod",
            old["metadata"]["name"],
            [
                FieldError(
                    "spec.schedulingGates",
                    "Forbidden",
                    "only deletion is allowed, but found new scheduling gate",
                )
            ],
        )
    if old_gates:
        probe["schedulingGates"] = old_gates
    if probe != old_spec:
        raise invalid("Pod", old["metadata"]["name"], [FieldError("spec", "Forbidden", _MUTABLE_SPEC_MSG)])


def _resize_changes(old_res: JsonDict, new_res: JsonDict, path: str) -> list[FieldError]:
    """Only cpu/memory may change, and no cpu/memory limit may be removed."""
    errors = []
    for section in ("requests", "limits"):
        before = old_res.get(section) or {}
        after = new_res.get(section) or {}
        for rname in set(before) | set(after):
            if rname not in RESIZABLE_RESOURCES and before.get(rname) != after.get(rname):
                errors.append(
                    FieldError(
                        f"{path}.{section}[{rname}]", "Forbidden", "only cpu and memory resources are mutable"
                    )
                )
        if section == "limits":
            errors += [
                FieldError(f"{path}.limits[{rname}]", "Forbidden", "resource limits cannot be removed")
                for rname in before
                if rname in RESIZABLE_RESOURCES and rname not in after
            ]
    return errors


def _requests_within_limits(res: JsonDict, path: str) -> list[FieldError]:
    limits = res.get("limits") or {}
    return [
        FieldError(
            f"{path}.requests", "Invalid", f"must be less than or equal to {rname} limit of {lim}", req
        )
        for rname, req in (res.get("requests") or {}).items()
        if (lim := limits.get(rname)) is not None and parse_quantity(req) > parse_quantity(lim)
    ]


def resize(old: JsonDict, patched: JsonDict) -> JsonDict:
    """``pods/resize``: keep only container ``resources``/``resizePolicy`` changes, then validate.

    Returns the pod to store. Raises a 422 ``Invalid`` when containers were added, removed or
    renamed, a non-cpu/memory resource changed, a limit was removed, a request exceeds its limit,
    or the QoS class would change (``Pod QOS Class may not change as a result of resizing``).
    """
    name = old["metadata"]["name"]
    out = copy.deepcopy(old)
    errors: list[FieldError] = []
    for field in ("containers", "initContainers"):
        olds = (old.get("spec") or {}).get(field) or []
        news = (patched.get("spec") or {}).get(field) or []
        if [c.get("name") for c in olds] != [c.get("name") for c in news]:
            errors.append(
                FieldError(
                    f"spec.{field}",
                    "Forbidden",
                    "containers may not be added, removed, renamed or re-ordered by a resize",
                )
            )
            continue
        for i, (o, n) in enumerate(zip(olds, news, strict=True)):
            new_res = copy.deepcopy(n.get("resources") or {})
            default_requests({"resources": new_res})
            path = f"spec.{field}[{i}].resources"
            errors += _resize_changes(o.get("resources") or {}, new_res, path)
            errors += _requests_within_limits(new_res, path)
            target = out["spec"][field][i]
            target["resources"] = new_res
            if "resizePolicy" in n:
                target["resizePolicy"] = copy.deepcopy(n["resizePolicy"])
    if not errors:
        old_qos = (old.get("status") or {}).get("qosClass") or compute_qos_class(old)
        if compute_qos_class(out) != old_qos:
            errors.append(
                FieldError("spec", "Invalid", "Pod QOS Class may not change as a result of resizing", old_qos)
            )
    if errors:
        raise invalid("Pod", name, errors)
    if out.get("spec") != old.get("spec"):
        out["metadata"]["generation"] = int(old["metadata"].get("generation") or 1) + 1
    return out
