"""Migrating a whole folder of songs: which file goes where, what is already done, and the loop.

``migrate.py --source DIR --output OUTDIR`` migrates every song under ``DIR`` (recursively, in the
order of the one folder walker :func:`utils.files.audio_files`). This module holds everything of
that mode that does not depend on the model, so it imports neither TensorFlow nor the model; the
per-song work (load, migrate, write the wav and its figure) is a function ``migrate.py`` hands to
:func:`migrate_folder`.

Where the outputs go (:func:`plan_folder`)
    ``DIR/a/song.mp3`` -> ``OUTDIR/a/song.wav``, its figure ``OUTDIR/a/song.png`` and its record
    ``OUTDIR/a/song.json``. When two songs of one folder share a name but not an extension
    (``song.mp3`` and ``song.wav``; compared ignoring case, so that the names are the same on
    every file system), *both* keep their extension: ``song.mp3.wav`` and ``song.wav.wav``; the
    names depend only on ``DIR``'s listing. Names that would still clash (an output file where
    another output needs a folder) are refused before any work. ``OUTDIR`` is created if missing;
    it is refused when it is an existing file, when it is ``DIR`` or inside it, or when it lies
    inside the folder of reference songs. No output path may lie inside ``DIR``: the mode never
    writes there (nor does anything else: sources are only opened for reading).

What "already complete" means (:func:`is_complete`)
    The wav and the figure are each written atomically (whole or not at all); the record, a small
    JSON file, is written last, also atomically. An output is complete when its record exists and
    was made by the same *recipe* (checkpoint files, method, strength, reference and source
    statistics, singers, phase and chunking flags; see ``migrate.py``) from the same source file
    (size and modification time in ns), and its wav and figure exist. A rerun skips complete
    outputs; an output that is missing, incomplete (e.g. Ctrl-C between the wav and its record)
    or stale (other flags, a retrained checkpoint, a replaced source or reference) is migrated
    again and replaced. ``--overwrite`` redoes every song. The record also says what was done
    (the source singer chosen, seconds, SNR against the source).

The loop (:func:`migrate_folder`)
    A tqdm bar (songs) on stderr when stderr is a terminal. A song that cannot be migrated (it
    does not decode, is silent, ...) is skipped with one line ``PROG: warning: skipping REL:
    REASON`` and counted; the run goes on. A warning raised while a song is migrated is printed
    with the song's relative path. Each migrated song gets one line on stdout and the run ends
    with ``migrated: N songs (S s of audio), skipped: M`` (``, already complete: K`` when a rerun
    left some as they were). :class:`FolderAbort` stops the whole run (a failure that is not the
    song's, e.g. a reference folder without one usable song). On Ctrl-C the songs written so far
    stay; :class:`FolderProgress` says how many. Deprecation and resource warnings of libraries
    (e.g. the mp3 decoder's) are not printed in this mode: they are about the library, not the
    song, and would repeat for every song.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import warnings
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from utils.cli import print_warning
from utils.errors import SinGlowError, one_line
from utils.files import AUDIO_EXTENSIONS, atomic_write_text, audio_files

# The kind and version of a song's record (its JSON "format" field).
RECORD_FORMAT = "singlow-folder-migration/1"


class FolderError(SinGlowError):
    """A source or output folder that folder migration refuses (one line)."""


class FolderAbort(SinGlowError):
    """Raised by a song's work to stop the whole run: the failure is not the song's own."""


# ----------------------------------------------------------------------------- paths
def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(os.path.abspath(path)))


def is_inside(path: str, folder: str) -> bool:
    """True when ``path`` is ``folder`` or lies under it, after resolving symbolic links (the
    parts of ``path`` that do not exist yet are taken as written)."""
    path, folder = _real(path), _real(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_folders(source_dir: str, output_dir: str, reference: Optional[str] = None) -> None:
    """Refuse an output folder that folder migration cannot use (no file system access beyond
    ``stat``): an existing file, a name ending in an audio extension that does not exist yet (a
    file name given by mistake), ``source_dir`` itself or a folder inside it, or a folder inside
    the ``reference`` folder (whose songs would become part of the reference).

    Raises:
        FolderError: naming the problem.
    """
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise FolderError(f"--source is a folder, so --output must be a folder; {output_dir} is "
                          "a file")
    if not os.path.exists(output_dir) and output_dir.lower().endswith(AUDIO_EXTENSIONS):
        raise FolderError(f"--source is a folder, so --output must be a folder, got the file "
                          f"name {output_dir}")
    if is_inside(output_dir, source_dir):
        raise FolderError(f"--output {output_dir} is inside --source {source_dir}: the source "
                          "folder is never written to; choose an output folder outside it")
    if reference is not None and os.path.isdir(reference) and is_inside(output_dir, reference):
        raise FolderError(f"--output {output_dir} is inside --reference {reference}: the migrated "
                          "songs would become reference songs; choose another output folder")


@dataclasses.dataclass(frozen=True)
class SongJob:
    """One song of a folder and where its outputs go.

    source: the song's path (joined onto the source folder); relative: that path relative to
    the source folder; wav, figure, record: its output ``.wav``, ``.png`` and ``.json``.
    """

    source: str
    relative: str
    wav: str
    figure: str
    record: str


def output_stems(relatives: Sequence[str]) -> Dict[str, str]:
    """``{relative source path: relative output path without extension}``.

    A song's stem is its relative path without the extension, unless another song's stem is the
    same ignoring case: then each of them keeps its whole name (``song.mp3`` -> ``song.mp3``).

    Raises:
        FolderError: names that still clash, or an output file where another needs a folder.
    """
    plain = {rel: os.path.splitext(rel)[0] for rel in relatives}
    counts: Dict[str, int] = {}
    for stem in plain.values():
        counts[stem.casefold()] = counts.get(stem.casefold(), 0) + 1
    stems = {rel: rel if counts[stem.casefold()] > 1 else stem for rel, stem in plain.items()}
    seen: Dict[str, str] = {}
    folders = set()
    for rel, stem in stems.items():
        key = stem.casefold()
        if key in seen:
            raise FolderError(f"{seen[key]} and {rel} would both be migrated to {stem}.wav; "
                              "rename one of them")
        seen[key] = rel
        parent = os.path.dirname(key)
        while parent:
            folders.add(parent)
            parent = os.path.dirname(parent)
    for rel, stem in stems.items():
        for ext in (".wav", ".png", ".json"):
            if (stem + ext).casefold() in folders:
                raise FolderError(f"the output {stem}{ext} of {rel} would have the name of an "
                                  "output folder; rename the song or the folder")
    return stems


def plan_folder(source_dir: str, output_dir: str, paths: Optional[Iterable[str]] = None
                ) -> List[SongJob]:
    """The :class:`SongJob` of every song under ``source_dir`` (``paths``: those songs, as
    :func:`utils.files.audio_files` lists them; by default it is called).

    Raises:
        FolderError: clashing output names (:func:`output_stems`) or an output inside
            ``source_dir``.
    """
    paths = list(audio_files(source_dir) if paths is None else paths)
    relatives = [os.path.relpath(path, source_dir) for path in paths]
    stems = output_stems(relatives)
    jobs = []
    for path, rel in zip(paths, relatives):
        base = os.path.join(output_dir, stems[rel])
        job = SongJob(path, rel, base + ".wav", base + ".png", base + ".json")
        if is_inside(job.wav, source_dir):
            raise FolderError(f"the output of {rel} would be {job.wav}, inside --source "
                              f"{source_dir}: choose an output folder that does not contain it")
        jobs.append(job)
    return jobs


# ----------------------------------------------------------------------------- what is done
def file_identity(path: str) -> Optional[Dict[str, int]]:
    """``{"size": bytes, "mtime_ns": ns}`` of a file, or None when it does not exist: changes
    when the file is replaced or rewritten."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return {"size": int(stat.st_size), "mtime_ns": int(stat.st_mtime_ns)}


