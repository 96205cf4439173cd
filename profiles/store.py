"""Profile sets (immutable lookups) and the hot-reloadable profile store.

A :class:`ProfileSet` maps ``(accelerator, model)`` to a :class:`~.schema.Profile`. It never
changes after construction: "changing" it returns a new set (copy-on-write), and its
:attr:`ProfileSet.version` is a content hash, so caches of predictions can key on it.

A :class:`ProfileStore` holds the *current* set behind one reference. Readers call
:meth:`ProfileStore.current` (a plain attribute read, no lock: rebinding a reference is atomic
in CPython) and keep the set they took for the whole request; writers build a new set under a
lock and swap the reference. A hot reload or an upload therefore never changes the profiles a
request already in flight is using.

Files: a directory of ``<accelerator>__<model>.json`` files is a profile set. Uploaded profiles
are written durably (temp file in the same directory, fsync, ``os.replace``, fsync of the
directory), so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any, Final

from .schema import (
    Profile,
    ProfileError,
    dump_profile_json,
    loads_profile,
    parse_profile,
    profile_to_json,
)

_log = logging.getLogger(__name__)

__all__ = [
    "ProfileSet",
    "ProfileStore",
    "UnknownProfileError",
    "bundled_profiles",
    "load_profile_dir",
    "merge",
    "write_profile_file",
]

ProfileKey = tuple[str, str]

_BUNDLED_PACKAGE: Final = "qosched.profiles"
_BUNDLED_DIR: Final = "bundled"
_SEPARATOR: Final = "__"


class UnknownProfileError(KeyError):
    """No profile for ``(accelerator, model)``; the message lists what is known.

    Attributes
    ----------
    accelerator, model : str
        The key that was asked for.
    known : tuple of str
        The models known for that accelerator, or the known accelerators when the accelerator
        itself is unknown.
    """

    def __init__(
        self, accelerator: str, model: str, known_models: Sequence[str], known_accelerators: Sequence[str]
    ):
        self.accelerator = accelerator
        self.model = model
        if known_models:
            self.known: tuple[str, ...] = tuple(known_models)
            message = (
                f"no profile for model {model!r} on accelerator {accelerator!r}; "
                f"models known for {accelerator!r}: {', '.join(self.known)}"
            )
        else:
            self.known = tuple(known_accelerators)
            message = (
                f"no profile for model {model!r} on accelerator {accelerator!r}: no profiles for that "
                f"accelerator; known accelerators: {', '.join(self.known) or '(none)'}"
            )
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # KeyError would repr() the message (quotes around it)
        return self.message


class ProfileSet(Mapping[ProfileKey, Profile]):
    """Immutable mapping ``(accelerator, model) -> Profile``.

    Parameters
    ----------
    profiles : iterable of Profile
        The profiles; two with the same key are an error (use :func:`merge` to override).
    """

    __slots__ = ("_by_accelerator", "_profiles", "_version")

    def __init__(self, profiles: Iterable[Profile] = ()) -> None:
        table: dict[ProfileKey, Profile] = {}
        for profile in profiles:
            if not isinstance(profile, Profile):
                raise TypeError(f"ProfileSet holds Profile objects, got {type(profile).__name__}")
            if profile.key in table:
                raise ProfileError(f"duplicate profile for {profile.key[0]}/{profile.key[1]}")
            table[profile.key] = profile
        self._profiles: dict[ProfileKey, Profile] = dict(sorted(table.items()))
        by_acc: dict[str, list[str]] = {}
        for acc, model in self._profiles:
            by_acc.setdefault(acc, []).append(model)
        self._by_accelerator: dict[str, tuple[str, ...]] = {a: tuple(m) for a, m in by_acc.items()}
        self._version: str | None = None

    # -- Mapping ---------------------------------------------------------------------------
    def __getitem__(self, key: ProfileKey) -> Profile:
        try:
            return self._profiles[key]
        except (KeyError, TypeError):
            if isinstance(key, tuple) and len(key) == 2:
                raise self._unknown(str(key[0]), str(key[1])) from None
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[ProfileKey]:
        return iter(self._profiles)

    def __len__(self) -> int:
        return len(self._profiles)

    def __contains__(self, key: object) -> bool:
        return key in self._profiles

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ProfileSet):
            return self._profiles == other._profiles
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.version)

    def __repr__(self) -> str:
        return f"ProfileSet({len(self)} profiles, version={self.version[:12]})"

    # -- lookups ---------------------------------------------------------------------------
    def get(self, accelerator: str, model: str) -> Profile:  # type: ignore[override]
        """Profile of ``model`` on ``accelerator``.

        Unlike ``Mapping.get`` this raises instead of returning a default: a missing profile
        must be explained (the node is filtered out *with that reason*).

        Raises
        ------
        UnknownProfileError
            Listing the models known for ``accelerator`` (or the known accelerators).
        """
        found = self._profiles.get((accelerator, model))
        if found is None:
            raise self._unknown(accelerator, model)
        return found

    def find(self, accelerator: str, model: str) -> Profile | None:
        """Profile of ``model`` on ``accelerator``, or None (no exception)."""
        return self._profiles.get((accelerator, model))

    def models_for(self, accelerator: str) -> tuple[str, ...]:
        """Models with a profile on ``accelerator``, sorted (empty when none)."""
        return self._by_accelerator.get(accelerator, ())

    def accelerators(self) -> tuple[str, ...]:
        """Accelerator keys with at least one profile, sorted."""
        return tuple(self._by_accelerator)

    def profiles(self) -> tuple[Profile, ...]:
        """All profiles, sorted by key."""
        return tuple(self._profiles.values())

    def _unknown(self, accelerator: str, model: str) -> UnknownProfileError:
        return UnknownProfileError(accelerator, model, self.models_for(accelerator), self.accelerators())

    # -- identity and copy-on-write ---------------------------------------------------------
    @property
    def version(self) -> str:
        """SHA-256 (hex) of the canonical JSON of every profile: equal content, equal version."""
        if self._version is None:
            digest = hashlib.sha256()
            for profile in self._profiles.values():
                digest.update(dump_profile_json(profile).encode("utf-8"))
                digest.update(b"\0")
            self._version = digest.hexdigest()
        return self._version

    def with_profile(self, profile: Profile) -> ProfileSet:
        """A new set with ``profile`` added or replacing the one with its key; self is unchanged."""
        table = dict(self._profiles)
        table[profile.key] = profile
        return ProfileSet(table.values())

    def without(self, accelerator: str, model: str) -> ProfileSet:
        """A new set without ``(accelerator, model)`` (unknown keys raise UnknownProfileError)."""
        self.get(accelerator, model)
        return ProfileSet(p for k, p in self._profiles.items() if k != (accelerator, model))

    def to_json(self) -> list[dict[str, Any]]:
        """Every profile as its canonical JSON object, sorted by key (for ``GET /profiles``)."""
        return [profile_to_json(p) for p in self._profiles.values()]


def merge(base: Mapping[ProfileKey, Profile], override: Mapping[ProfileKey, Profile]) -> ProfileSet:
    """Union of two sets; where both have a key, ``override``'s profile wins."""
    table = dict(base.items())
    table.update(override.items())
    return ProfileSet(table.values())


