"""Platforms (`os/arch[/variant]`) and choosing one from a multi-platform index."""

from __future__ import annotations

import platform as _host
from dataclasses import dataclass

from ligoenv.oci.errors import InvalidReference

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}


@dataclass(frozen=True, order=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidReference(
                f"invalid platform {text!r}: expected OS/ARCH or OS/ARCH/VARIANT, e.g. linux/amd64"
            )
        arch = _ARCH_ALIASES.get(parts[1], parts[1])
        variant = parts[2] if len(parts) == 3 else None
        if arch == "arm64" and variant == "v8":
            variant = None  # arm64 and arm64/v8 name the same platform
        return cls(parts[0], arch, variant)

    @classmethod
    def host(cls) -> Platform:
        """The platform of the machine we run on (containers on macOS run linux)."""
        machine = _host.machine().lower()
        arch = _ARCH_ALIASES.get(machine, machine)
        variant = "v7" if machine == "armv7l" else None
        return cls("linux", arch, variant)

    def matches(self, other: Platform) -> bool:
        """True when `other` (from a manifest) satisfies this wanted platform."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        if self.variant is None:
            return True
        other_variant = other.variant
        if other.architecture == "arm64" and other_variant == "v8":
            other_variant = None
        return self.variant == other_variant

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


DEFAULT_PLATFORM = Platform("linux", "amd64")
