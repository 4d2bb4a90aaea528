"""Issue 20, A, C, E4 and E5: results that must describe what ran, folders and locks, messages.

Each row of `CASES` is a command after an edit of a sandbox (its own copy of the tiny image folder,
a config pointing at it, a data root, a working folder), with the outcome it must have and, where
one is given, a check of the files after it. The cases that need a process of their own (the
racing lock, a sweep holding its lock across its cells) follow the table.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from fewshot.cli import main
from fewshot.run.runlock import LOCK_NAME, claim_run_dir, held_locks, release_run_dir
from tests.adversarial.probe import Probe, run_probe

RUN = "{run}"
EVALUATE = ("evaluate", "--checkpoint", "{checkpoint}", "--config", "{config}", "--quiet")


def base_run(root: Path, places: dict[str, Path], *extra: str) -> None:
    """A finished evaluation in `{run}` (the folder the cases attack)."""
    assert main(["evaluate", "--checkpoint", str(places["checkpoint"]), "--config", str(places["config"]), "--quiet",
                 "--output-dir", str(places["run"]), *extra]) == 0


def edit_results(edit: Callable[[dict], None], name: str = "results-3way-1shot.json", *extra: str):
    """Setup: a finished run, then one of its results files edited (and written back as JSON)."""
    def setup(root: Path, places: dict[str, Path]) -> None:
        base_run(root, places, *extra)
        path = places["run"] / name
        doc = json.loads(path.read_text())
        edit(doc)
        path.write_text(json.dumps(doc))
    return setup


def raw_results(text: str, name: str = "results-3way-1shot.json"):
    def setup(root: Path, places: dict[str, Path]) -> None:
        base_run(root, places)
        (places["run"] / name).write_text(text)
    return setup


def swap_two_test_classes(root: Path, places: dict[str, Path]) -> None:
    base_run(root, places)
    test = places["dataset"] / "test"
    first, second = sorted(test.iterdir())[:2]
    first.rename(test / "swap")
    second.rename(first)
    (test / "swap").rename(second)


def sweep_folder(root: Path, places: dict[str, Path]) -> None:
    places["run"].mkdir()
    (places["run"] / "sweep.json").write_text('{"schema": "fewshot.sweep/1"}')
    (places["run"] / "leaderboard.md").write_text("the sweep's own table\n")


def users_files(root: Path, places: dict[str, Path]) -> None:
    places["run"].mkdir()
    (places["run"] / "leaderboard.md").write_text("my notes\n")
    (places["run"] / "results.csv").write_text("a,b\n1,2\n")


def held_by_live_process(root: Path, places: dict[str, Path]) -> None:
    base_run(root, places)
    (places["run"] / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(),
                                                       "command": "benchmark", "started": "now"}))


def grid_with_bad_override(root: Path, places: dict[str, Path]) -> None:
    (root / "grid.yaml").write_text(f"config: {places['config']}\noverrides: [episodes.cout=3]\n"
                                    "grid: {episodes.seed: [0, 1]}\n")


def malicious_checkpoint(root: Path, places: dict[str, Path]) -> None:
    torch = pytest.importorskip("torch")

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo PWNED",))
    torch.save({"format": 1, "model": Payload()}, root / "evil.pt")


def malicious_store_entry(root: Path, places: dict[str, Path]) -> None:
    """A stored pretrained checkpoint (correct key, sidecar and sha256) whose file runs code when unpickled."""
    from episodes import load_dataset
    from episodes.io import file_sha256
    from fewshot.config import load_config
    from fewshot.run.pretrained import pretrain_identity, pretrain_key
    malicious_checkpoint(root, places)
    config = load_config(str(places["config"]), [])
    dataset = load_dataset(config.dataset.name, str(root / "data"), config.dataset.path, config.dataset.image_size)
    key, store = pretrain_key(config, dataset), root / "data" / "checkpoints"
    store.mkdir(parents=True)
    shutil.copy(root / "evil.pt", store / f"{key}.pt")
    (store / f"{key}.json").write_text(json.dumps({"sha256": file_sha256(store / f"{key}.pt"),
                                                   "identity": pretrain_identity(config, dataset)}))


def no_file(*names: str) -> Callable[[Path, dict[str, Path]], None]:
    def check(root: Path, places: dict[str, Path]) -> None:
        for name in names:
            assert not (root / name.format(**{k: str(v) for k, v in places.items()})).exists(), name
    return check


def nothing_named(*patterns: str) -> Callable[[Path, dict[str, Path]], None]:
    def check(root: Path, places: dict[str, Path]) -> None:
        for pattern in patterns:
            assert not list(root.glob(pattern)) and not list(root.parent.glob(pattern)), pattern
    return check


def report_escapes(page: Path) -> None:
    text = page.read_text()
    assert "<script>alert" not in text and "&lt;script&gt;alert" in text


def deep_list(depth: int) -> str:
    return "[" * depth + "]" * depth


CASES: list[tuple[Probe, Callable[[Path, dict[str, Path]], None] | None]] = [
    # A. Results that no longer describe what ran
    (Probe("A1 resume after two class folders were swapped", (*EVALUATE, "--output-dir", RUN, "--resume"),
           setup=swap_two_test_classes, says=("dataset.fingerprint", "--force"), unchanged=(RUN,)), None),
    (Probe("A2 force with fewer shot settings leaves no results of the old run",
           (*EVALUATE, "--output-dir", RUN, "--force", "episodes.k_shot=[1]"),
           setup=lambda root, places: base_run(root, places), exit_code=0),
     no_file("{run}/results-3way-2shot.json")),
    (Probe("A4 refused resume with another pretraining changes nothing, pretrains nothing",
           ("benchmark", "--config", "{config}", "--output-dir", RUN, "--resume", "--quiet", "pretrain.epochs=2"),
           setup=lambda root, places: base_run(root, places), says=("config.pretrain",), unchanged=(RUN, "{root}/data")),
     no_file("{run}/checkpoint-best.pt")),
    (Probe("A5 edited diagnostics mean", ("leaderboard", RUN),
           setup=edit_results(lambda doc: doc["heads"][0].setdefault("diagnostics", {}).update(
               norm={"mean": 123, "ci95": 0.1, "n": 10})), says=("results-3way-1shot.json", "edited")), None),
    (Probe("A5 oracle flag moved to another head", ("leaderboard", RUN),
           setup=edit_results(lambda doc: doc["heads"][0].update(oracle=True)), says=("edited",)), None),
    (Probe("A5 per-episode lists shorter than episodes.count", ("leaderboard", RUN),
           setup=edit_results(lambda doc: doc["heads"][0].update(per_episode=doc["heads"][0]["per_episode"][:5])),
           says=("heads.0.per_episode has 5 entries, but episodes.count is 10",)), None),
    (Probe("A5 run is a string", ("leaderboard", RUN), setup=edit_results(lambda doc: doc.update(run="x")),
           says=("run is 'x'",)), None),
    (Probe("A5 malformed volume section", ("report", RUN),
           setup=edit_results(lambda doc: doc.update(volume={"schema": "fewshot.volume/1", "episodes": 2})),
           says=("volume.log10_volume is missing",)), None),
    (Probe("A5 edited volume percentile and log10 P(fit)", ("leaderboard", RUN),
           setup=edit_results(lambda doc: (doc["volume"]["log10_volume"].update(mean=-99),
                                           doc["volume"]["heads"]["prototype"]["percentile"].update(mean=99.9)),
                              "results-3way-1shot.json", "volume.enabled=true", "volume.episodes=2",
                              "volume.chains=16", "volume.repeats=2", "volume.poisoned=false"),
           says=("edited",)), None),
    (Probe("A5 a 5,000-digit number", ("leaderboard", RUN), setup=raw_results('{"schema": ' + "9" * 5000 + "}"),
           says=("results-3way-1shot.json",)), None),
    (Probe("A5 a list nested 5,000 deep", ("leaderboard", RUN), setup=raw_results('{"x": ' + deep_list(5000) + "}"),
           says=("results-3way-1shot.json",)), None),
    (Probe("A5 a list nested 100 deep", ("leaderboard", RUN), setup=raw_results('{"x": ' + deep_list(100) + "}"),
           says=("nested deeper than",)), None),
    # C. Folders and locks
    (Probe("C1 a run into a sweep folder", (*EVALUATE, "--output-dir", RUN), setup=sweep_folder,
           says=("is a sweep folder",), unchanged=(RUN,)), None),
    (Probe("C1 a run onto the user's own leaderboard.md and results.csv", (*EVALUATE, "--output-dir", RUN),
           setup=users_files, says=("no run of fewshot wrote them",), unchanged=(RUN,)), None),
    (Probe("C1 a sweep into a run folder", ("sweep", "{root}/grid.yaml", "--output-dir", RUN, "--quiet"),
           setup=lambda root, places: (base_run(root, places), (root / "grid.yaml").write_text(
               f"config: {places['config']}\ngrid: {{episodes.seed: [0, 1]}}\n")),
           says=("is not a sweep folder",), unchanged=(RUN,)), None),
    (Probe("C4 report into a folder a live run holds", ("report", RUN, "--quiet"), setup=held_by_live_process,
           says=("is in use by process",), unchanged=(RUN,)), None),
    (Probe("C5 a config name that climbs out of runs/", (*EVALUATE, "name=../../escaped"),
           says=("cannot name a run folder",)), nothing_named("escaped*", "cwd/runs")),
    (Probe("C5 an absolute config name", (*EVALUATE, "name={root}/abs"), says=("cannot name a run folder",)),
     nothing_named("abs*", "cwd/runs")),
    # E4, E5. Messages
    (Probe("E4 a checkpoint that would run code", (*EVALUATE[:2], "{root}/evil.pt", *EVALUATE[3:]),
           setup=malicious_checkpoint, says=("could run code",), never_says=("Traceback", "weights_only", "PWNED")),
     None),
    (Probe("E4 a stored checkpoint that would run code is named with --retrain",
           ("benchmark", "--config", "{config}", "--quiet"), setup=malicious_store_entry,
           says=("{root}/data/checkpoints/", "--retrain", "could run code"),
           never_says=("Traceback", "weights_only", "PWNED")), None),
    (Probe("E5 report of one results file", ("report", "{run}/results-3way-1shot.json"),
           setup=lambda root, places: base_run(root, places), says=("is a file, not a run folder",),
           never_says=("Traceback", "Several inputs")), None),
    (Probe("E5 a bad overrides entry of a grid", ("sweep", "{root}/grid.yaml", "--output-dir", RUN),
           setup=grid_with_bad_override, says=("An entry of `overrides:`", "episodes.cout"),
           never_says=("Traceback", "The grid key")), None),
    (Probe("E5 labels and head names reach leaderboard.md escaped", ("leaderboard", RUN),
           setup=lambda root, places: base_run(root, places, "--label", "<b>x</b>|y\nz"), exit_code=0,
           says=("&lt;b&gt;x&lt;/b&gt;\\|y z",), never_says=("Traceback", "<b>")), None),
    # What held, kept so
    (Probe("held: resume of a finished run keeps its files bit for bit", (*EVALUATE, "--output-dir", RUN, "--resume"),
           setup=lambda root, places: base_run(root, places), exit_code=0,
           unchanged=("{run}/results-3way-1shot.json", "{run}/results-3way-2shot.json")), None),
    (Probe("held: an edited mean is refused by name", ("leaderboard", RUN),
           setup=edit_results(lambda doc: doc["heads"][0]["accuracy"].update(mean=0.99)),
           says=("results-3way-1shot.json", "disagrees with its own per-episode values")), None),
    (Probe("held: report.html escapes a label's script", ("report", RUN, "--quiet"),
           setup=lambda root, places: base_run(root, places, "--label", "<script>alert(1)</script>"), exit_code=0),
     lambda root, places: report_escapes(places["run"] / "report.html")),
]



@pytest.mark.parametrize("probe, after", CASES, ids=[str(probe) for probe, _ in CASES])
def test_probe(probe, after, sandbox, capsys):
    root, places = sandbox
    run_probe(probe, root, places, capsys, after)


def test_a_resume_beside_results_of_another_setting_is_refused(sandbox, capsys):
    root, places = sandbox
    base_run(root, places)
    stray = places["run"] / "results-3way-7shot.json"
    shutil.copy(places["run"] / "results-3way-1shot.json", stray)
    run_probe(Probe("A2 resume beside a file this run would not write", (*EVALUATE, "--output-dir", RUN, "--resume"),
                    says=("results-3way-7shot.json", "--force"), unchanged=(RUN,)), root, places, capsys)


def test_a_store_entry_copied_under_another_key_is_not_reused(tmp_path):
    from fewshot.run.pretrained import PretrainedStore, identity_key
    identity = {"version": 2, "pretrain": {"epochs": 1}, "data": ["a", "b"]}
    key, other = identity_key(identity), identity_key({**identity, "data": ["c", "d"]})
    logged: list[str] = []
    store = PretrainedStore(tmp_path / "checkpoints", log=logged.append)
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"weights")
    assert store.store(key, checkpoint, identity) is not None and store.lookup(key) == store.path(key)
    for suffix in (".pt", ".json"):  # the entry copied as if it were the pretraining of other data
        shutil.copy(store.folder / f"{key}{suffix}", store.folder / f"{other}{suffix}")
    assert store.lookup(other) is None and "stored for another pretraining" in logged[-1]


def test_a_killed_store_write_leaves_no_temp_file(tmp_path):
    from episodes.io import TEMP_SUFFIX
    from fewshot.run.pretrained import PretrainedStore
    store = PretrainedStore(tmp_path / "checkpoints")
    store.folder.mkdir()
    leftover = store.folder / f".abc.pt.k1ll3d{TEMP_SUFFIX}"
    leftover.write_bytes(b"partial")
    assert store.lookup("abc") is None and not leftover.exists()


def test_ctrl_c_after_a_results_file_says_it_was_kept(sandbox, capsys, monkeypatch):
    root, places = sandbox
    import fewshot.run.pipeline as pipeline

    def interrupted(docs, run):
        raise KeyboardInterrupt
    monkeypatch.setattr(pipeline, "export", interrupted)
    code = main(["evaluate", "--checkpoint", str(places["checkpoint"]), "--config", str(places["config"]), "--quiet",
                 "--output-dir", str(places["run"])])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 130 and (places["run"] / "results-3way-1shot.json").is_file()
    assert "no partial results were written" not in err and "--resume" in err


def test_a_full_disk_names_the_file(tmp_path):
    import errno
    from episodes.io import atomic_write
    from fewshot.commands.errorpath import expected_failure

    def full(handle):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError) as error:
        atomic_write(tmp_path / "results.csv", full)
    message = expected_failure(error.value)
    assert str(tmp_path / "results.csv") in message and "a file" not in message and "disk is full" in message


def test_a_sweeps_cells_run_in_this_process_keep_the_sweeps_lock(sandbox, capsys):
    root, places = sandbox
    sweep = root / "sweep"
    sweep.mkdir()
    claim_run_dir(sweep, command="sweep")  # what `fewshot sweep` holds while its cells run through main
    try:
        base_run(root, places)  # a cell: main claims and releases its own folder
        assert (sweep / LOCK_NAME).resolve() in held_locks()
        assert (sweep / LOCK_NAME).exists() and not (places["run"] / LOCK_NAME).exists()
        context = multiprocessing.get_context("fork")  # a second identical sweep, as a process of its own
        other = context.Process(target=_claim_or_exit_2, args=(str(sweep),))
        other.start()
        other.join(timeout=60)
        assert other.exitcode == 2
    finally:
        release_run_dir(sweep)


def _claim_or_exit_2(folder: str) -> None:
    from episodes.errors import UserError
    try:
        claim_run_dir(Path(folder), "sweep")
    except UserError as error:
        os._exit(2 if "in use by process" in str(error) else 3)
    os._exit(0)


TRIALS, RACERS = 30, 8


def _racer(folder: str, barrier, wins, index: int) -> None:
    """One of RACERS processes: each trial, claim the folder whose lock names a dead process."""
    from episodes.errors import UserError
    for trial in range(TRIALS):
        barrier.wait()  # the stale lock is in place
        try:
            claim_run_dir(Path(folder), command=f"racer {index}")
            won = True
        except UserError:
            won = False
        wins[trial * RACERS + index] = int(won)
        barrier.wait()  # every racer has tried; the winner still holds the lock
        if won:
            release_run_dir(Path(folder))
        barrier.wait()  # released: the next stale lock may be written


def test_a_stale_lock_is_taken_over_by_exactly_one_of_many_racing_processes(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = json.dumps({"pid": dead.pid, "host": socket.gethostname(), "command": "killed", "started": "then"})
    context = multiprocessing.get_context("fork")  # the racers only open, flock and write files
    barrier, wins = context.Barrier(RACERS + 1, timeout=60), context.Array("i", TRIALS * RACERS)
    racers = [context.Process(target=_racer, args=(str(tmp_path), barrier, wins, i)) for i in range(RACERS)]
    for racer in racers:
        racer.start()
    try:
        for _ in range(TRIALS):
            (tmp_path / LOCK_NAME).write_text(stale)
            barrier.wait()
            barrier.wait()
            barrier.wait()
    finally:
        for racer in racers:
            racer.join(timeout=60)
            if racer.is_alive():
                racer.kill()
    owners = [sum(wins[trial * RACERS:(trial + 1) * RACERS]) for trial in range(TRIALS)]
    assert owners == [1] * TRIALS, f"owners per trial: {owners}"
    assert all(racer.exitcode == 0 for racer in racers)