# --------------------------------------------------------------------------------------------
# Directories
# --------------------------------------------------------------------------------------------


def _split_filename(name: str) -> tuple[str, str] | None:
    if not name.endswith(".json"):
        return None
    stem = name[: -len(".json")]
    accelerator, sep, model = stem.partition(_SEPARATOR)
    if not sep or not accelerator or not model:
        return None
    return accelerator, model


def _profile_from_text(text: bytes | str, name: str, shown: str) -> Profile:
    """Parse one file's text and check that its name agrees with its content."""
    expected = _split_filename(name)
    if expected is None:
        raise ProfileError(f"{shown}: profile file names must be <accelerator>__<model>.json")
    profile = loads_profile(text, source=shown)
    if profile.key != expected:
        raise ProfileError(
            f"{shown}: file name says accelerator {expected[0]!r}, model {expected[1]!r} but the file "
            f"holds accelerator {profile.accelerator!r}, model {profile.model!r}; "
            f"rename it to {profile.filename}"
        )
    return profile


def _profile_files(entries: Iterable[Traversable]) -> list[Traversable]:
    """JSON files of a directory, sorted by name (hidden files, e.g. temp files, skipped)."""
    return sorted(
        (e for e in entries if e.is_file() and e.name.endswith(".json") and not e.name.startswith(".")),
        key=lambda e: e.name,
    )


