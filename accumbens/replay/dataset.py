"""Fixed datasets: recording transitions to disk, reading them back, and replaying them offline.

On-disk format (a directory; readable with NumPy and `json` alone, no pickle)
-----------------------------------------------------------------------------
  manifest.json        {"format": "accumbens-dataset", "version": 1, "observation_shape": [...],
                        "observation_dtype": "|u1", "num_actions": A, "num_slots", "num_steps",
                        "num_episodes", "open_episode": bool, "dataset_id": "<hex>", "metadata": {...},
                        "chunks": [{"file": "chunk-000000.npz", "num_slots", "num_steps",
                                    "num_episodes", "tag"}, ...]}
  chunk-000000.npz     one array per field below, all of the chunk's length (`np.savez_compressed`)
  chunk-000001.npz     ...

The slots use the layout of the host replay (`accumbens.replay.circular`): one slot per step t
(observation o_t, action a_t, reward r_{t+1}, terminated, truncated), and after each episode's
last step one more slot holding the episode's *final observation* (is_final=True; its action,
reward and probabilities are 0). So every observation is stored once, and a truncated episode
keeps the observation to bootstrap from. Concatenating the chunks in manifest order gives the
whole dataset; an episode may span chunks. `dataset_id` is a random identifier drawn when the
dataset is created (kept when it is appended to): a checkpoint of an offline run records it, so a
run resumed against a *rebuilt* dataset at the same path (same size, different data) is refused.

  observation            [N, *observation_shape]  observation_dtype
  action                 [N] int32
  reward                 [N] float32
  terminated, truncated  [N] bool   (after this step; never both)
  is_final               [N] bool   the slot is an episode's final observation
  behaviour_probability  [N] float32 mu(a_t | s_t) of the behaviour policy for the taken action;
                                     NaN when the recording agent could not say
  epsilon                [N] float32 the behaviour policy's epsilon at step t (NaN if unknown)

For an epsilon-greedy behaviour policy mu(a|s) = eps/A + (1 - eps) * [a == greedy(s)].

Atomicity: every chunk is written to a temporary name and renamed; the manifest, rewritten (also
by rename) after each chunk, lists only complete chunks. A crash leaves at most an unlisted
temporary or chunk file, which readers ignore. The manifest is the single source of truth.

Reading with NumPy alone::

    manifest = json.load(open(f"{d}/manifest.json"))
    chunks = [np.load(f"{d}/{c['file']}", allow_pickle=False) for c in manifest["chunks"]]
    observation = np.concatenate([c["observation"] for c in chunks])

Replaying: `FixedReplayBuffer` loads a dataset into the host replay's storage and samples it with
the very same sampler (frame stacks, n-step returns, episode boundaries) as online replay; its
batches (`DatasetBatch`) also carry the behaviour probabilities of the sampled transitions.
"""
from __future__ import annotations

import json
import os
import uuid
from typing import Any, Iterator, Mapping, Optional, Sequence

import flax.struct
import gin
import numpy as np

from accumbens.atomic import atomic_write
from accumbens.replay.batch import Array, Batch
from accumbens.replay.circular import ReplayBuffer

FORMAT = "accumbens-dataset"
VERSION = 1
MANIFEST = "manifest.json"
# Field name -> dtype (observation: the manifest's observation_dtype).
FIELDS: dict[str, Any] = {
    "observation": None,
    "action": np.int32,
    "reward": np.float32,
    "terminated": np.bool_,
    "truncated": np.bool_,
    "is_final": np.bool_,
    "behaviour_probability": np.float32,
    "epsilon": np.float32,
}


class DatasetError(ValueError):
    """A dataset directory is missing, corrupt, or does not fit what reads it."""


def epsilon_greedy_probability(action: Array, greedy_action: Array, epsilon: Array, num_actions: int) -> Array:
    """mu(a|s) = eps/A + (1 - eps) * [a == greedy(s)] for an epsilon-greedy policy (NumPy or JAX)."""
    return epsilon / num_actions + (1.0 - epsilon) * (action == greedy_action)


