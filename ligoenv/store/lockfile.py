"""The lockfile (`ligoenv.lock`): named environments pinned by digest, read and written deterministically.

Reading checks the structure by hand (fast, no jsonschema); `strict=True` also validates
against schemas/lockfile.schema.json, as `ligoenv verify` and every write do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ligoenv.oci.atomicfile import write_atomic
from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import InvalidReference, NotFound, PlatformNotFound, UsageError
from ligoenv.oci.platform import Platform
from ligoenv.oci.reference import Reference
from ligoenv.oci.version import __version__
from ligoenv.store.errors import LockfileError
from ligoenv.store.jsonfields import JsonFields
from ligoenv.store.times import format_time

LOCKFILE_VERSION = 1
TOOL = f"ligoenv {__version__}"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass(frozen=True)
class PlatformPin:
    manifest: Digest
    config: Digest | None = None


@dataclass(frozen=True)
class Environment:
    """One pinned image. `reference` is what the user wrote; the rest is what it meant then."""

    reference: str
    registry: str
    repository: str
    tag: str | None
    digest: Digest
    media_type: str
    platforms: Mapping[str, PlatformPin]
    resolved: datetime
    source: str  # "registry" | "index:<location>"
    paths: tuple[str, ...] = ()

    @property
    def canonical(self) -> str:
        return str(self.pinned())

    def pinned(self) -> Reference:
        return Reference(self.registry, self.repository, self.tag, self.digest, self.reference)

    def matches(self, ref: Reference) -> bool:
        """True when `ref` names this environment's image (and its digest, if pinned)."""
        if (ref.registry, ref.repository) != (self.registry, self.repository):
            return False
        if ref.digest is not None:
            return ref.digest == self.digest
        return ref.tag == self.tag

    def platform_pin(self, wanted: Platform) -> tuple[str, PlatformPin]:
        """The locked manifest for `wanted`; PlatformNotFound lists the locked platforms."""
        for key, pin in sorted(self.platforms.items()):
            if wanted.matches(Platform.parse(key)):
                return key, pin
        raise PlatformNotFound(
            f"{self.canonical} is locked for {', '.join(sorted(self.platforms)) or 'no platform'}, "
            f"not {wanted}: re-lock with `ligoenv lock --platform {wanted} ...`"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference, "canonical": self.canonical, "registry": self.registry,
            "repository": self.repository, "tag": self.tag, "digest": str(self.digest),
            "mediaType": self.media_type,
            "platforms": {key: {"manifest": str(pin.manifest),
                                "config": str(pin.config) if pin.config else None}
                          for key, pin in self.platforms.items()},
            "paths": list(self.paths), "resolved": format_time(self.resolved, whole_seconds=True),
            "source": self.source,
        }


@dataclass(frozen=True)
class Lockfile:
    environments: Mapping[str, Environment]
    created: datetime
    tool: str = TOOL
    path: Path | None = field(default=None, compare=False)

    def find(self, text: str) -> tuple[str, Environment] | None:
        """The environment named `text`, or whose image `text` names (reference as written counts)."""
        if text in self.environments:
            return text, self.environments[text]
        for name, env in sorted(self.environments.items()):
            if env.reference == text:
                return name, env
        try:
            ref = Reference.parse(text)
        except InvalidReference:
            return None
        for name, env in sorted(self.environments.items()):
            if env.matches(ref):
                return name, env
        return None

    def environment(self, name: str) -> Environment:
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments)) or "none"
            raise NotFound(f"no environment {name!r} in {self.where}; environments: {known}") from None

    @property
    def where(self) -> str:
        return f"lockfile {self.path}" if self.path else "the lockfile"

    def to_json(self) -> dict[str, Any]:
        return {"lockfileVersion": LOCKFILE_VERSION, "created": format_time(self.created, whole_seconds=True),
                "tool": self.tool,
                "environments": {name: env.to_json() for name, env in self.environments.items()}}

    def dumps(self) -> str:
        """Stable text: sorted keys, indent 2, trailing newline, so git diffs stay small."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def read_lockfile(path: Path, *, strict: bool = False) -> Lockfile:
    """Load `path`; LockfileError (one line, naming the field) when unreadable, corrupt or invalid."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"lockfile {path} does not exist: create it with `ligoenv lock REF...`") from None
    except OSError as error:
        raise LockfileError(f"cannot read lockfile {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise LockfileError(f"lockfile {path} is not UTF-8 text: is it a lockfile?") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise LockfileError(
            f"lockfile {path} is not valid JSON (line {error.lineno}, column {error.colno}: "
            f"{error.msg}); restore it from version control or re-create it with `ligoenv lock`"
        ) from None
    if strict:
        from ligoenv.store.schemas import validate

        validate(data, "lockfile", LockfileError, f"lockfile {path} is invalid")
    return replace(parse_lockfile(data, str(path)), path=path)


