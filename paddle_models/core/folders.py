"""Output folders: one writer per folder (a lock file), hidden temporary folders that follow the umask, and the
clean-up of those a killed run left behind.

Every tool that writes a folder (train.py's ``--save_dir``, export.py's and tools/quantize.py's ``--save_dir``)
takes a :class:`FolderLock` first: a second run into the same folder stops at once with one line naming the PID
that holds it, instead of interleaving its files with the first run's. The lock is an ``flock`` on a small file
that holds the holder's PID; the kernel drops it when the holder dies, however it dies, so a lock file left by a
killed run is taken over by the next one (which says so). Only then are the hidden leftovers of killed writes
(``.<name>.tmp-*``, ``.<name>.old-*``) cleaned up: they cannot belong to a live run.
"""
import os
import re
import secrets
import shutil
import time

try:
    import fcntl
except ImportError:  # Windows: no flock; folders are not locked there
    fcntl = None

from paddle_models.core import logger
from paddle_models.errors import UserError

# hidden temporary folders created by new_hidden_dir and not yet renamed into place or removed: what a forced exit
# (core/signals.py) removes
ACTIVE_TEMP_DIRS = set()
# the locks this process holds: what a forced exit releases
HELD_LOCKS = []


def hidden_name(parent, name, kind):
    """An unused path ``parent/.<name>.<kind>-<random hex>``."""
    while True:
        path = os.path.join(parent, f'.{name}.{kind}-{secrets.token_hex(4)}')
        if not os.path.lexists(path):
            return path


def new_hidden_dir(parent, name, kind='tmp'):
    """Create an empty folder ``parent/.<name>.<kind>-<random hex>`` and return its path.

    ``os.mkdir`` gives it the mode the user's umask allows (``tempfile.mkdtemp`` would make it ``drwx------``, and
    the folder renamed from it would keep that mode). Until :func:`forget_temp` it is in ``ACTIVE_TEMP_DIRS``.
    """
    while True:
        try:
            path = hidden_name(parent, name, kind)
            os.mkdir(path)
            ACTIVE_TEMP_DIRS.add(path)
            return path
        except FileExistsError:
            continue


def forget_temp(path):
    """``path`` (from :func:`new_hidden_dir`) was renamed into place or removed: a forced exit leaves it alone."""
    ACTIVE_TEMP_DIRS.discard(path)


def remove_stale_hidden(parent, names, restorable=True):
    """Clean up after writes that were killed (SIGKILL, power loss) in folder ``parent``.

    A ``.<name>.tmp-*`` folder is a write that never completed: removed. A ``.<name>.old-*`` folder is a previous
    result moved aside while a new one took its name: removed when ``<name>`` exists, renamed back to ``<name>``
    (where ``restorable``) when the kill came between the two renames. Only folders (not links) whose ``<name>``
    fully matches the regular expression ``names`` are touched. Call it only while holding the lock of the
    folders concerned: a live writer's temporary folder looks the same.

    Returns:
        (list of removed folder paths, list of restored paths)
    """
    removed, restored = [], []
    if not os.path.isdir(parent):
        return removed, restored
    pattern = re.compile(rf'\.({names})\.(tmp|old)-\w+')
    for entry in sorted(os.listdir(parent)):
        match = pattern.fullmatch(entry)
        path = os.path.join(parent, entry)
        if not match or os.path.islink(path) or not os.path.isdir(path):
            continue
        target = os.path.join(parent, match.group(1))
        if match.group(2) == 'old' and restorable and not os.path.lexists(target):
            os.replace(path, target)
            restored.append(target)
        else:
            shutil.rmtree(path)
            removed.append(path)
    return removed, restored


def clean_beside(save_dir, what='--save_dir'):
    """Remove the leftovers of a killed export or quantization beside ``save_dir`` (``.<name>.tmp-*``, and
    ``.<name>.old-*``, put back as ``save_dir`` where that is missing), logging what was done."""
    save_dir = os.path.abspath(save_dir)
    parent, name = os.path.split(save_dir)
    try:
        removed, restored = remove_stale_hidden(parent, re.escape(name))
    except OSError as err:
        raise UserError(f"{what} {save_dir}: cannot clean up unfinished folders beside it "
                        f"({err.strerror or err})") from None
    log_clean_up(removed, restored, 'folder', f'beside {save_dir}', 'run')
    return removed, restored


def log_clean_up(removed, restored, what, place, writer):
    """Log what a clean-up after killed writes (``remove_stale_hidden``) did: one line naming the ``removed``
    folders, ``Removed N unfinished <what>(s) left by an interrupted <writer> <place>: names``, and a warning per
    ``restored`` one, ``Put <path> back: a <writer> replacing it was interrupted`` (training's checkpoints, and
    ``clean_beside``'s exports and quantizations)."""
    if removed:
        logger.info(f"Removed {len(removed)} unfinished {what}(s) left by an interrupted {writer} {place}: "
                    f"{', '.join(os.path.basename(p) for p in removed)}")
    for path in restored:
        logger.warning(f"Put {path} back: a {writer} replacing it was interrupted")


def lock_path_beside(save_dir):
    """The lock file of a folder that is replaced as a whole (export, quantize): ``.<name>.lock`` beside it."""
    parent, name = os.path.split(os.path.abspath(save_dir))
    return os.path.join(parent, f'.{name}.lock')


LOCK_NAME = '.paddle_models.lock'


def lock_path_inside(save_dir):
    """The lock file of a folder written file by file (training): ``save_dir/.paddle_models.lock``."""
    return os.path.join(save_dir, LOCK_NAME)


