"""The TPU a launcher command addresses: its accelerator type (generation and size, checked
against what gcloud offers), and the queued resource's name, project and zone, checked against
GCP's naming rules before any command runs."""

from __future__ import annotations

import dataclasses
import re


class CloudTpuError(ValueError):
    """Bad launcher input; the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class Generation:
    """One TPU generation: its gcloud accelerator-type prefix and what a size means."""

    prefix: str
    runtime_version: str  # cloud.google.com/tpu/docs/runtimes ("PyTorch and JAX")
    chips_per_host: int
    cores_per_chip: int  # the size in the type name counts TensorCores (v4, v5p) or chips
    sizes: str  # a description of the valid sizes, for the error message

    def chips(self, size: int) -> int:
        return size // self.cores_per_chip

    def hosts(self, size: int) -> int:
        return max(1, self.chips(size) // self.chips_per_host)


GENERATIONS = {
    "v4": Generation(
        "v4", "tpu-ubuntu2204-base", 4, 2, "8, 16, 32, ... (TensorCores; a multiple of 8)"
    ),
    "v5p": Generation(
        "v5p", "v2-alpha-tpuv5", 4, 2, "8, 16, 32, ... (TensorCores; a multiple of 8)"
    ),
    "v5litepod": Generation(
        "v5litepod", "v2-alpha-tpuv5-lite", 8, 1, "1, 4, 8, 16, 32, 64, 128, 256 (chips)"
    ),
    "v6e": Generation("v6e", "v2-alpha-tpuv6e", 8, 1, "1, 4, 8, 16, 32, 64, 128, 256 (chips)"),
}
ALIASES = {"v5e": "v5litepod"}  # gcloud calls v5e "v5litepod"
_LITE_SIZES = (1, 4, 8, 16, 32, 64, 128, 256)


def parse_accelerator(text: str) -> tuple[str, Generation, int]:
    """'v4-8' / 'v5e-8' / 'v5litepod-8' / 'v5p-64' -> (gcloud type, generation, size)."""
    match = re.fullmatch(r"([a-z0-9]+)-(\d+)", text or "")
    prefix = ALIASES.get(match.group(1), match.group(1)) if match else None
    if prefix not in GENERATIONS:
        known = ", ".join(sorted(GENERATIONS) + [f"{a} (= {p})" for a, p in ALIASES.items()])
        raise CloudTpuError(
            f"--accelerator={text!r} is not a known TPU type; use GENERATION-SIZE "
            f"with GENERATION one of {known}, e.g. v4-8, v5e-8, v5p-8 or v4-32"
        )
    gen, size = GENERATIONS[prefix], int(match.group(2))
    valid = size in _LITE_SIZES if gen.cores_per_chip == 1 else (size >= 8 and size % 8 == 0)
    if not valid:
        raise CloudTpuError(f"--accelerator={text!r}: {prefix} slices have sizes {gen.sizes}")
    return f"{prefix}-{size}", gen, size


@dataclasses.dataclass
class Target:
    name: str
    project: str
    zone: str
    accelerator: str
    generation: Generation
    size: int

    @property
    def hosts(self) -> int:
        return self.generation.hosts(self.size)

    def where(self) -> list[str]:
        return [f"--project={self.project}", f"--zone={self.zone}"]


# GCP's rules: resource names (RFC 1035 labels), project IDs, zones.
_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_PROJECT = re.compile(r"(?:[a-z][-a-z0-9.]*:)?[a-z][-a-z0-9]{4,28}[a-z0-9]")
_ZONE = re.compile(r"[a-z]+-[a-z]+[0-9]+-[a-z]")


def _check_names(args) -> None:
    """CloudTpuError unless --name, --project and --zone follow GCP's naming rules."""
    for flag, value, pattern, rule in (
        (
            "--name",
            args.name,
            _NAME,
            "1-63 lowercase letters, digits and hyphens, starting with a "
            "letter and not ending with a hyphen",
        ),
        (
            "--project",
            args.project,
            _PROJECT,
            "a project ID: 6-30 lowercase letters, digits and hyphens, starting with a letter",
        ),
        ("--zone", args.zone, _ZONE, "a zone such as us-central2-b"),
    ):
        if not pattern.fullmatch(value):
            raise CloudTpuError(f"{flag}={value!r} is not a valid GCP name: use {rule}")


def target_from_args(args) -> Target:
    """The Target of --name, --project, --zone and --accelerator; CloudTpuError for a missing
    or malformed one."""
    missing = [
        flag
        for flag, value in (
            ("--name", args.name),
            ("--project", args.project),
            ("--zone", args.zone),
        )
        if not value
    ]
    if missing:
        raise CloudTpuError(
            f"{' and '.join(missing)} missing: give the queued resource's name, the "
            "GCP project and a zone that offers the accelerator (e.g. --project=my-"
            "project --zone=us-central2-b for v4; gcloud compute tpus "
            "accelerator-types list --zone=ZONE lists a zone's types)"
        )
    _check_names(args)
    accelerator, gen, size = parse_accelerator(args.accelerator)
    return Target(args.name, args.project, args.zone, accelerator, gen, size)
