"""Errors every stage shares: a full disk fails a stage with a message naming the stage and file."""

from __future__ import annotations

import errno
import functools
import os
import re

# What a full disk, a file-size limit or a quota looks like from Python and from the JVM.
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
DISK_FULL_TEXTS = ("No space left on device", "File too large", "Disk quota exceeded")


class StorageFullError(OSError):
    """A stage could not write its outputs: the disk (or quota, or file-size limit) is full."""


def disk_full_reason(exc: BaseException) -> tuple[str, str | None] | None:
    """``(reason, path)`` when ``exc`` or what caused it is a full-disk write error, else None.

    Looks through the exception chain: Python's ``OSError`` (ENOSPC, EFBIG, EDQUOT) and the
    JVM's messages inside a Spark error (``java.io.IOException: No space left on device``).
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return os.strerror(exc.errno), exc.filename
        text = str(exc)
        for reason in DISK_FULL_TEXTS:
            if reason in text:
                path = re.search(r"file:(/[^\s'\"]+)", text)  # Spark names the file it wrote
                return reason, path.group(1) if path else None
        exc = exc.__cause__ or exc.__context__
    return None


def fails_clearly_on_full_disk(stage: str):
    """Decorate a stage function so a full disk fails it with a :class:`StorageFullError`
    that names the stage and the file, instead of a Java stack trace or a bare OSError.

    Outputs are written aside and published whole (:func:`publish_dir`, :func:`write_json`),
    so a stage that fails this way leaves the last published outputs as they were.
    """

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            except StorageFullError:
                raise
            except Exception as exc:
                found = disk_full_reason(exc)
                if found is None:
                    raise
                reason, path = found
                root = getattr(args[1] if len(args) > 1 else None, "data_root", None)
                where = path or (f"its outputs under {root}" if root else "its outputs")
                raise StorageFullError(
                    f"{stage}: cannot write {where}: {reason}. Nothing new was "
                    "published (the previous outputs are intact); free space or raise the "
                    "quota, then rerun the task."
                ) from exc

        return wrapper

    return decorate
