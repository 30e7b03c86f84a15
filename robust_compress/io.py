"""File helpers every layer shares: user-facing errors, atomic writes, safe reads, content digests.

Every artifact is written under a temporary name and renamed into place, so a crash or a bad
input never leaves a half-written folder that a later run would mistake for a result.
Artifacts get the permissions the umask allows (a shared study folder stays readable by the
group), not the 0700/0600 of `tempfile`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("robust_compress")

# Bounds of integer settings, checked with the config (before any work): numpy and torch seeds are
# 32-bit; a batch or a count beyond these fails deep inside torch, after the dry run said yes.
MAX_SEED = 2**32 - 1
MAX_BATCH = 1 << 20
MAX_COUNT = 1 << 40


class UserError(Exception):
    """A problem with the user's input or files: printed as one line, exit code 2, no traceback."""


def validation_line(e, prefix: str = "") -> str:
    """A pydantic ValidationError as `key: problem`, its errors joined on one line (the one
    formatter for configs, experiment files, task files and artifact files)."""
    out = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        msg = err["msg"].removeprefix("Value error, ")
        key = f"{prefix}{loc}" if loc else prefix.rstrip(".")
        out.append(f"{key}: {msg}" if key else msg)
    return "; ".join(out)


def os_error_line(e: OSError) -> str:
    """One line for an OS error: the file and the problem (permission denied, disk full, ...)."""
    what = {
        errno.ENOSPC: "no space left on device",
        errno.EACCES: "permission denied",
        errno.EROFS: "read-only file system",
        errno.EDQUOT: "disk quota exceeded",
    }.get(e.errno, e.strerror)
    where = e.filename or "?"
    return f"{where}: {what or type(e).__name__}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(path: Path, is_dir: bool) -> None:
    """Give a temporary file/folder (created 0600/0700) the permissions of an ordinary new one."""
    mode = (0o777 if is_dir else 0o666) & ~_umask()
    if is_dir:
        for root, dirs, files in os.walk(path):
            os.chmod(root, mode)
            for f in files:
                p = os.path.join(root, f)
                os.chmod(p, (os.stat(p).st_mode & 0o777) | (0o666 & ~_umask()))
            for d in dirs:
                os.chmod(os.path.join(root, d), mode)
    else:
        os.chmod(path, mode)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSON Lines file; errors name the file and the 1-based line. A byte-order mark at the
    start (editors on Windows write one) is skipped, not refused."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    rows = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:  # e.object: the line without a byte-order mark
                raise UserError(
                    f"{path}:{lineno}: not UTF-8 (byte {e.object[e.start]:#04x} at column "
                    f"{e.start + 1})"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(
                    f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})"
                ) from None
            except RecursionError:  # e.g. 200,000 nested "[": the parser's stack, not a traceback
                raise UserError(f"{path}:{lineno}: JSON nested too deeply") from None
            if not isinstance(row, dict):
                raise UserError(
                    f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}"
                )
            row["_line"] = lineno
            rows.append(row)
    return rows


def read_text(path: Path) -> str:
    """A UTF-8 text file (a leading byte-order mark skipped), or one line saying why not."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        bad = e.object  # without the byte-order mark: e.start counts from there
        line = bad[: e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 (byte {bad[e.start]:#04x})") from None


def read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
    except RecursionError:
        raise UserError(f"{path}: JSON nested too deeply") from None


MAX_YAML_DEPTH = 100


class YamlTooDeep(yaml.MarkedYAMLError):
    """A YAML document nested deeper than `MAX_YAML_DEPTH`."""


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader with its nesting bounded: the composer recurses once per level, so a
    document nested thousands deep ended in a RecursionError (a traceback), not one line."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YamlTooDeep(
                    problem=f"nested deeper than {MAX_YAML_DEPTH} levels",
                    problem_mark=self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def safe_yaml(text: str) -> Any:
    """Parse (never execute) YAML text, at most `MAX_YAML_DEPTH` levels deep (else `YamlTooDeep`,
    a yaml.YAMLError)."""
    return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader: constructs no objects


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse (never execute) a YAML file into a mapping."""
    try:
        data = safe_yaml(read_text(path))
    except YamlTooDeep as e:
        raise UserError(
            f"{path}:{e.problem_mark.line + 1}: YAML nested deeper than {MAX_YAML_DEPTH} levels"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UserError(f"{where}: malformed YAML ({getattr(e, 'problem', None) or e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return data


def yaml_key_lines(path: Path) -> dict[tuple, int]:
    """1-based line of every key (and list item) of a YAML mapping, by its path: ("defaults", "lr")
    or ("compressions", 0). Read with the safe composer (no object is constructed); {} if
    unreadable."""
    try:
        root = yaml.compose(read_text(path), Loader=_BoundedLoader)
    except (yaml.YAMLError, UserError):
        return {}
    lines: dict[tuple, int] = {}

    def walk(node, at: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = at + (k.value,)
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                lines[at + (i,)] = v.start_mark.line + 1
                walk(v, at + (i,))

    walk(root, ())
    return lines


def line_of(lines: dict[tuple, int], loc: tuple) -> int | None:
    """The line of the deepest prefix of `loc` that the file has (a missing key: its parent's
    line)."""
    loc = tuple(int(p) if isinstance(p, str) and p.isdigit() else p for p in loc)
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def atomic_write_text(path: Path, text: str, record: bool = False) -> None:
    with atomic_file(path, record=record) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any, record: bool = False) -> None:
    """`record`: a user-facing output file (see `atomic_file`)."""
    atomic_write_text(
        path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", record=record
    )


def write_yaml(path: Path, data: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def _disk_full(e: BaseException, where: Path) -> bool:
    """Writers below us (torch's zip writer, safetensors, pyarrow) report a full disk in their own
    words ("unexpected pos", "failed writing"): read it from the message or from the free space
    left."""
    text = str(e).lower()
    if any(w in text for w in ("no space left", "errno 28", "file too large", "disk quota")):
        return True
    probe = Path(where).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free < (4 << 20)
    except OSError:
        return False


@contextlib.contextmanager
def disk_errors(where: Path) -> Iterator[None]:
    """Turn a library's write failure on a full disk into the OSError the CLI prints as one line."""
    try:
        yield
    except OSError as e:
        if (
            e.filename is None and e.errno is not None
        ):  # a bare write error: name what was being written
            raise OSError(e.errno, e.strerror, str(where)) from None
        raise
    except Exception as e:
        if _disk_full(e, where):
            raise OSError(errno.ENOSPC, "No space left on device", str(where)) from None
        raise


@contextlib.contextmanager
def atomic_file(final: Path, record: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path to write; on success it replaces `final`. `record`: a
    user-facing output file, whose content digest goes to its record beside it (`.NAME` +
    `RECORD`), so a later `--overwrite` knows the tool wrote it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=final.parent, prefix=f".{final.name}.", suffix=".tmp" + final.suffix
    )
    os.close(fd)
    try:
        with disk_errors(final):
            yield Path(tmp)
        publish(Path(tmp), is_dir=False)
        if record:
            if final.exists() and not owned(final):
                raise UserError(f"{final}: already exists" + _not_ours(final))
            with atomic_file(_file_record(final)) as rec:
                rec.write_text(json.dumps({"tool": TOOL, "sha256": file_digest(Path(tmp))}))
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(final: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `final`, on error it is removed.
    The folder carries the tool's record (`RECORD`), and an existing `final` is replaced only when
    it is empty or carries one: a folder the tool did not write is never deleted."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        with disk_errors(final):
            yield tmp
            _write_record(tmp)
        publish(tmp, is_dir=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        if not overwrite or not (owned(final) or _empty_dir(final)):
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(f"{final}: already exists" + _not_ours(final))
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def check_writable(folder: Path) -> None:
    """Fail now, not after hours of training, if `folder` (or the nearest existing parent) is not
    writable."""
    folder = Path(folder).absolute()
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{probe}: not a folder, cannot write {folder} there")
    if not os.access(probe, os.W_OK | os.X_OK):
        read_only = hasattr(os, "statvfs") and os.statvfs(probe).f_flag & os.ST_RDONLY
        raise UserError(
            f"{probe}: {'read-only file system' if read_only else 'permission denied'} "
            f"(cannot write {folder})"
        )
    try:  # root passes os.access everywhere (/proc, a read-only mount): create and remove a probe
        os.rmdir(tempfile.mkdtemp(dir=probe, prefix=".robust-compress-probe."))
    except OSError as e:
        raise UserError(
            f"{probe}: cannot write {folder} there ({os_error_line(e).split(': ', 1)[-1]})"
        ) from None


# The one output guard. Every folder the tool writes holds this record and every output file has
# one beside it (`.NAME.robust-compress`, its content digest): `--overwrite` replaces only what
# carries it, so a user's folder or file is never deleted, whatever the flags.
TOOL = "robust-compress"
RECORD = ".robust-compress"


def _write_record(folder: Path) -> None:
    (folder / RECORD).write_text(json.dumps({"tool": TOOL}) + "\n")


def _file_record(path: Path) -> Path:
    return path.with_name(f".{path.name}{RECORD}")


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def owned(path: Path) -> bool:
    """The tool wrote `path`: a folder holding its record, or a file whose record beside it names
    its current content (a file the user edited since is theirs)."""
    path = Path(path)
    if path.is_symlink():
        return False
    if path.is_dir():
        return (path / RECORD).is_file()
    rec = _file_record(path)
    if not path.is_file() or not rec.is_file():
        return False
    try:
        return json.loads(rec.read_text()).get("sha256") == file_digest(path)
    except (OSError, ValueError, AttributeError):
        return False


def adopt(folder: Path) -> None:
    """Mark a folder that an earlier version of the tool wrote (recognised by its own validated
    record, e.g. a study's index.json) as the tool's."""
    if Path(folder).is_dir() and not (Path(folder) / RECORD).exists():
        _write_record(Path(folder))


def _not_ours(path: Path) -> str:
    """Why an existing output is refused: what is there, and whose it is."""
    if owned(path):
        return " (pass --overwrite to replace it)"
    if path.is_dir() and not path.is_symlink():
        names = sorted(p.name for p in path.iterdir())
        shown = ", ".join(names[:3]) + (f", ... ({len(names)} entries)" if len(names) > 3 else "")
        return (
            f" and holds {shown}, which robust-compress did not write: it is never replaced, "
            "--overwrite included; choose another output"
        )
    kind = "a link" if path.is_symlink() else "a file"
    return (
        f" ({kind} robust-compress did not write: it is never replaced, --overwrite included; "
        "choose another output)"
    )


def _overlap(out: Path, read: Path) -> str | None:
    o, r = out.resolve(), read.resolve()
    if o == r:
        return "is"
    if r.is_relative_to(o):
        return "holds"
    if o.is_relative_to(r):
        return "lies inside"
    return None


def check_apart(out: Path, inputs: Iterable[tuple[str | Path | None, str]]) -> None:
    """`out` is not, does not hold and does not lie inside any existing input path."""
    for path, what in inputs:
        if path is None or str(path) == "" or not Path(path).exists():
            continue
        if how := _overlap(Path(out), Path(path)):
            raise UserError(f"{out}: {how} the {what} this command reads ({path}); write elsewhere")


def claim_output(
    out: str | Path,
    inputs: Iterable[tuple[str | Path | None, str]] = (),
    overwrite: bool = False,
    folder: bool = True,
) -> Path:
    """The one output guard, called by every command and stage writer before any work.

    Refuses an output that is, holds or lies inside an input (`inputs`: (path, what) pairs; hub
    ids and missing paths are skipped), an existing non-empty folder or file that the tool did not
    write (`--overwrite` or not), and one the tool wrote unless `overwrite`. `folder`: the output
    is a folder (else a file: an existing folder there is refused)."""
    out = Path(out)
    check_apart(out, inputs)
    if out.is_symlink() or out.exists():
        if not folder and out.is_dir() and not out.is_symlink():
            raise UserError(f"{out}: is a folder; the output is a file (name a file)")
        if not _empty_dir(out) and not (overwrite and owned(out)):
            raise UserError(f"{out}: already exists" + _not_ours(out))
    check_writable(out.parent)
    return out


def own_dir(folder: Path) -> Path:
    """Create a claimed output folder that is filled piece by piece (a study, an audit) and mark
    it the tool's."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    if not (Path(folder) / RECORD).exists():
        _write_record(Path(folder))
    return Path(folder)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (POSIX flock): the kernel drops it when its holder dies,
    so a killed process never leaves a stale lock behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock; run shards of one study one after another there
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@functools.lru_cache(maxsize=4096)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's content (memoized per process on path, size and mtime)."""
    st = os.stat(path)
    return _file_digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-able parts."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_parquet(path: str | Path, required: tuple[str, ...] = ()):
    """A parquet table, or one line naming the file and the problem (missing, unreadable, a required
    column absent). pandas and pyarrow load on first use: io stays light."""
    import pandas as pd
    import pyarrow as pa

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise UserError(f"{path}: unreadable parquet ({type(e).__name__}: {e})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}")
    return df
