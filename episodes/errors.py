"""The one error type the suite raises for bad user input.

`episodes` is the bottom of the dependency chain (episodes -> backbones -> fewshot), so the
error lives here and the other packages import it from here.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input a user can fix: the message is one paragraph that names the fix.

    The CLI prints it without a traceback and exits with status 2.
    """


def fail(what: str, fix: str) -> UserError:
    """Build a `UserError` from what went wrong and how to fix it.

    Args:
        what: the problem, as a full sentence.
        fix: what the user should do about it, as a full sentence.
    """
    return UserError(f"{what.rstrip()} {fix.rstrip()}")