def parse_lockfile(data: Any, where: str = "lockfile") -> Lockfile:
    """Build a Lockfile from decoded JSON, checking every field it uses."""
    fields = JsonFields(f"lockfile {where} is invalid", LockfileError)
    version = fields.get(data, "lockfileVersion", int)
    if version != LOCKFILE_VERSION:
        raise LockfileError(
            f"lockfile {where} has lockfileVersion {version}; this ligoenv reads version "
            f"{LOCKFILE_VERSION}: upgrade ligoenv"
        )
    environments = fields.get(data, "environments", dict)
    parsed = {}
    for name, entry in environments.items():
        if not _NAME.fullmatch(name):
            raise fields.fail(f"environments.{name}", "environment names are letters, digits and ._:-")
        parsed[name] = _parse_environment(fields, entry, f"environments.{name}.")
    return Lockfile(parsed, fields.time(fields.get(data, "created", str), "created"),
                    fields.get(data, "tool", str))


def _parse_environment(fields: JsonFields, entry: Any, where: str) -> Environment:
    def text(key: str) -> str:
        value: str = fields.get(entry, key, str, where)
        return value

    platforms = {}
    for key, pin in fields.get(entry, "platforms", dict, where).items():
        fields.parsed(Platform.parse, key, f"{where}platforms")
        pin_where = f"{where}platforms.{key}."
        config = fields.optional(pin, "config", str, pin_where)
        platforms[key] = PlatformPin(
            fields.digest(fields.get(pin, "manifest", str, pin_where), f"{pin_where}manifest"),
            fields.digest(config, f"{pin_where}config") if config else None)
    paths = fields.get(entry, "paths", list, where)
    if not all(isinstance(p, str) for p in paths):
        raise fields.fail(f"{where}paths", "expected an array of strings")
    env = Environment(
        reference=text("reference"), registry=text("registry"), repository=text("repository"),
        tag=fields.optional(entry, "tag", str, where),
        digest=fields.digest(text("digest"), f"{where}digest"), media_type=text("mediaType"),
        platforms=platforms, resolved=fields.time(text("resolved"), f"{where}resolved"),
        source=text("source"), paths=tuple(paths),
    )
    _check_names(fields, env, where)
    _check_reference(fields, env, where)
    if text("canonical") != env.canonical:
        raise fields.fail(f"{where}canonical",
                          f"does not match registry/repository/tag/digest ({env.canonical})")
    return env


def _check_names(fields: JsonFields, env: Environment, where: str) -> None:
    """registry, repository and tag must each be what Reference.parse makes of them.

    They are printed (`resolve`), run and turned into paths, so a hand-edited `..` or an alias
    such as `index.docker.io` must not get through; checked with the parser's own rules, each
    against a fixed counterpart, so that the message names the bad field.
    """
    probes = [("registry", f"{env.registry}/x"), ("repository", f"localhost/{env.repository}")]
    if env.tag is not None:
        probes.append(("tag", f"localhost/x:{env.tag}"))
    for name, probe in probes:
        value = getattr(env, name)
        try:
            ok = getattr(Reference.parse(probe), name) == value
        except InvalidReference:
            ok = False
        if not ok:
            raise fields.fail(f"{where}{name}", f"{value!r} is not a valid {name} name")


