"""What this CPU can do for int8 inference: is CTranslate2's int8 accurate here?

CTranslate2 runs its int8 matrix products in Intel MKL on Intel CPUs and in oneDNN
elsewhere (``CT2_USE_MKL`` overrides the choice). Both multiply unsigned 8-bit
activations by signed 8-bit weights. With VNNI instructions (``avx512_vnni``, or
``avx_vnni`` on AVX2 CPUs) the products are summed in 32 bits; without them
(AVX2, or AVX-512 without VNNI) pairs of products are summed into 16 bits first and
saturate, so int8 decoding drifts from fp32. Measured with ``scripts/bench_int8.py``
on a 2-core AMD EPYC (AVX-512 VNNI), 64 test chunks per model: mean |delta log p| per
token with VNNI / with ``ONEDNN_MAX_CPU_ISA=AVX2`` (or ``AVX512_CORE``): 0.046 / 0.68
(random tiny model, large weights), 0.0062 / 0.075 (calmer random), 0.0037 / 0.049 (a
briefly trained tiny model); greedy outputs equal to fp32's: 89% / 61%, 92% / 61%,
98.4% / 98.4% (see the README's Performance section).

So ``--backend auto`` uses int8 only where the library that will run it may use VNNI:
the CPU has the instructions and no environment limit (``ONEDNN_MAX_CPU_ISA``,
``MKL_ENABLE_INSTRUCTIONS``) takes them away. ``CT2_FORCE_CPU_ISA`` limits
CTranslate2's own kernels only and does not change int8 accuracy (measured: same
numbers as without it). MKL (forced with ``CT2_USE_MKL=1`` on the AMD CPU) kept the VNNI
accuracy even under ``MKL_ENABLE_INSTRUCTIONS=AVX2``; with no Intel AVX2-only CPU to
measure, the MKL rule stays the conservative one (no VNNI: float32), unless the model's own
``int8_check`` measured its int8 within 0.3 BLEU of float32 there
(:func:`restore.backend_choice.default_compute_type`).

>>> s = int8_support(flags={"avx2", "avx512f", "avx512_vnni"}, vendor="AuthenticAMD", env={})
>>> s.accurate, s.library, s.reason
(True, 'oneDNN', 'AVX-512 VNNI available to oneDNN')
>>> int8_support(flags={"avx2", "avx512f", "avx512_vnni"}, vendor="AuthenticAMD", env={"ONEDNN_MAX_CPU_ISA": "AVX2"}).reason
'ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN from VNNI'
>>> int8_support(flags={"avx2"}, vendor="GenuineIntel", env={}).reason
'no VNNI on this CPU (AVX2 only): int8 products saturate'
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from typing import Mapping

# Instruction-set limits that leave VNNI out (values as the libraries spell them, upper case).
ONEDNN_NO_VNNI = frozenset({"SSE41", "AVX", "AVX2", "AVX512_CORE", "AVX512_MIC", "AVX512_MIC_4OPS"})
MKL_NO_VNNI = frozenset({"SSE4_2", "AVX", "AVX2", "AVX512", "AVX512_MIC", "AVX512_MIC_E1"})
VNNI_FLAGS = {"avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI"}


@dataclass(frozen=True)
class Int8Support:
    """Whether int8 products are accurate here, which library runs them, and why."""

    accurate: bool
    library: str  # "MKL", "oneDNN" or "" (not an x86 CPU)
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def cpu_flags() -> tuple[set[str], str]:
    """The CPU's feature flags and vendor id, from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return set(), ""
    flags: set[str] = set()
    vendor = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags" and not flags:
            flags = set(value.split())
        elif key == "vendor_id" and not vendor:
            vendor = value.strip()
    return flags, vendor


def int8_support(flags: set[str] | None = None, vendor: str | None = None, env: Mapping[str, str] | None = None) -> Int8Support:
    """Whether CTranslate2's int8 is accurate on this CPU (arguments default to this machine's).

    >>> int8_support(flags={"avx2", "avx_vnni"}, vendor="GenuineIntel", env={"MKL_ENABLE_INSTRUCTIONS": "AVX2"}).accurate
    False
    >>> int8_support(flags={"avx2", "avx_vnni"}, vendor="GenuineIntel", env={"MKL_ENABLE_INSTRUCTIONS": "AVX2_E1"}).accurate
    True
    >>> int8_support(flags=set(), vendor="", env={}).reason
    'int8 accuracy not measured on this CPU (no x86 VNNI flags found)'
    """
    if flags is None or vendor is None:
        found_flags, found_vendor = cpu_flags()
        flags = found_flags if flags is None else flags
        vendor = found_vendor if vendor is None else vendor
    env = os.environ if env is None else env
    if "avx2" not in flags:
        return Int8Support(False, "", "int8 accuracy not measured on this CPU (no x86 VNNI flags found)")
    use_mkl = env.get("CT2_USE_MKL", "").strip().lower()
    library = "MKL" if (use_mkl in ("1", "true", "on") or (not use_mkl and vendor == "GenuineIntel")) else "oneDNN"
    have = [name for flag, name in VNNI_FLAGS.items() if flag in flags]
    if not have:
        level = "AVX-512 without VNNI" if "avx512f" in flags else "AVX2 only"
        return Int8Support(False, library, f"no VNNI on this CPU ({level}): int8 products saturate")
    variable, no_vnni = ("MKL_ENABLE_INSTRUCTIONS", MKL_NO_VNNI) if library == "MKL" else ("ONEDNN_MAX_CPU_ISA", ONEDNN_NO_VNNI)
    limit = env.get(variable, "").strip().upper()
    if limit in no_vnni:
        return Int8Support(False, library, f"{variable}={limit} keeps {library} from VNNI")
    return Int8Support(True, library, f"{have[0]} available to {library}")


def cpu_description() -> str:
    """A short description of this CPU for benchmark reports, e.g. ``AuthenticAMD x86_64, 2 cores, AVX-512 VNNI``."""
    flags, vendor = cpu_flags()
    if "avx512_vnni" in flags:
        level = "AVX-512 VNNI"
    elif "avx_vnni" in flags:
        level = "AVX2 + AVX-VNNI"
    elif "avx512f" in flags:
        level = "AVX-512 (no VNNI)"
    elif "avx2" in flags:
        level = "AVX2 (no VNNI)"
    else:
        level = "no AVX2"
    from restore.device import available_cpus

    limits = [f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "CT2_FORCE_CPU_ISA") if os.environ.get(k)]
    return f"{vendor or platform.processor() or 'unknown'} {platform.machine()}, {available_cpus()} cores, {level}" + (
        f" (limited: {', '.join(limits)})" if limits else ""
    )


def cpu_line() -> str:
    """This CPU in one line: its model name, family and model (where ``/proc/cpuinfo`` says), then
    :func:`cpu_description`, e.g. ``Intel(R) Xeon(R) Processor (family 6, model 207); GenuineIntel
    x86_64, 2 cores, AVX-512 VNNI``."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        name = f"{fields.get('model name', '')} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')}); "
    except OSError:
        pass
    return name + cpu_description()


def machine_line() -> str:
    """The machine a benchmark figure was measured on, one line for its report: :func:`cpu_line`,
    the load average (other jobs on the same cores slow a run) and the versions of Python and the
    libraries that compute.
    """
    import sys
    from importlib import metadata

    load = f"load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "load average unknown"
    versions = []
    for package in ("torch", "transformers", "ctranslate2"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    return f"machine: {cpu_line()}; {load}; Python {sys.version.split()[0]}, {', '.join(versions)}"