# ------------------------------------------------------------------------------------ writer
class DatasetWriter:
    """Appends transitions to a dataset directory in chunks of `chunk_size` slots.

    `add` takes the same arguments as `ReplayBuffer.add` plus the behaviour policy's probability
    of the taken action and its epsilon. Slots are buffered in memory and written in chunks of
    exactly `chunk_size` slots, and whatever is buffered on `flush()` and `close()`.

    Args:
      directory: where to write (created if needed).
      observation_shape, observation_dtype: of one (unstacked) observation.
      num_actions: size of the discrete action space (recorded in the manifest).
      chunk_size: slots per chunk file.
      compress: `np.savez_compressed` (default; MinAtar/Atari frames shrink 10-50x) or `np.savez`.
      metadata: JSON-serialisable description (environment, behaviour policy, seed, ...).
      resume: if the directory already holds a dataset, append to it (its shape, dtype and action
        count must match); otherwise an existing dataset is an error.
    """

    def __init__(
        self,
        directory: str,
        observation_shape: Sequence[int],
        observation_dtype: Any,
        num_actions: int,
        *,
        chunk_size: int = 100_000,
        compress: bool = True,
        metadata: Optional[Mapping[str, Any]] = None,
        resume: bool = False,
    ):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
        self.directory = os.path.abspath(directory)
        self.observation_shape = tuple(int(d) for d in observation_shape)
        self.observation_dtype = np.dtype(observation_dtype)
        self.num_actions = int(num_actions)
        self.chunk_size = int(chunk_size)
        self.compress = compress
        os.makedirs(self.directory, exist_ok=True)
        if os.path.exists(os.path.join(self.directory, MANIFEST)):
            if not resume:
                raise DatasetError(
                    f"{self.directory} already holds a dataset; pass resume=True to append to it, "
                    "or choose another directory."
                )
            self.manifest = read_manifest(self.directory)
            for key, mine in (("observation_shape", list(self.observation_shape)),
                              ("observation_dtype", self.observation_dtype.str),
                              ("num_actions", self.num_actions)):
                if self.manifest[key] != mine:
                    raise DatasetError(f"{self.directory}: existing dataset has {key}={self.manifest[key]}, not {mine}.")
            if metadata is not None:
                self.manifest["metadata"] = dict(metadata)
        else:
            self.manifest = {
                "format": FORMAT,
                "version": VERSION,
                "observation_shape": list(self.observation_shape),
                "observation_dtype": self.observation_dtype.str,
                "num_actions": self.num_actions,
                "num_slots": 0,
                "num_steps": 0,
                "num_episodes": 0,
                "open_episode": False,
                "dataset_id": uuid.uuid4().hex,
                "metadata": dict(metadata or {}),
                "chunks": [],
            }
        self._pending: list[tuple] = []

    @property
    def num_steps(self) -> int:
        """Steps written to disk plus steps still buffered."""
        return self.manifest["num_steps"] + sum(1 for slot in self._pending if not slot[5])

    def add(
        self,
        observation: Any,
        action: int,
        reward: float,
        terminated: bool = False,
        truncated: bool = False,
        *,
        final_observation: Any = None,
        behaviour_probability: float = float("nan"),
        epsilon: float = float("nan"),
    ) -> None:
        """Records step t; when the episode ended after it, also its `final_observation`.

        As `ReplayBuffer.add`: final_observation is required when truncated, optional when
        terminated (zeros if omitted), and must be None while the episode continues.
        """
        terminated, truncated = bool(terminated), bool(truncated)
        ended = terminated or truncated
        if ended and final_observation is None:
            if not terminated:
                raise ValueError("add(..., truncated=True) needs final_observation (it is bootstrapped from).")
            final_observation = np.zeros(self.observation_shape, self.observation_dtype)
        elif not ended and final_observation is not None:
            raise ValueError("final_observation was given but the episode neither terminated nor was truncated.")
        if not (0 <= int(action) < self.num_actions):
            raise ValueError(f"action {action} is outside [0, {self.num_actions}).")
        p = float(behaviour_probability)
        if not (np.isnan(p) or 0.0 < p <= 1.0 + 1e-6):
            raise ValueError(f"behaviour_probability must be in (0, 1] (or NaN if unknown), got {p}.")
        self._pending.append((self._check(observation), int(action), float(reward), terminated,
                              truncated and not terminated, False, p, float(epsilon)))
        if ended:
            self._pending.append((self._check(final_observation), 0, 0.0, False, False, True, 0.0, 0.0))
        while len(self._pending) >= self.chunk_size:
            self._write_chunk(self._pending[: self.chunk_size], None)
            self._pending = self._pending[self.chunk_size:]

    def _check(self, observation: Any) -> np.ndarray:
        observation = np.asarray(observation)
        if observation.shape != self.observation_shape:
            raise ValueError(f"observation has shape {observation.shape}, the dataset stores {self.observation_shape}.")
        return observation.astype(self.observation_dtype, copy=True)

    def flush(self, tag: Any = None) -> None:
        """Writes the buffered slots as one chunk (nothing if none); `tag` is stored with it."""
        if self._pending:
            self._write_chunk(self._pending, tag)
            self._pending = []

    def _write_chunk(self, slots: list, tag: Any) -> None:
        columns = list(zip(*slots))
        arrays = {}
        for (name, dtype), column in zip(FIELDS.items(), columns):
            arrays[name] = np.stack(column) if name == "observation" else np.asarray(column, dtype)
        index = len(self.manifest["chunks"])
        name = f"chunk-{index:06d}.npz"
        save = np.savez_compressed if self.compress else np.savez
        atomic_write(os.path.join(self.directory, name), lambda f: save(f, **arrays))
        num_final = int(arrays["is_final"].sum())
        self.manifest["chunks"].append({
            "file": name,
            "num_slots": len(slots),
            "num_steps": len(slots) - num_final,
            "num_episodes": num_final,
            "tag": tag,
        })
        self.manifest["num_slots"] += len(slots)
        self.manifest["num_steps"] += len(slots) - num_final
        self.manifest["num_episodes"] += num_final
        self.manifest["open_episode"] = not bool(arrays["is_final"][-1])
        self._write_manifest()

    def update_metadata(self, **entries: Any) -> None:
        """Adds JSON-serialisable `entries` to the manifest's metadata and rewrites it (atomically)."""
        self.manifest["metadata"].update(entries)
        self._write_manifest()

    def _write_manifest(self) -> None:
        text = json.dumps(self.manifest, indent=1, default=str).encode("utf-8")
        atomic_write(os.path.join(self.directory, MANIFEST), lambda f: f.write(text))

    def truncate(self, num_chunks: int) -> None:
        """Keeps only the first `num_chunks` chunks (drops buffered slots too); used on resume so that
        a restarted run does not record the steps after its last checkpoint twice."""
        self._pending = []
        chunks = self.manifest["chunks"]
        if num_chunks >= len(chunks):
            return
        dropped, self.manifest["chunks"] = chunks[num_chunks:], chunks[:num_chunks]
        for key in ("num_slots", "num_steps", "num_episodes"):
            self.manifest[key] = sum(c[key] for c in self.manifest["chunks"])
        # Whether the kept part ends inside an episode: its last slot is a step, not a final slot.
        self.manifest["open_episode"] = bool(self.manifest["chunks"]) and not _last_slot_is_final(
            self.directory, self.manifest["chunks"][-1])
        self._write_manifest()  # the manifest first: from here on the dropped files are unlisted
        for chunk in dropped:
            path = os.path.join(self.directory, chunk["file"])
            if os.path.exists(path):
                os.remove(path)

    def truncate_before_tag(self, tag: int) -> None:
        """Keeps the chunks up to the last one tagged with an integer below `tag` (the chunks written
        while an iteration ran are untagged until its tagged closing chunk). A run resuming at
        iteration k calls `truncate_before_tag(k)`: what was recorded after the checkpoint goes."""
        keep = 0
        for i, chunk in enumerate(self.manifest["chunks"]):
            if isinstance(chunk["tag"], int) and chunk["tag"] < tag:
                keep = i + 1
        self.truncate(keep)

    def close(self, tag: Any = None) -> None:
        """Flushes what is buffered. An episode still open stays open (its last steps unusable)."""
        self.flush(tag)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_run_recorder(directory: str, run_dir: str, observation_shape: Sequence[int], observation_dtype: Any,
                      num_actions: int, metadata: Optional[Mapping[str, Any]] = None,
                      chunk_size: int = 100_000) -> DatasetWriter:
    """The writer with which a run in `run_dir` records its training transitions to `directory`.

    Appends to a dataset that the same run started (resumption); refuses one recorded by another
    run, so that a resumed run's truncation can never delete someone else's data.
    """
    run_dir = os.path.abspath(run_dir)
    if os.path.exists(os.path.join(directory, MANIFEST)):
        recorded_by = read_manifest(directory).get("metadata", {}).get("run_dir")
        if recorded_by != run_dir:
            raise DatasetError(
                f"{directory} holds a dataset recorded by run {recorded_by!r}, not {run_dir!r}; record to "
                "a new directory."
            )
    return DatasetWriter(directory, observation_shape, observation_dtype, num_actions, chunk_size=chunk_size,
                         metadata={**(metadata or {}), "run_dir": run_dir}, resume=True)


