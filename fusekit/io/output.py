"""Atomic output folders.

Everything fusekit writes goes into a hidden temporary sibling of the output
(``.OUT.tmp-<pid>-<random>``) and is renamed into place only when complete, so a
crash, Ctrl-C or ``kill -9`` never leaves a half-written model where a user (or a
later ``from_pretrained``) would take it for a real one.  A rename within one
directory is atomic on POSIX filesystems; the directory is fsynced after it so the
rename itself survives a power cut.

Guards: an existing output is refused unless ``overwrite``; an output equal to,
inside, or containing an input folder is always refused (inputs are never written
to).  With ``overwrite``, the old folder is moved aside only after the new one is
complete, then deleted.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from fusekit.errors import OutputExistsError


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def check_output(out: Path, *, overwrite: bool = False, inputs: Sequence[Path] = ()) -> None:
    """Raise ``OutputExistsError`` if writing ``out`` is not allowed; writes nothing."""
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputExistsError(
                    f"output {out}: {parent} is a file, not a folder; choose another -o"
                )
            break
    real_out = _real(out)
    for given in inputs:
        real_in = _real(Path(given))
        if real_out == real_in:
            raise OutputExistsError(f"output {out} is the input folder {given}; choose another -o")
        if real_in in real_out.parents:
            raise OutputExistsError(
                f"output {out} is inside the input folder {given}; choose a folder outside it"
            )
        if real_out in real_in.parents:
            raise OutputExistsError(
                f"output {out} contains the input folder {given}; replacing it would delete "
                "an input, choose another -o"
            )
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise OutputExistsError(f"output {out} exists and is not a folder; remove it first")
        if not overwrite:
            raise OutputExistsError(
                f"output folder {out} already exists; use --overwrite to replace it"
            )


def _fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finish_tree(root: Path, mode: int) -> None:
    """Make every file under ``root`` readable as the umask allows, then fsync it all.

    safetensors' ``save_file`` creates its files 0600, so a model saved for a team
    would be unreadable to the team; an output folder's files follow the umask.
    fsync runs on every file and folder (writers that already did are cheap).
    """
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path.stat().st_mode & 0o777 == 0o600 and mode != 0o600:
                os.chmod(path, mode)
            _fsync_path(path)
        _fsync_path(Path(dirpath))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(parent: Path, name: str) -> None:
    """Delete temporary folders for ``name`` left by fusekit processes that died."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.(tmp|old)-(\d+)-")
    for entry in parent.iterdir():
        m = pattern.match(entry.name)
        if (
            m
            and entry.is_dir()
            and int(m.group(2)) != os.getpid()
            and not _pid_alive(int(m.group(2)))
        ):
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def atomic_output(
    out: str | Path, *, overwrite: bool = False, inputs: Sequence[str | Path] = ()
) -> Iterator[Path]:
    """Yield a temporary folder; on success it becomes ``out``, on error it disappears."""
    out = Path(out).expanduser().absolute()
    check_output(out, overwrite=overwrite, inputs=[Path(p) for p in inputs])
    parent = out.parent
    made = [p for p in out.parents if not p.exists()]  # nearest first: removed on failure
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(parent, out.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=parent))
    # mkdtemp makes the folder 0700; the output is an ordinary folder, so follow the umask
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        yield tmp
        _finish_tree(tmp, 0o666 & ~umask)
        # Re-check: another process may have created OUT while we worked.
        check_output(out, overwrite=overwrite)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=parent))
            os.rename(out, old / out.name)
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(old / out.name, out)  # put the previous output back
                raise
            _fsync_path(parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
            _fsync_path(parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:  # one that another process has filled meanwhile stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        named = named_os_error(exc, out, tmp)
        if named is not None:
            raise named from exc
        raise


def named_os_error(exc: BaseException, out: Path, tmp: Path) -> OSError | None:
    """A failed write as an ``OSError`` naming ``out``, for the CLI's one line (None when
    ``exc`` is no OS error, or already names a path outside the temporary folder).

    The temporary folder is gone by the time the user reads the line, and the file
    descriptors the shard writer writes through give an ``OSError`` no path at all
    ("(unknown path)").  safetensors and tokenizers (Rust) report a full disk as a
    plain exception ending ``(os error 28)``.
    """
    if isinstance(exc, OSError):
        code, name = exc.errno, exc.filename
    else:
        found = re.search(r"\(os error (\d+)\)", str(exc))
        code, name = (int(found.group(1)), None) if found else (None, None)
    if code is None:
        return None
    if name is not None and str(tmp) not in str(name):
        return None if isinstance(exc, OSError) else OSError(code, os.strerror(code), str(name))
    where = str(out) if name is None else str(name).replace(str(tmp), str(out))
    return OSError(code, os.strerror(code), where)


def write_file(path: str | Path, text: str) -> None:
    """Write a small result file whole or not at all (a temporary sibling, then a rename).

    A device or pipe (``/dev/stdout``) is written directly.  OS errors carry the
    path, so the CLI's one line can name it.
    """
    path = Path(path)
    try:
        if path.exists() and not path.is_file() and not path.is_dir():
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            return
        if path.is_dir():
            raise IsADirectoryError(21, "Is a directory", str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise
