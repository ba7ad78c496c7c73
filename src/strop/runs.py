"""The run directory: where each file of a run lives, and writes that never leave half a file behind.

runs/<name>/
  config.yaml        the resolved config
  model/             a standard Hugging Face model folder (safetensors, tokenizer, label map) + strop.json
  metrics.jsonl      one line per validation (epoch, step, losses, metrics, lr, throughput)
  summary.json       the best epoch and its metrics, wall time; written when the run completes
  checkpoints/last/  weights, optimizer, scheduler and RNG state after the latest epoch, for resume
                     (deleted once the run is complete with train.keep_checkpoint=false)
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from strop.errors import StropError, WriteError


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last"

    @property
    def provenance(self) -> Path:
        """The data's fingerprints, device, precision and library versions of the run."""
        return self.root / "provenance.json"

    @property
    def lock(self) -> Path:
        """Held (flock) by the fit writing the run; empty."""
        return self.root / ".lock"

    def is_complete(self) -> bool:
        return self.summary.is_file()


def check_folder_path(folder: Path, option: str) -> None:
    """Raises StropError where `folder`, or a folder above it, is a file: what an output option (`option`,
    e.g. output_dir or --output) names must be a folder, or nothing yet."""
    for part in (folder, *folder.parents):
        if part.exists() and not part.is_dir():
            raise StropError(f"{option} {folder}: {part} is a file, not a folder; choose another {option}")