class FolderLock:
    """An exclusive lock on an output folder, held by this process until :meth:`release` (or its death).

    Args:
        path (str): The lock file (:func:`lock_path_inside` or :func:`lock_path_beside`); its folder must exist.
        folder (str): The folder it guards, named in messages.
        what (str): The flag naming the folder (``--save_dir``).

    Raises (from :meth:`acquire`):
        UserError: another live process holds the lock: ``--save_dir DIR is in use by another run (PID N); wait
            for it to finish or choose another folder``; or the lock file cannot be written.
    """

    def __init__(self, path, folder, what='--save_dir'):
        self.path = path
        self.folder = folder
        self.what = what
        self.fd = None

    def acquire(self):
        if fcntl is None or self.fd is not None:
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise UserError(f"{self.what} {self.folder}: cannot write its lock file {self.path} "
                                f"({err.strerror or err})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f"PID {holder}" if holder else "a process that has not written its PID yet"
                raise UserError(f"{self.what} {self.folder} is in use by another run ({who}; lock file "
                                f"{self.path}); wait for it to finish or choose another folder") from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:  # the holder released it (and removed the file) between our open and flock: again
                os.close(fd)
                continue
            break
        previous = _read_pid(fd, wait=0)
        if previous and previous != os.getpid():
            logger.warning(f"{self.what} {self.folder}: took over the lock left by PID {previous}, which is no "
                           f"longer running")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        HELD_LOCKS.append(self)
        return self

    def release(self):
        """Remove the lock file and unlock (in this order: a run that opens the file in between finds it gone and
        opens a new one)."""
        if self.fd is None:
            return
        try:
            os.remove(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
        if self in HELD_LOCKS:
            HELD_LOCKS.remove(self)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_pid(fd, wait=0.5):
    """The PID written in lock file ``fd``; a holder writes it right after locking, so an empty file is read again
    for up to ``wait`` seconds. None where there is none."""
    deadline = time.monotonic() + wait
    while True:
        text = os.pread(fd, 32, 0).decode('ascii', 'replace').strip()
        if text.isdigit():
            return int(text)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def release_all():
    """Release every lock this process holds (a forced exit)."""
    for lock in list(HELD_LOCKS):
        lock.release()


def missing_dirs(path):
    """The folders of ``path`` that do not exist yet, deepest first."""
    missing = []
    path = os.path.abspath(path)
    while path and not os.path.exists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def remove_empty(dirs):
    """Remove the folders a run created (``missing_dirs``, deepest first) where they are still empty."""
    for path in dirs:
        try:
            os.rmdir(path)
        except OSError:
            return


def replace_dir(new_dir, save_dir):
    """Move ``new_dir`` to ``save_dir``; a previous ``save_dir`` is moved aside (``.<name>.old-*``) and removed only
    once the new one is in place (put back if the rename fails; ``clean_beside`` puts it back after a kill)."""
    if not os.path.exists(save_dir):
        os.rename(new_dir, save_dir)
        return
    old = hidden_name(os.path.dirname(save_dir), os.path.basename(save_dir), 'old')
    os.rename(save_dir, old)
    try:
        os.rename(new_dir, save_dir)
    except BaseException:
        os.rename(old, save_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


class ReplacingWrite:
    """A folder written as a whole (an export, a quantized model): everything goes into a temporary folder
    ``.<name>.tmp-*`` beside ``save_dir`` that replaces ``save_dir`` only at :meth:`commit`, so a failure leaves
    nothing half-written and a previous result intact.

    :meth:`open` creates the missing parents, takes the lock ``.<name>.lock`` beside ``save_dir`` (a second writer
    stops with a line naming this one's PID), removes the leftovers of killed runs (``clean_beside``) and creates
    the temporary folder (mode from the umask). :meth:`abort` (after a failure) removes the temporary folder, the
    lock and the parents it created where empty; :meth:`commit` moves the result into place and unlocks.

    Args:
        save_dir (str): The folder to write.
        what (str): How messages name it (``--save_dir``, ``save_dir``).
    """

    def __init__(self, save_dir, what='--save_dir'):
        self.save_dir = os.path.abspath(os.fspath(save_dir))
        self.parent, self.name = os.path.split(self.save_dir)
        self.what = what
        self.tmp = None
        self.lock = None
        self.new_parents = []

    def open(self):
        """Returns the temporary folder to write into."""
        self.new_parents = missing_dirs(self.parent)
        try:
            os.makedirs(self.parent, exist_ok=True)
            self.lock = FolderLock(lock_path_beside(self.save_dir), self.save_dir, self.what).acquire()
            clean_beside(self.save_dir, self.what)
            self.tmp = new_hidden_dir(self.parent, self.name, 'tmp')
        except BaseException as err:
            self.abort()
            if isinstance(err, OSError):
                raise UserError(f"{self.what}: cannot write in {self.parent}: {err.strerror or err}") from None
            raise
        return self.tmp

    def commit(self):
        """Put the temporary folder in place of ``save_dir`` and unlock."""
        replace_dir(self.tmp, self.save_dir)
        forget_temp(self.tmp)
        self.tmp = None
        self.new_parents = []
        self._unlock()

    def abort(self):
        """Remove what :meth:`open` made (idempotent)."""
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            forget_temp(self.tmp)
            self.tmp = None
        self._unlock()
        remove_empty(self.new_parents)
        self.new_parents = []

    def _unlock(self):
        if self.lock is not None:
            self.lock.release()
            self.lock = None
