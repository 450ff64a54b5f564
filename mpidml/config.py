"""The effective training configuration: one flat record, keyed like the options."""
import dataclasses
import os
import sys

ON_FAILURE = ("continue", "stop")       # --on-failure: what the survivors of a lost rank do (elastic.py)


def bundled_dataset():
    """The UCI optical digits file shipped with mpidml (repo checkout or installed copy)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for path in (os.path.join(here, os.pardir, "data", "digits.h5"),
                 os.path.join(sys.prefix, "share", "mpidml", "digits.h5")):
        if os.path.exists(path):
            return os.path.normpath(path)
    return os.path.join(sys.prefix, "share", "mpidml", "digits.h5")


@dataclasses.dataclass
class TrainConfig:
    data: str = ""
    x_dataset: str = ""
    y_dataset: str = ""
    model: str = "auto"
    hidden: tuple = (128,)
    activation: str = "relu"
    epochs: int = 0            # 0: auto, see train.auto_epochs
    batch_size: int = 64
    lr: float = 0.05
    l2: float = 1e-4
    optimizer: str = "momentum"
    momentum: float = 0.9
    nesterov: bool = False
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    step_epochs: int = 10
    gamma: float = 0.1
    clip_norm: float = 0.0
    sync: str = "average"
    sync_every: int = 8
    overlap: bool = False
    merge_after: int = 0           # --overlap: merge D steps after the round starts (0: K/2, at least 1)
    distribute: str = "scatter"
    partition: str = "blocks"
    block_rows: int = 0
    partition_seed: int = 0
    chunk_mb: float = 16
    stream: bool = False           # leave the rows in the file, read chunk by chunk (stream.py)
    memory_limit: str = "auto"     # a rank's memory: streaming starts where its rows would take half
    stream_chunk_mb: float = 0     # 0: 64 MB, less where the memory limit asks
    stage_dir: str = ""            # stream from a local copy of each rank's rows made here
    standardize: bool = True
    test_fraction: float = 0.2
    dtype: str = "float32"
    seed: int = 0
    save: str = ""
    checkpoint_every: int = 0
    keep_checkpoints: int = 0      # also keep the last K epoch checkpoints as <stem>.epochNNNN<ext>
    resume: str = ""
    metrics_json: str = ""
    trace: str = ""
    stall_timeout: float = 300.0
    on_failure: str = ""           # a lost rank: continue (the MPI can: ULFM) or stop; "": continue where it can
    min_ranks: int = 1             # fewer ranks left: stop, checkpointed (exit 75)
    wait: str = "auto"             # how a rank waits in a collective: auto, spin, nap
    quiet: bool = False
    verbose: bool = False          # every epoch line, however many and fast
    progress_bar: bool = False     # also on whenever rank 0's stdout is a terminal
    checkpoint_signal: str = "TERM,USR1,USR2,HUP"   # noted, then every rank stops at one step, checkpointed
    sweep: tuple = ()              # ((key, (values...) or sweep.Sampled), ...): the axes of models trained at once
    validation_fraction: float = None   # None: 0.1 in a sweep, else 0
    early_stopping: int = 0        # stop a model after P epochs without a better validation loss
    save_dir: str = ""             # in a sweep: every model's file, model-NNN.h5
    trials: int = 0                # sampled points of a sweep with sampled axes (0: 10, recorded as 10)
    sweep_seed: int = 0            # the seed the points are sampled with
    search: str = "grid"           # grid: every model every epoch; halving: successive halving
    halving_factor: int = 3        # halving keeps the best 1/ETA of the models at each rung
    rung_epochs: int = 1           # halving: the epochs of the first rung (the next: ETA times more)
    select: str = "val_loss"       # what ranks models and keeps best weights
    results: str = ""              # a CSV of every model, best first
    given: frozenset = dataclasses.field(default=frozenset(), metadata={"internal": True})
    config_file: str = dataclasses.field(default="", metadata={"internal": True})   # --config: an input too

    def as_dict(self):
        d = {k: getattr(self, k) for k in self.fields()}
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def fields(cls):
        """The options (not `given`: the ones set by the user rather than by default)."""
        return {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