def _last_slot_is_final(directory: str, chunk: Mapping[str, Any]) -> bool:
    with np.load(os.path.join(directory, chunk["file"]), allow_pickle=False) as data:
        return bool(data["is_final"][-1])


# ------------------------------------------------------------------------------------ reader
def read_manifest(directory: str) -> dict:
    """The dataset's manifest, checked for format and version; raises DatasetError."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        raise DatasetError(f"No dataset at {directory!r}: {MANIFEST} is missing.")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path} is not valid JSON ({e}).") from e
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise DatasetError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('version')!r}; expected "
            f"{FORMAT!r} version {VERSION}."
        )
    return manifest


def iter_chunks(directory: str, fields: Optional[Sequence[str]] = None) -> Iterator[dict[str, np.ndarray]]:
    """Yields each chunk's arrays (the `fields`, default all) in order, checking shapes and dtypes."""
    manifest = read_manifest(directory)
    fields = list(FIELDS) if fields is None else list(fields)
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown dataset fields {sorted(unknown)}; valid fields: {list(FIELDS)}")
    obs_shape, obs_dtype = tuple(manifest["observation_shape"]), np.dtype(manifest["observation_dtype"])
    for chunk in manifest["chunks"]:
        path = os.path.join(directory, chunk["file"])
        n = chunk["num_slots"]
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in fields}
        except Exception as e:  # missing file, bad zip, CRC error, missing key
            raise DatasetError(f"dataset chunk {path} is missing or corrupt ({type(e).__name__}: {e}).") from e
        for name, array in arrays.items():
            shape = (n, *obs_shape) if name == "observation" else (n,)
            dtype = obs_dtype if name == "observation" else np.dtype(FIELDS[name])
            if array.shape != shape or array.dtype != dtype:
                raise DatasetError(f"{path}: {name} is {array.dtype}{array.shape}, expected {dtype}{shape}.")
        yield arrays


