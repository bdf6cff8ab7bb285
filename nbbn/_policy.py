"""NaN policies: the names users pass and the integer codes the kernels take.

Kept free of numba, so that the public modules can name them without compiling or
importing anything (``import nbbn`` stays light).
"""

from __future__ import annotations

NAN_POLICIES = ("propagate", "omit", "raise")

POLICY_PROPAGATE = 0
"""A NaN counts as a value and makes its channel's mean, variance, min and max NaN
("raise" computes with this code, then refuses a batch that holds a NaN or an inf)."""

POLICY_OMIT = 1
"""NaNs are skipped per channel (counts may then differ between channels)."""


def check_policy(nan_policy: str) -> str:
    """Return ``nan_policy`` if it is one of :data:`NAN_POLICIES`; TypeError for a
    non-str, ValueError for another str."""
    if not isinstance(nan_policy, str):
        raise TypeError(f"nan_policy must be a str, one of {NAN_POLICIES}, got "
                        f"{type(nan_policy).__name__}")
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    return nan_policy


def policy_code(nan_policy: str) -> int:
    """The kernels' code for a (checked) policy name."""
    return POLICY_OMIT if nan_policy == "omit" else POLICY_PROPAGATE