def load_profile_dir(path: str | Path) -> ProfileSet:
    """Load every ``<accelerator>__<model>.json`` in a directory into a :class:`ProfileSet`.

    Raises
    ------
    ProfileError
        When the directory is missing, or a file is invalid, badly named, or its name disagrees
        with its content; the message starts with the file's path.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise ProfileError(f"{directory}: profile directory does not exist or is not a directory")
    profiles = []
    for entry in _profile_files(directory.iterdir()):
        file_path = directory / entry.name
        try:
            text = file_path.read_bytes()
        except OSError as exc:
            raise ProfileError(f"{file_path}: cannot read profile file: {exc.strerror or exc}") from None
        if _split_filename(entry.name) is None and _not_a_profile(text):
            _log.info("%s: skipped: not a profile (profiles are <accelerator>__<model>.json)", file_path)
            continue
        profiles.append(_profile_from_text(text, entry.name, str(file_path)))
    return ProfileSet(profiles)


def _not_a_profile(text: bytes) -> bool:
    """A JSON object that is not a profile: no ``model`` and ``service_time_ms`` (e.g. the
    ``report.json`` and ``colocation.json`` that ``qosched profile run --out DIR`` writes beside
    its profiles, so that a measured folder can be used as ``--profiles DIR`` as it is). Broken
    JSON or a misnamed profile is not skipped: the loader names the file."""
    try:
        doc = json.loads(text)
    except ValueError:
        return False
    return not (isinstance(doc, dict) and "model" in doc and "service_time_ms" in doc)


@functools.cache
def bundled_profiles() -> ProfileSet:
    """The profiles shipped with qosched (package data ``qosched.profiles/bundled/*.json``).

    Read once per process (the set is immutable, so sharing it is safe); after writing new files
    into the package's ``bundled/`` directory in the same process, call
    ``bundled_profiles.cache_clear()`` to read them.
    """
    root = resources.files(_BUNDLED_PACKAGE).joinpath(_BUNDLED_DIR)
    profiles = [
        _profile_from_text(entry.read_bytes(), entry.name, f"bundled profile {entry.name}")
        for entry in _profile_files(root.iterdir())
    ]
    return ProfileSet(profiles)


def write_profile_file(profile: Profile, directory: str | Path) -> Path:
    """Write ``profile`` to ``directory/<accelerator>__<model>.json`` durably and atomically.

    The text goes to a hidden temp file in the same directory (same file system, so the rename
    is atomic), is fsynced, renamed over the target with ``os.replace``, and the directory is
    fsynced so the rename itself survives a crash.

    Returns
    -------
    Path
        The profile file's path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / profile.filename
    data = dump_profile_json(profile).encode("utf-8")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{profile.filename}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(directory)
    return target


def _fsync_dir(directory: Path) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(dir_fd)


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


class ProfileStore:
    """Thread-safe holder of the current :class:`ProfileSet`, with hot reload and uploads.

    Parameters
    ----------
    initial : ProfileSet, optional
        Starting set; when omitted, :meth:`reload` builds it from ``directories``.
    directories : sequence of Path
        Profile directories, later ones overriding earlier ones (and the bundled set).
    include_bundled : bool
        Start :meth:`reload` from :func:`bundled_profiles` (default True).

    Notes
    -----
    Read path: :meth:`current` returns the reference without locking. Write paths
    (:meth:`replace`, :meth:`put`, :meth:`reload`) serialise on one lock, build a new set and
    rebind the reference; a reader keeps using the set it took.
    """

    def __init__(
        self,
        initial: ProfileSet | None = None,
        *,
        directories: Sequence[str | Path] = (),
        include_bundled: bool = True,
    ) -> None:
        self._directories: tuple[Path, ...] = tuple(Path(d) for d in directories)
        self._include_bundled = include_bundled
        self._lock = threading.Lock()
        self._current: ProfileSet = ProfileSet()
        if initial is not None:
            self._current = initial
        else:
            self.reload()

    @property
    def directories(self) -> tuple[Path, ...]:
        """The profile directories :meth:`reload` reads, in override order."""
        return self._directories

    def current(self) -> ProfileSet:
        """The current set. Keep the returned object for a whole request: it never changes."""
        return self._current

    def replace(self, new_set: ProfileSet) -> ProfileSet:
        """Make ``new_set`` current; returns the set it replaced."""
        if not isinstance(new_set, ProfileSet):
            raise TypeError(f"expected a ProfileSet, got {type(new_set).__name__}")
        with self._lock:
            old, self._current = self._current, new_set
        return old

    def put(self, profile: Profile | Mapping[str, Any], persist_dir: str | Path | None = None) -> ProfileSet:
        """Validate ``profile``, optionally write it durably, then swap it into the current set.

        Parameters
        ----------
        profile : Profile or Mapping
            A profile or its decoded JSON (e.g. an uploaded body).
        persist_dir : Path, optional
            Directory to write ``<accelerator>__<model>.json`` into; pass one of
            :attr:`directories` for the profile to survive :meth:`reload`.

        Returns
        -------
        ProfileSet
            The new current set.

        Raises
        ------
        ProfileError
            When the profile is invalid; nothing is written and the current set is unchanged.
        """
        # Round-trip through the schema so a Profile built in code meets the file rules too.
        document = profile_to_json(profile) if isinstance(profile, Profile) else profile
        checked = parse_profile(document)
        with self._lock:
            if persist_dir is not None:
                write_profile_file(checked, persist_dir)
            new_set = self._current.with_profile(checked)
            self._current = new_set
        return new_set

    def reload(self) -> ProfileSet:
        """Rebuild the set from the bundled profiles and :attr:`directories`, then swap it in.

        On any error the current set stays as it was and the error propagates.
        """
        with self._lock:
            new_set = bundled_profiles() if self._include_bundled else ProfileSet()
            for directory in self._directories:
                new_set = merge(new_set, load_profile_dir(directory))
            self._current = new_set
        return new_set

    def __repr__(self) -> str:
        return f"ProfileStore({self._current!r}, directories={[str(d) for d in self._directories]})"