def _check_reference(fields: JsonFields, env: Environment, where: str) -> None:
    """The reference as written must mean exactly the registry, repository, tag (and digest, if
    it has one) that the environment pins: what a paper cites must be what runs."""
    ref = fields.parsed(Reference.parse, env.reference, f"{where}reference")
    if (ref.registry, ref.repository, ref.tag) != (env.registry, env.repository, env.tag) or \
            ref.digest not in (None, env.digest):
        pinned = Reference(env.registry, env.repository, env.tag, ref.digest and env.digest)
        raise fields.fail(f"{where}reference", f"{env.reference!r} names {ref}, but the environment "
                          f"pins {pinned}: re-lock it with `ligoenv lock`")


def write_lockfile(path: Path, lockfile: Lockfile) -> None:
    """Validate, then replace `path` atomically (temp file in the same directory, fsync, rename)."""
    from ligoenv.store.schemas import validate

    text = lockfile.dumps()
    validate(json.loads(text), "lockfile", LockfileError, "refusing to write an invalid lockfile")
    try:
        write_atomic(path, text)
    except OSError as error:
        raise LockfileError(f"cannot write lockfile {path}: {error.strerror}") from None


def keep_unchanged(old: Lockfile | None, new: Lockfile) -> Lockfile:
    """Keep each environment's `resolved` when nothing it pins has changed, and `created` when
    the set of environments and their digests are unchanged.

    Re-locking the same inputs then writes identical bytes, so version control sees no diff.
    """
    if old is None:
        return new
    environments = {}
    for name, env in new.environments.items():
        before = old.environments.get(name)
        same = before is not None and replace(before, resolved=env.resolved) == env
        environments[name] = replace(env, resolved=before.resolved) if same and before else env
    if _digests(old) == _digests(new):
        return replace(new, environments=environments, created=old.created)
    return replace(new, environments=environments)


def _digests(lockfile: Lockfile) -> dict[str, Digest]:
    return {name: env.digest for name, env in lockfile.environments.items()}


def default_name(ref: Reference, taken: Iterable[str]) -> str:
    """The repository's last path component; with the tag (or digest) appended when that clashes."""
    taken = set(taken)
    base = ref.repository.rsplit("/", 1)[-1]
    candidates = [base]
    if ref.tag:
        candidates.append(f"{base}-{ref.tag}")
    if ref.digest:
        candidates.append(f"{base}-{ref.digest.hex[:12]}")
    for candidate in candidates:
        if candidate not in taken:
            return candidate
    number = 2
    while f"{candidates[-1]}-{number}" in taken:
        number += 1
    return f"{candidates[-1]}-{number}"


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"invalid environment name {name!r}: use letters, digits, '.', '_', ':' and '-' "
            "(at most 128, starting with a letter or digit)"
        )
    return name


def assign_names(existing: Lockfile | None,
                 requests: Iterable[tuple[str | None, str]]) -> list[tuple[str, str]]:
    """(name, reference) for each (name or None, reference) asked to be locked.

    A reference locked before under some name keeps that name, so re-locking updates in place.
    """
    before = existing.environments if existing else {}
    by_reference = {env.reference: name for name, env in sorted(before.items())}
    taken = set(before)
    result: list[tuple[str, str]] = []
    for name, text in requests:
        if name is None:
            ref = Reference.parse(text)
            name = by_reference.get(text) or default_name(ref, taken | {n for n, _ in result})
        check_name(name)
        if any(name == other for other, _ in result):
            raise UsageError(f"environment name {name!r} is given twice: use --name NAME=REF")
        result.append((name, text))
    return result


def merged(existing: Lockfile | None, pinned: Mapping[str, Environment], now: datetime) -> Lockfile:
    """`existing` with `pinned` added or replaced; unchanged pins keep their times."""
    environments = dict(existing.environments) if existing else {}
    environments.update(pinned)
    fresh = Lockfile(dict(sorted(environments.items())), created=now)
    return keep_unchanged(existing, fresh)
