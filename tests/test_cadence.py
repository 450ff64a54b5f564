"""--sync-every auto (mpidml/learn/cadence.py): the choice from measured times against hand-computed
values, its revision on drift, and whole runs: the choice is recorded, replays bit for bit
when given by hand, survives --resume, and bad combinations are refused."""
import json

import h5py
import numpy as np
import pytest
from conftest import mpiexec, refused, train

from mpidml.learn import cadence
from mpidml.learn.cadence import Cadence, Tuner, blocking_every, first_merge_after, hidden, pow2_at_least
from mpidml.runtime.comm import drive

pytestmark = pytest.mark.timeout(120)


def test_blocking_every_is_the_smallest_power_of_two_within_the_target():
    # avg / (K step + avg) <= 0.02  <=>  K >= 49 avg / step
    assert blocking_every(1e-3, 1e-4) == 8                # 4.9 -> 8
    assert blocking_every(1e-3, 1e-3) == 64               # 49 -> 64
    assert blocking_every(0.75e-3, 15e-3) == 256          # 980, bounded by MAX_EVERY
    assert blocking_every(1e-3, 15e-3, max_every=32) == 32
    assert blocking_every(1e-3, 0.0) == 1
    for step, avg in ((1e-3, 1e-4), (0.7e-3, 2e-3), (2e-3, 1e-5)):
        k = blocking_every(step, avg)
        assert avg / (k * step + avg) <= cadence.TARGET_SHARE           # within the target
        assert k == 1 or avg / (k // 2 * step + avg) > cadence.TARGET_SHARE    # and the smallest


def test_first_merge_after_and_hidden():
    assert pow2_at_least(0.3) == 1 and pow2_at_least(1) == 1 and pow2_at_least(5) == 8 and pow2_at_least(64) == 64
    assert first_merge_after(0.75e-3, 15e-3) == 32        # 1.5 * 20 = 30 -> 32
    assert first_merge_after(1e-3, 1e-5) == 1
    assert first_merge_after(1e-3, 1.0) == cadence.MAX_EVERY // 2
    assert hidden(0.9e-3, 64, 0.75e-3) and not hidden(1.0e-3, 64, 0.75e-3)     # 0.02 * 64 * 0.75 ms = 0.96 ms


class FakeGroup:
    """One process standing for every rank: collectives leave the buffers as they are."""
    size = 2

    def allreduce(self, buf, label="", op=None):
        return
        yield


class FakeAverager:
    """Records the cadence set; an overlapped round blocks as `waits(d)` says, or gives
    (blocked, its steps' seconds) where `waits` returns a pair."""

    def __init__(self, waits):
        self.group, self.state, self.waits = FakeGroup(), np.zeros(8), waits
        self.probed, self.set = [], None

    def probe_round(self, d, dry_step):
        self.probed.append(d)
        got = self.waits(d)
        return got if isinstance(got, tuple) else (got, 0.0)
        yield

    def set_cadence(self, every, merge_after):
        self.set = (every, merge_after)


def decide(step_s, average_s, waits=lambda d: 0.0, overlap=None):
    averager = FakeAverager(waits)
    tuner = Tuner(averager, lambda: (lambda poll=None: None), overlap=overlap)
    return drive(tuner._decide(None, step_s, average_s, 0, "test")), averager.probed


def test_a_fast_link_averages_blocking_without_probing():
    choice, probed = decide(1e-3, 1e-4)
    assert (choice.every, choice.merge_after, probed) == (8, None, [])


def test_a_slow_link_overlaps_with_the_first_d_that_hides_a_round():
    # 100 Mbit/s: a step 0.75 ms, an average 15 ms; D=32 blocks 5 ms (target at K=64: 0.96 ms), D=64 0.5 ms
    choice, probed = decide(0.75e-3, 15e-3, waits=lambda d: 5e-3 if d < 64 else 0.5e-3)
    assert probed == [32] * cadence.PROBE_ROUNDS + [64] * cadence.PROBE_ROUNDS
    assert (choice.every, choice.merge_after, choice.round_cost_ms) == (128, 64, 0.5)
    assert choice.average_ms == 15 and choice.step_ms == 0.75


def test_a_round_that_slows_the_steps_costs_as_much_as_one_that_blocks():
    """Nothing blocked, but the D steps beside the round took 5 ms (then 0.5 ms) more than D
    steps without it: the same choice as rounds that block that long."""
    choice, _ = decide(0.75e-3, 15e-3, waits=lambda d: (0.0, 5e-3 if d < 64 else 0.5e-3))
    assert (choice.every, choice.merge_after) == (128, 64) and abs(choice.round_cost_ms - 0.5) < 1e-9


def test_overlap_that_never_hides_leaves_blocking_at_the_bound():
    choice, probed = decide(0.75e-3, 15e-3, waits=lambda d: 1.0)
    assert (choice.every, choice.merge_after) == (cadence.MAX_EVERY, None)
    assert probed[-1] == cadence.MAX_EVERY // 2 and "does not pay" in choice.why


def test_at_the_bound_overlap_wins_where_its_round_costs_less_than_an_average():
    # 100 Mbit/s, a heavier round: K = 256 either way; a round costs 5 ms against a 15 ms average
    choice, _ = decide(0.75e-3, 15e-3, waits=lambda d: 5e-3)
    assert (choice.every, choice.merge_after) == (256, 128)


def test_the_users_overlap_word_is_kept():
    assert decide(0.75e-3, 15e-3, overlap=False)[0].merge_after is None           # --no-overlap
    choice, probed = decide(1e-3, 1e-4, overlap=True)                               # --overlap on a fast link
    assert choice.overlap and probed and choice.merge_after <= choice.every


def test_review_sets_a_baseline_then_chooses_again_on_drift():
    averager = FakeAverager(lambda d: 0.0)
    tuner = Tuner(averager, lambda: (lambda poll=None: None))
    tuner.resume([Cadence(16, None, 0, 1.0, 0.1)])
    drive(tuner.review(1, 1e-3, 1e-4))          # the first epoch after a choice: the baseline
    drive(tuner.review(2, 1.5e-3, 1.5e-4))       # moved 1.5x: kept
    assert len(tuner.choices) == 1 and averager.set == (16, None)
    drive(tuner.review(3, 1e-3, 2.5e-4))         # the average 2.5x slower: measured again
    assert len(tuner.choices) == 2 and tuner.choices[-1].epoch == 3 and "measured again" in tuner.choices[-1].why


# -- whole runs ------------------------------------------------------------------------------
def final_weights(path):
    with h5py.File(path, "r") as f:
        return f["params"][...], json.loads(f.attrs["cadence"])


@pytest.mark.parametrize("n", [2, 3])
def test_auto_is_recorded_and_replays_bit_for_bit_given_by_hand(tmp_path, blobs, n):
    """Two epochs: the first epoch's end only sets the review's baseline, so the choice made
    before the first step holds throughout, and giving it by hand gives the same model."""
    base = ["--data", blobs, "--epochs", 2, "--batch-size", 16, "--model", "mlp", "--hidden", 16]
    auto = train(n, tmp_path, *base, "--sync-every", "auto", "--save", tmp_path / "auto.h5", name="auto.json")
    sync = auto["sync"]
    assert sync["auto"] and sync["mode"] == "average" and len(sync["choices"]) == 1
    choice = sync["choices"][0]
    assert 1 <= choice["every"] <= cadence.MAX_EVERY and choice["step_ms"] > 0 and choice["average_ms"] > 0
    assert (sync["every"], sync["merge_after"]) == (choice["every"], choice["merge_after"])
    by_hand = ["--sync-every", choice["every"]]
    by_hand += ["--overlap", "--merge-after", choice["merge_after"]] if choice["overlap"] else ["--no-overlap"]
    fixed = train(n, tmp_path, *base, *by_hand, "--save", tmp_path / "fixed.h5", name="fixed.json")
    assert not fixed["sync"]["auto"] and fixed["sync"]["choices"] == []
    auto_w, recorded = final_weights(tmp_path / "auto.h5")
    assert recorded == sync["choices"]
    with h5py.File(tmp_path / "fixed.h5", "r") as f:
        assert np.array_equal(auto_w, f["params"][...])
    same = ("train_loss", "test_loss", "test_accuracy")
    assert [[e[k] for k in same] for e in auto["history"]] == [[e[k] for k in same] for e in fixed["history"]]


def test_one_rank_needs_no_measuring(tmp_path, blobs):
    doc = train(1, tmp_path, "--data", blobs, "--epochs", 1, "--sync-every", "auto")
    assert doc["sync"]["every"] == cadence.MAX_EVERY and "one rank" in doc["sync"]["choices"][0]["why"]


def test_resume_goes_on_with_the_recorded_choice(tmp_path, blobs):
    base = ["--data", blobs, "--batch-size", 16, "--sync-every", "auto"]
    first = train(2, tmp_path, *base, "--epochs", 1, "--save", tmp_path / "m.h5", name="a.json")
    proc = mpiexec(2, [*base, "--epochs", 2, "--resume", tmp_path / "m.h5", "--save", tmp_path / "m2.h5",
                       "--metrics-json", tmp_path / "b.json"], check=0)
    assert "measured before the first step" not in proc.stdout + proc.stderr       # not measured again
    second = json.loads((tmp_path / "b.json").read_text())
    assert second["sync"]["choices"][:1] == first["sync"]["choices"]
    assert second["sync"]["every"] == second["sync"]["choices"][-1]["every"]


def test_a_sweep_compares_auto_with_a_fixed_k(tmp_path, blobs):
    doc = train(2, tmp_path, "--data", blobs, "--epochs", 1, "--sweep", "sync_every=8 auto")
    fixed, auto = (m["sync"] for m in doc["sweep"])
    assert (fixed["auto"], fixed["every"], auto["auto"], len(auto["choices"])) == (False, 8, True, 1)


def test_the_choice_is_printed_once(tmp_path, blobs):
    proc = mpiexec(2, ["--data", blobs, "--epochs", 2, "--sync-every", "auto"], check=0)
    said = [ln for ln in proc.stdout.splitlines() + proc.stderr.splitlines() if "--sync-every auto:" in ln]
    assert len(said) == 1 and "averaging every" in said[0], proc.stdout + proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["--sync", "gradients", "--sync-every", "auto"], "--sync-every auto applies to --sync average"),
    (["--sync-every", "auto", "--overlap", "--merge-after", 4], "--merge-after comes with a fixed --sync-every"),
    (["--sweep", "sync_every=8 auto", "--overlap", "--merge-after", 4], "--merge-after comes with a fixed"),
    (["--sweep", "sync_every=choice(auto|16)", "--trials", 4, "--sync", "gradients"], "applies to --sync average"),
    (["--sync-every", "often"], "--sync-every"),
])
def test_refused(blobs, args, needle):
    refused(1, ["--data", blobs, "--epochs", 1, *args], needle)


def test_a_model_file_with_a_bad_choice_is_refused(tmp_path, blobs):
    train(1, tmp_path, "--data", blobs, "--epochs", 1, "--sync-every", "auto", "--save", tmp_path / "m.h5")
    with h5py.File(tmp_path / "m.h5", "a") as f:
        f.attrs["cadence"] = json.dumps([{"every": 8, "merge_after": 16, "epoch": 0, "step_ms": 1, "average_ms": 1,
                                          "round_cost_ms": None, "why": ""}])
    refused(1, ["--data", blobs, "--epochs", 2, "--sync-every", "auto", "--resume", tmp_path / "m.h5"],
            "attribute cadence")
