"""RBAC authorisation for the fake apiserver, evaluated from Role/ClusterRole/binding manifests.

Why: the extender's permissions live in ``manifests/rbac.yaml``; running the extender's API calls
against the fake with those rules enforced proves the manifest grants what the code does (a
missing verb fails the test with the same 403 a cluster would give), and that calls it must not
make are refused.

Semantics follow ``plugin/pkg/auth/authorizer/rbac`` (``RuleAllows``): a request is allowed when a
rule of a role bound to the user matches its API group, resource (``pods`` or ``pods/binding``
for a subresource), verb and — when the rule lists ``resourceNames`` — the object name. Create
requests carry no name, so ``resourceNames`` rules never allow them; list/watch carry the name
from a ``fieldSelector=metadata.name=<n>``. A ClusterRoleBinding grants everywhere, a RoleBinding
only in its own namespace. Roles that are bound but not among the given objects (the built-in
``system:kube-scheduler``...) grant nothing here.

A denial is the apiserver's 403 (``responsewriters.Forbidden`` + ``errors.NewForbidden``)::

    pods "p" is forbidden: User "system:serviceaccount:ns:sa" cannot delete resource "pods"
    in API group "" in the namespace "default"
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .status import ApiError, GroupResource, failure


@dataclass(frozen=True, slots=True)
class PolicyRule:
    api_groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    resource_names: frozenset[str]

    @classmethod
    def from_json(cls, rule: Mapping[str, Any]) -> PolicyRule:
        return cls(
            frozenset(rule.get("apiGroups") or ()),
            frozenset(rule.get("resources") or ()),
            frozenset(rule.get("verbs") or ()),
            frozenset(rule.get("resourceNames") or ()),
        )

    def allows(self, group: str, resource: str, verb: str, name: str) -> bool:
        """``rbac.RuleAllows`` for a resource request (``resource`` may be ``main/sub``)."""
        if not ({"*", group} & self.api_groups and {"*", verb} & self.verbs):
            return False
        sub = resource.split("/", 1)[1] if "/" in resource else ""
        if not ({"*", resource} & self.resources or (sub and f"*/{sub}" in self.resources)):
            return False
        return not self.resource_names or name in self.resource_names


@dataclass(frozen=True, slots=True)
class RequestAttributes:
    """``authorizer.Attributes`` of one resource request."""

    verb: str
    group: str
    version: str
    resource: str  # with "/subresource" when there is one
    namespace: str | None
    name: str

    def forbidden(self, user: str) -> ApiError:
        where = f'in the namespace "{self.namespace}"' if self.namespace else "at the cluster scope"
        reason = (
            f'User "{user}" cannot {self.verb} resource "{self.resource}" in API group "{self.group}" {where}'
        )
        main = self.resource.split("/", 1)[0]
        gr = GroupResource(self.group, main)
        message = (
            f'{gr} "{self.name}" is forbidden: {reason}' if self.name else f"{gr} is forbidden: {reason}"
        )
        return ApiError(failure(403, message, "Forbidden", gr.details(self.name)))


def _subject_matches(subject: Mapping[str, Any], user: str, binding_ns: str | None) -> bool:
    kind = subject.get("kind")
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_ns or ""
        return user == f"system:serviceaccount:{ns}:{subject.get('name')}"
    if kind == "User":
        return user == subject.get("name")
    if kind == "Group":
        if subject.get("name") == "system:serviceaccounts":
            return user.startswith("system:serviceaccount:")
        if str(subject.get("name", "")).startswith("system:serviceaccounts:"):
            return user.startswith(f"system:serviceaccount:{str(subject['name']).split(':', 2)[2]}:")
    return False


class RbacAuthorizer:
    """Authorise every request of one user against RBAC objects (dicts in API form).

    Parameters
    ----------
    objects
        Any mix of documents; Role, ClusterRole, RoleBinding and ClusterRoleBinding are used.
    user
        The requesting identity, e.g. ``system:serviceaccount:qosched-system:qosched``.
    """

    def __init__(self, objects: Iterable[Mapping[str, Any]], user: str) -> None:
        self.user = user
        roles: dict[tuple[str, str], list[PolicyRule]] = {}
        cluster_roles: dict[str, list[PolicyRule]] = {}
        bindings: list[Mapping[str, Any]] = []
        for obj in objects:
            kind = obj.get("kind")
            meta = obj.get("metadata") or {}
            rules = [PolicyRule.from_json(r) for r in obj.get("rules") or ()]
            if kind == "Role":
                roles[(meta.get("namespace", ""), meta["name"])] = rules
            elif kind == "ClusterRole":
                cluster_roles[meta["name"]] = rules
            elif kind in ("RoleBinding", "ClusterRoleBinding"):
                bindings.append(obj)
        #: (namespace or None for cluster-wide, rules)
        self.grants: list[tuple[str | None, list[PolicyRule]]] = []
        for binding in bindings:
            ns = (binding.get("metadata") or {}).get("namespace")
            if not any(_subject_matches(s, user, ns) for s in binding.get("subjects") or ()):
                continue
            ref = binding.get("roleRef") or {}
            if ref.get("kind") == "ClusterRole":
                rules = cluster_roles.get(ref.get("name", ""), [])
            else:
                rules = roles.get((ns or "", ref.get("name", "")), [])
            scope = None if binding.get("kind") == "ClusterRoleBinding" else ns
            self.grants.append((scope, rules))

    def allowed(self, attrs: RequestAttributes) -> bool:
        for scope, rules in self.grants:
            if scope is not None and scope != attrs.namespace:
                continue
            if any(r.allows(attrs.group, attrs.resource, attrs.verb, attrs.name) for r in rules):
                return True
        return False

    def check(self, attrs: RequestAttributes) -> None:
        """Raise the apiserver's 403 unless ``attrs`` is allowed."""
        if not self.allowed(attrs):
            raise attrs.forbidden(self.user)