def path_identity(path: str) -> Dict[str, object]:
    """What identifies a statistics file or a folder of songs in a recipe: its absolute path and,
    for a file, :func:`file_identity`; for a folder, the number of songs and a SHA-256 over each
    song's relative path, size and modification time."""
    identity: Dict[str, object] = {"path": os.path.abspath(path)}
    if os.path.isdir(path):
        digest = hashlib.sha256()
        songs = audio_files(path)
        for song in songs:
            digest.update(json.dumps([os.path.relpath(song, path), file_identity(song)]).encode())
        identity.update(songs=len(songs), digest=digest.hexdigest())
    else:
        identity.update(file_identity(path) or {})
    return identity


def _plain(value):
    """``value`` as JSON gives it back (tuples become lists), so that recipes compare equal."""
    return json.loads(json.dumps(value))


def read_record(job: SongJob) -> Optional[dict]:
    """The record of ``job``'s output, or None when there is none or it cannot be read."""
    try:
        with open(job.record, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == RECORD_FORMAT else None


def is_complete(job: SongJob, recipe: dict, record: Optional[dict] = None) -> bool:
    """Whether ``job``'s outputs were made by ``recipe`` from the source as it is now, whole
    (``record``: :func:`read_record`'s, read when not given)."""
    record = read_record(job) if record is None else record
    return (record is not None and record.get("recipe") == _plain(recipe)
            and record.get("source") == file_identity(job.source)
            and os.path.isfile(job.wav) and os.path.isfile(job.figure))


def write_record(job: SongJob, recipe: dict, details: Optional[dict] = None) -> None:
    """Write ``job``'s record (atomically; after its wav and figure): the format, the source's
    relative path and identity, the recipe, and ``details`` (what was done)."""
    record = {"format": RECORD_FORMAT, "source_path": job.relative,
              "source": file_identity(job.source), "recipe": recipe,
              "wav": os.path.basename(job.wav), "figure": os.path.basename(job.figure)}
    record.update(details or {})
    atomic_write_text(job.record, json.dumps(_plain(record), indent=1) + "\n")


# ----------------------------------------------------------------------------- the loop
class Console:
    """Lines for the user that do not tear a tqdm bar: ``info`` (stderr), ``warn`` (stderr,
    ``PROG: warning: ...``) and ``out`` (stdout). Streams are looked up at each call."""

    def __init__(self, prog: str):
        self.prog = prog

    def info(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)

    def out(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stdout)

    def warn(self, text: str) -> None:
        from tqdm import tqdm

        with tqdm.external_write_mode(file=sys.stderr):
            print_warning(self.prog, text)


@dataclasses.dataclass
class SongResult:
    """What a song's work returns: ``seconds`` of audio written, a ``note`` for its line (e.g.
    ``"SNR vs source 12.0 dB"``) and ``details`` for its record."""

    seconds: float
    note: str = ""
    details: Dict[str, object] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class FolderProgress:
    """Counts of a folder run, kept up to date song by song (read on Ctrl-C).

    total: songs in the folder; migrated / skipped: songs written / that failed in this run;
    seconds: audio written (s); complete: songs already complete, left as they were; redone:
    stale outputs migrated again; current: the relative path of the song in progress (None
    between songs).
    """

    total: int = 0
    migrated: int = 0
    skipped: int = 0
    seconds: float = 0.0
    complete: int = 0
    redone: int = 0
    current: Optional[str] = None

    def summary(self) -> str:
        """``migrated: N songs (S s of audio), skipped: M`` (+ ``, already complete: K``)."""
        text = (f"migrated: {self.migrated} song{'' if self.migrated == 1 else 's'} "
                f"({self.seconds:.2f} s of audio), skipped: {self.skipped}")
        return text + (f", already complete: {self.complete}" if self.complete else "")


SongWork = Callable[[SongJob, Console], SongResult]


def migrate_folder(jobs: Sequence[SongJob], work: SongWork, recipe: dict, console: Console,
                   progress: Optional[FolderProgress] = None, overwrite: bool = False,
                   show_bar: Optional[bool] = None) -> FolderProgress:
    """Run ``work(job, console)`` for every job whose output is not complete, then write its
    record; returns the counts (``progress``, updated in place, when given).

    ``work`` writes ``job.wav`` and ``job.figure``. A :class:`~utils.errors.SinGlowError` or
    ``OSError`` it raises skips the song with one named line; :class:`FolderAbort` (and anything
    else, e.g. ``KeyboardInterrupt``) stops the run. ``show_bar``: None shows the tqdm bar when
    stderr is a terminal. The summary line is the caller's to print.
    """
    from tqdm import tqdm

    progress = progress if progress is not None else FolderProgress()
    progress.total = len(jobs)
    pending = []
    for job in jobs:
        record = None if overwrite else read_record(job)
        if record is not None and is_complete(job, recipe, record):
            progress.complete += 1
            continue
        progress.redone += record is not None
        pending.append(job)
    if progress.complete:
        console.info(f"{progress.complete} of {len(jobs)} songs are already complete in their "
                     "output folder and are left as they are (--overwrite redoes them)")
    if progress.redone:
        console.info(f"{progress.redone} songs were migrated before with other settings, from "
                     "another version of the source or of the checkpoint: migrating them again")
    enabled = sys.stderr.isatty() if show_bar is None else show_bar
    bar = tqdm(total=len(pending), unit="song", dynamic_ncols=True, leave=False,
               disable=not enabled, file=sys.stderr)
    try:
        for job in pending:
            progress.current = job.relative
            bar.set_description_str(job.relative if len(job.relative) <= 40
                                    else "..." + job.relative[-37:])
            result, failure = _run_one(job, work, recipe, console)
            if failure is None:
                progress.migrated += 1
                progress.seconds += result.seconds
                note = f", {result.note}" if result.note else ""
                console.out(f"{job.relative} -> {job.wav} ({result.seconds:.2f} s{note})")
            else:
                progress.skipped += 1
                console.warn(f"skipping {job.relative}: {failure}")
            progress.current = None
            bar.update()
    finally:
        bar.close()
    return progress


# Warnings about a library's own code, not about the song: not repeated for every song.
_LIBRARY_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ResourceWarning)


def _run_one(job: SongJob, work: SongWork, recipe: dict, console: Console):
    """``(result, None)`` for a migrated song (its record written), ``(None, reason)`` for one
    that failed; the warnings it raised are printed once each, with its name."""
    failure = None
    result = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the same warning for every song that raises it
        for category in _LIBRARY_WARNINGS:
            warnings.simplefilter("ignore", category)
        try:
            result = work(job, console)
            write_record(job, recipe, result.details)
        except FolderAbort:
            raise
        except (SinGlowError, OSError) as error:
            failure = one_line(error)
    for message in dict.fromkeys(str(warning.message) for warning in caught):
        console.warn(f"{job.relative}: {message}")
    return result, failure
