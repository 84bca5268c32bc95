"""A delivery's checksums verified, each of its files read once, and ASC MHL generations written for results."""

from .hashing import ALWAYS, Digest, copy_hashing, hash_file
from .verify import InputFile, Mode, Plan, Verification, check, plan

__all__ = [
    "ALWAYS",
    "Digest",
    "InputFile",
    "Mode",
    "Plan",
    "Verification",
    "check",
    "copy_hashing",
    "hash_file",
    "plan",
]