def load_dataset(directory: str, fields: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
    """All chunks concatenated: a dict of the `fields` (default all), each [num_slots, ...]."""
    manifest = read_manifest(directory)
    names = list(FIELDS) if fields is None else list(fields)
    parts: dict[str, list] = {name: [] for name in names}
    for arrays in iter_chunks(directory, names):
        for name in names:
            parts[name].append(arrays[name])
    shape, dtype = tuple(manifest["observation_shape"]), np.dtype(manifest["observation_dtype"])
    out = {}
    for name in names:
        if parts[name]:
            out[name] = np.concatenate(parts[name])
        else:
            out[name] = np.zeros((0, *shape) if name == "observation" else (0,),
                                 dtype if name == "observation" else FIELDS[name])
    return out


# ------------------------------------------------------------------------------ fixed replay
@flax.struct.dataclass
class DatasetBatch(Batch):
    """A `Batch` from a fixed dataset, with the behaviour policy of each sampled transition.

      behaviour_probability: [B] float32, mu(a_t | s_t) of the first step's action (NaN: unknown).
      epsilon:               [B] float32, the behaviour policy's epsilon at step t (NaN: unknown).
    """

    behaviour_probability: Optional[Array] = None
    epsilon: Optional[Array] = None


def slot_layout(is_final: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, update_horizon: int,
                stack_size: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Episode positions, valid sample starts and n-step horizons of slots written in order.

    Vectorised equivalent of writing the slots one by one into a `ReplayBuffer` large enough to
    hold them all (no slot overwritten). Checks that final slots follow exactly the steps that
    ended an episode.

    Returns (episode_step int32 [N], valid bool [N], horizon int32 [N]).
    """
    del stack_size  # nothing is overwritten, so every stack is complete
    n_slots = is_final.shape[0]
    ends = (terminated | truncated) & ~is_final
    expected_final = np.zeros(n_slots, bool)
    expected_final[1:] = ends[:-1]
    if np.any(is_final != expected_final[:n_slots]):
        bad = int(np.flatnonzero(is_final != expected_final)[0])
        raise DatasetError(
            f"slot {bad}: a final-observation slot must follow exactly each step that terminated or "
            "was truncated (and only those)."
        )
    if n_slots and ends[-1]:
        raise DatasetError("the last slot ends an episode but its final observation is missing.")
    index = np.arange(n_slots, dtype=np.int64)
    last_final = np.maximum.accumulate(np.where(is_final, index, -1)) if n_slots else index
    episode_start = np.concatenate([[0], last_final[:-1] + 1]) if n_slots else index
    episode_step = (index - episode_start).astype(np.int32)
    # Index of the next final slot at or after each slot (n_slots + big if the episode is open).
    never = n_slots + update_horizon + 1
    next_final = np.minimum.accumulate(np.where(is_final, index, never)[::-1])[::-1] if n_slots else index
    to_end = next_final - index
    horizon = np.minimum(update_horizon, to_end)
    closed = next_final < n_slots
    valid = ~is_final & (closed | (index + update_horizon <= n_slots - 1))
    horizon = np.where(valid, horizon, 0).astype(np.int32)
    return episode_step, valid, horizon


@gin.configurable
class FixedReplayBuffer(ReplayBuffer):
    """Read-only replay over a fixed dataset, sampled exactly as the online `ReplayBuffer` samples.

    It fills the host replay's storage with the dataset's slots once (vectorised) and inherits
    `sample`, `get_transitions`, stacking and n-step returns unchanged. `add` raises. Batches are
    `DatasetBatch`es (they add the behaviour probability and epsilon of each sampled step).

    Args:
      dataset_dir: an accumbens dataset directory (see the module docstring), or, with
        `dataset_format='dqn_replay'`, a DQN Replay Dataset run directory (`.../replay_logs`).
      observation_shape, observation_dtype: what the agent expects; checked against the dataset
        (None: take the dataset's).
      stack_size, update_horizon, gamma: as for `ReplayBuffer`.
      max_steps: use only the first `max_steps` steps (the last episode may then be open: its
        last n-1 steps are not sampled). None: all.
      dataset_format: 'accumbens' or 'dqn_replay'.
      checkpoints: for 'dqn_replay', which checkpoint suffixes to load (None: all found).
    """

    def __init__(
        self,
        dataset_dir: str = gin.REQUIRED,
        observation_shape: Optional[Sequence[int]] = None,
        observation_dtype: Any = None,
        stack_size: int = 1,
        update_horizon: int = 1,
        gamma: float = 0.99,
        *,
        max_steps: Optional[int] = None,
        dataset_format: str = "accumbens",
        checkpoints: Optional[Sequence[int]] = None,
        capacity: Optional[int] = None,
    ):
        del capacity  # set by the dataset's size; accepted so replay factories can pass it
        self.dataset_dir = os.path.abspath(dataset_dir)
        if dataset_format == "accumbens":
            manifest = read_manifest(self.dataset_dir)
            shape, dtype = tuple(manifest["observation_shape"]), np.dtype(manifest["observation_dtype"])
            _check_observations(self.dataset_dir, shape, dtype, observation_shape, observation_dtype)
            # Everything but the observations first (small); the observations are then streamed
            # chunk by chunk straight into the replay's storage, so memory holds them once.
            slots = load_dataset(self.dataset_dir, [name for name in FIELDS if name != "observation"])
            self.num_actions = int(manifest["num_actions"])
            self._dataset_id = manifest.get("dataset_id")  # absent in datasets written before it existed
        elif dataset_format == "dqn_replay":
            from accumbens.replay import dqn_replay_dataset  # noqa: PLC0415 (avoids an import cycle)

            slots = dqn_replay_dataset.load_slots(self.dataset_dir, checkpoints)
            self._dataset_id = None  # published files: path, size and checkpoints identify them
            shape, dtype = slots["observation"].shape[1:], slots["observation"].dtype
            self.num_actions = int(slots["action"].max()) + 1 if slots["action"].size else 0
        else:
            raise ValueError(f"dataset_format must be 'accumbens' or 'dqn_replay', got {dataset_format!r}.")
        _check_observations(self.dataset_dir, shape, dtype, observation_shape, observation_dtype)
        if max_steps is not None:
            slots = _first_steps(slots, int(max_steps))
        n_slots = slots["is_final"].shape[0]
        super().__init__(max(n_slots, stack_size + update_horizon + 1), shape, dtype, stack_size, update_horizon, gamma)
        if "observation" not in slots:
            self._stream_observations(n_slots)
        self._fill(slots)

    def _stream_observations(self, n_slots: int) -> None:
        """Copies the dataset's first `n_slots` observations into storage, one chunk at a time."""
        offset = 0
        for arrays in iter_chunks(self.dataset_dir, ["observation"]):
            take = min(arrays["observation"].shape[0], n_slots - offset)
            self._observation[offset:offset + take] = arrays["observation"][:take]
            offset += take
            if offset >= n_slots:
                break

    def _fill(self, slots: Mapping[str, np.ndarray]) -> None:
        """Installs the per-slot arrays (observations too, unless already streamed in)."""
        n = slots["is_final"].shape[0]
        episode_step, valid, horizon = slot_layout(
            slots["is_final"], slots["terminated"], slots["truncated"], self._update_horizon, self._stack_size)
        if "observation" in slots:
            self._observation[:n] = slots["observation"]
        self._action[:n] = slots["action"]
        self._reward[:n] = slots["reward"]
        self._terminated[:n] = slots["terminated"]
        self._truncated[:n] = slots["truncated"]
        self._is_final[:n] = slots["is_final"]
        self._episode_step[:n] = episode_step
        self._valid[:n] = valid
        self._horizon[:n] = horizon
        self._behaviour_probability = np.full(self._capacity, np.nan, np.float32)
        self._epsilon = np.full(self._capacity, np.nan, np.float32)
        for name, target in (("behaviour_probability", self._behaviour_probability), ("epsilon", self._epsilon)):
            if name in slots:
                target[:n] = slots[name]
        self._add_count = n
        self._next_episode_step = int(episode_step[-1]) + 1 if n and not slots["is_final"][-1] else 0
        self._num_valid = int(valid.sum())
        self._num_steps = int((~slots["is_final"]).sum())
        if self._num_valid == 0:
            raise DatasetError(
                f"{self.dataset_dir}: no transition can be sampled ({self._num_steps} steps; each needs its "
                f"{self._update_horizon}-step window inside the dataset)."
            )

    def add(self, *args, **kwargs) -> None:
        raise TypeError("FixedReplayBuffer is read-only: it replays a fixed dataset. Record with DatasetWriter.")

    def _gather(self, index: np.ndarray, weight: np.ndarray) -> DatasetBatch:
        batch = super()._gather(index, weight)
        return DatasetBatch(
            **{f: getattr(batch, f) for f in ("observation", "action", "reward", "next_observation",
                                               "discount", "weight", "index", "mask")},
            behaviour_probability=self._behaviour_probability[index],
            epsilon=self._epsilon[index],
        )

    # Checkpoints hold only a reference to the dataset (path, identifier, size), not a copy.
    def save(self, directory: str) -> None:
        """Writes `fixed_replay.json` (dataset path, identifier and size) atomically; the data stays where it is."""
        os.makedirs(directory, exist_ok=True)
        text = json.dumps(self._reference(), indent=1).encode("utf-8")
        atomic_write(os.path.join(directory, "fixed_replay.json"), lambda f: f.write(text))

    def load(self, directory: str) -> None:
        """Checks that the checkpoint was taken on the same dataset and configuration."""
        path = os.path.join(directory, "fixed_replay.json")
        try:
            with open(path) as f:
                saved = json.load(f)
        except (OSError, ValueError) as e:
            raise DatasetError(f"fixed replay checkpoint {path} is missing or corrupt ({e}).") from e
        if saved != self._reference():
            raise DatasetError(f"checkpoint {path} was taken on {saved}, but this replay is {self._reference()}.")

    def _reference(self) -> dict:
        return {"dataset_dir": self.dataset_dir, "dataset_id": self._dataset_id, "num_slots": int(self._add_count),
                "num_steps": int(self._num_steps), "config": self._config()}


def _check_observations(directory, shape, dtype, observation_shape, observation_dtype) -> None:
    """Raises DatasetError if the agent's observation shape or dtype (None: any) differs."""
    if observation_shape is not None and tuple(observation_shape) != tuple(shape):
        raise DatasetError(f"{directory} holds observations of shape {tuple(shape)}, not {tuple(observation_shape)}.")
    if observation_dtype is not None and np.dtype(observation_dtype) != np.dtype(dtype):
        raise DatasetError(f"{directory} holds observations of dtype {np.dtype(dtype)}, not {np.dtype(observation_dtype)}.")


def _first_steps(slots: Mapping[str, np.ndarray], max_steps: int) -> dict[str, np.ndarray]:
    """The slots holding the first `max_steps` steps (plus the final slot right after, if any)."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}.")
    steps = np.cumsum(~slots["is_final"])
    cut = int(np.searchsorted(steps, max_steps, side="left")) + 1  # slots up to the max_steps-th step
    if cut < steps.shape[0] and slots["is_final"][cut]:
        cut += 1
    return {name: array[:cut] for name, array in slots.items()}


__all__ = [
    "DatasetBatch",
    "DatasetError",
    "DatasetWriter",
    "FIELDS",
    "FixedReplayBuffer",
    "epsilon_greedy_probability",
    "iter_chunks",
    "load_dataset",
    "open_run_recorder",
    "read_manifest",
    "slot_layout",
]