def data_fingerprints(**paths: str | None) -> dict[str, str | None]:
    """sha256 of each data file's bytes (an image folder: of the names, sizes and modification times of the files
    its reader reads, not of every image's bytes), None where a path is not set or not there (its reader then says
    so): what a study or a self-training records so that continuing it on changed data is refused, as a resumed
    fit refuses it (its recorded runs would mix two data sets)."""
    import hashlib

    from strop.data.images import visible_files

    prints = {}
    for name, path in paths.items():
        if path is None or not Path(path).exists():
            prints[name] = None
            continue
        digest, path = hashlib.sha256(), Path(path)
        if path.is_dir():  # as the image reader lists them: no hidden files, no .DS_Store or Thumbs.db
            for file in visible_files(path):
                info = file.stat() if file.exists() else file.lstat()  # a link that leads nowhere: the link's
                digest.update(f"{file.relative_to(path)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
        else:
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        prints[name] = digest.hexdigest()
    return prints


def check_same_data(saved: dict | None, now: dict[str, str | None], where: str, fix: str,
                    option: str = "data.{}", mixed: str = "its recorded runs and the new ones would measure two data "
                                                         "sets") -> None:
    """Raises StropError where the data fingerprints a study recorded (`saved`, from `data_fingerprints`) differ
    from those of the data now: `where` names what cannot continue, `fix` how to go on, `option` the setting of
    each file, `mixed` what would go wrong. Nothing is compared for a study recorded before fingerprints were, or
    for a file not there now (its reader says so)."""
    if not saved:
        return
    changed = [option.format(name) for name, value in now.items()
               if name in saved and value is not None and saved[name] != value]
    if changed:
        raise StropError(f"cannot continue {where}: {' and '.join(changed)} "
                         f"{'differ' if len(changed) > 1 else 'differs'} from the data it started with (another "
                         f"file, or rows changed in it), so {mixed}; {fix}")


def default_run_name() -> str:
    return datetime.now(timezone.utc).strftime("runs/%Y%m%d-%H%M%S")


# How to go on after a run's file could not be written.
WRITE_PERMISSION_FIX = "Give a folder you can write to, or change the permissions of this one"
RUN_WRITE_FIX = ("Free disk space (or set output_dir to another disk) and run again; a run with a checkpoint "
                 "continues with train.resume=true")


@contextmanager
def reporting_write_errors(path: Path, what: str, fix: str = RUN_WRITE_FIX) -> Iterator[None]:
    """Turns a failed write (a full disk, no permission, a missing folder) into one WriteError that names
    what was being written, where, why, and `fix`: how to go on."""
    from safetensors import SafetensorError  # raised for I/O errors of safetensors files, not OSError

    try:
        yield
    except Exception as error:
        if isinstance(error, StropError) or not (isinstance(error, (OSError, SafetensorError)) or (
                type(error) in (RuntimeError, Exception) and any(s in str(error) for s in WRITE_FAILURES))):
            raise  # said already (a write within, reported), or not a failed write: a fault of its own, shown as such
        if isinstance(error, PermissionError) or getattr(error, "errno", None) == errno.EROFS:
            fix = WRITE_PERMISSION_FIX  # no free space helps there
        raise WriteError(f"could not write {what} to {path}: {error}. {fix}") from None


# What libraries that write files raise, not as an OSError, where the disk fails them: torch.save's zip writer
# (RuntimeError: "[enforce fail at inline_container.cc:672] unexpected pos ...", "basic_ios::clear: iostream
# error") and the tokenizers library (Exception: "No space left on device (os error 28)").
WRITE_FAILURES = ("inline_container", "iostream error", "unexpected pos", "(os error ", "No space left on device",
                  "Read-only file system", "Permission denied")


def hold_lock(path: Path, busy: str):
    """An exclusive lock on the file `path` (made where it is not there), held while the returned file stays
    open: a second process that asks for it is refused with `busy` instead of writing into the same files. The
    operating system drops the lock when the process ends, however it ends, so a killed one leaves no stale lock.

    Raises:
        StropError: another process holds the lock.
    """
    import fcntl

    lock = path.open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise StropError(busy) from None
    return lock


def lock_study(folder: Path, command: str):
    """`hold_lock` on a study's folder (cv, curve): a second study into the same --output, or a second
    continuation of one, is refused before it starts, not left to remove the first one's runs as it fails."""
    return hold_lock(folder / ".lock", f"--output {folder} is in use by another strop {command} that is still "
                                       "running: wait for it to finish, or choose another --output")


def make_output_folder(folder: Path, option: str) -> None:
    """`folder` made (where it is not there yet) for a command's output (`option`: --output), and checked: a file
    in the way, or a folder that cannot be written, is one message, said before the command's work, not after."""
    check_folder_path(folder, option)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temporary_sibling(folder / "probe")
        probe.write_bytes(b"")  # a folder that exists but cannot be written fails here
        probe.unlink()
    except OSError as error:
        raise WriteError(f"{option} {folder}: a folder that cannot be made or written here ({error.strerror or error})"
                         f": choose another {option}") from None


@contextmanager
def output_folder(folder: Path, option: str) -> Iterator[Path]:
    """`make_output_folder`, and within it a failure removes what it made (the folder, and the folders above it
    that were not there): nothing half-written."""
    made = next((part for part in reversed((folder, *folder.parents)) if not part.exists()), None)
    try:
        make_output_folder(folder, option)
        yield folder
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise


def temporary_sibling(path: Path) -> Path:
    """Where `path` is written before it is renamed into place: hidden, and named by this process."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def remove_stale_temporaries(path: Path) -> None:
    """Removes the temporary siblings of `path` (files or folders) that processes which no longer run left
    behind: a process killed while it wrote (SIGKILL, a crash, a power cut) cannot clean up after itself, and
    a checkpoint's staging folder is as large as the checkpoint. A running writer's are left alone."""
    prefix = f".{path.name}.tmp-"
    try:
        siblings = [p for p in path.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    for sibling in siblings:
        pid = sibling.name[len(prefix):]
        if not pid.isdigit() or int(pid) == os.getpid() or _process_runs(int(pid)):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            try:
                sibling.unlink()
            except OSError:
                pass


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it runs, as another user
        return True
    return True


def fsync_file(path: Path) -> None:
    """Makes a written file's content durable: on disk, not only in the page cache, before a rename
    publishes it (otherwise a power cut can leave the new name pointing at empty or partial content)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Makes a folder's entries durable (a file created or renamed in it). A file system that cannot sync
    a folder (EINVAL: some network and FUSE file systems) has nothing more to offer, and is let be."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync_file for every file below `folder`, and fsync_dir for every folder, `folder` itself last."""
    for root, folders, files in os.walk(folder, topdown=False):
        for name in files:
            fsync_file(Path(root) / name)
        fsync_dir(Path(root))


def atomic_write_text(path: Path, text: str, what: str | None = None, fix: str = RUN_WRITE_FIX) -> None:
    """Writes a file through a temporary sibling, fsync and a rename (then an fsync of its folder), so
    readers see the old or the new file, never a partial one, even when the disk fills, the process is
    killed or the power fails. what: its role in an error message (default: its name)."""
    tmp = temporary_sibling(path)
    try:
        with reporting_write_errors(path, what or path.name, fix):
            remove_stale_temporaries(path)
            with open(tmp, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
            fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)  # gone already once renamed


def to_json(data, **options) -> str:
    """JSON text that every JSON reader accepts: a NaN or infinite number (a metric of a diverged model, a
    score of nothing) becomes null instead of the bare NaN/Infinity Python would write."""
    return json.dumps(finite(data), allow_nan=False, **options)


def finite(data):
    """`data` with every non-finite float replaced by None (numpy numbers become Python numbers)."""
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    if hasattr(data, "item") and not isinstance(data, (str, bytes)):  # a numpy scalar
        data = data.item()
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


def atomic_write_json(path: Path, data, what: str | None = None) -> None:
    atomic_write_text(path, to_json(data, indent=2) + "\n", what)


def staging_dir(final: Path) -> Path:
    """An empty temporary folder beside `final`, to fill and then hand to `publish_dir`. Staging folders
    that killed processes left beside `final` are removed first."""
    tmp = temporary_sibling(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    remove_stale_temporaries(final)
    return tmp


@contextmanager
def staged(final: Path, what: str) -> Iterator[Path]:
    """A staging folder to fill; on success it replaces `final` (see `publish_dir`). A write that fails
    (a full disk, no permission) leaves `final` as it was, removes the partial folder, which only takes
    space, and becomes a WriteError that says how to continue.

    what: the folder's role in the message, e.g. "the checkpoint".
    """
    tmp = None
    try:
        with reporting_write_errors(final, what):
            tmp = staging_dir(final)
            yield tmp
            with_umask_modes(tmp)
            fsync_tree(tmp)  # every file on disk before the folder is published under its name
            publish_dir(tmp, final)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)  # already gone once published


def with_umask_modes(folder: Path) -> None:
    """Gives every file below `folder` the mode a file the process creates has (0644 under the usual umask):
    safetensors writes its files readable by their owner alone, so another user, or a server running as
    another, could read a run's config and tokenizer but not its weights."""
    umask = os.umask(0)
    os.umask(umask)  # read by setting it: no call only reads it
    for root, _, files in os.walk(folder):
        for name in files:
            os.chmod(Path(root) / name, 0o666 & ~umask)


def publish_dir(tmp: Path, final: Path) -> None:
    """Replaces `final` by the filled (and fsynced) folder `tmp`. A folder cannot be renamed over a
    non-empty one, so the old one steps aside first; `recover_dir` brings it back if we die between the two
    renames. The parent folder is synced before the old version is deleted, so that after a power cut
    the name holds the old folder or the new one, never neither."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(final: Path) -> Path:
    """The folder `publish_dir` left: `final`, or the previous version if a publish was interrupted."""
    old = final.with_name(f".{final.name}.old")
    if not final.exists() and old.exists():
        os.replace(old, final)
    return final


def remove_failed_run(root: Path, existed: bool) -> None:
    """Removes a failed run that reached no checkpoint: the folder where the run created it, else (a folder the
    user made, which held nothing: `strop.fit._refuse_run_dir` saw to that) only what the run wrote in it."""
    if not existed:
        shutil.rmtree(root, ignore_errors=True)
        return
    for path in root.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def refuse_several_processes(what: str, instead: str) -> None:
    """Raises StropError where this process is one of several that `accelerate launch` or `torchrun` started
    (WORLD_SIZE above 1): for the commands that train run after run themselves (cv, curve, search,
    self-training), whose every process would write the same files at once. `instead`: how to get there."""
    processes = os.environ.get("WORLD_SIZE", "1")
    if processes.isdigit() and int(processes) > 1:
        raise StropError(f"{what} runs as one process, not under accelerate launch or torchrun (here {processes} "
                         f"processes): start it plainly; {instead}")


def library_versions() -> dict[str, str]:
    """The versions of what computes a run: strop, Python, torch, transformers, accelerate."""
    import platform

    import accelerate
    import torch
    import transformers

    from strop import __version__

    return {"strop": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__}


def note_other_versions(root: Path, saved: dict, provenance: dict, say: bool) -> None:
    """A run resumed with other library versions than its last session used: the versions of every earlier
    session that differ stay recorded (provenance "earlier_versions"), and a warning says (where `say`) that the
    run may not end where an uninterrupted one would, its numbers coming from two builds of the code."""
    last, earlier = saved.get("versions", {}), saved.get("earlier_versions", [])
    if last and last != provenance["versions"]:
        earlier = [*earlier, last]
    if earlier:
        provenance["earlier_versions"] = earlier
    changed = [f"{name} {last[name]} -> {now}" for name, now in provenance["versions"].items()
               if name in last and last[name] != now]
    if changed and say:
        print(f"warning: resuming {root} with other versions than it ran with so far ({', '.join(changed)}); "
              "it continues, but may not end where an uninterrupted run would (provenance.json records each "
              "session's versions)", file=sys.stderr)
