"""Checkpoints inside an experience, so that a continual run resumes at the training step, exactly.

While Avalanche's template trains on an experience it holds state that no ``state_dict`` reaches:
its data loader's iterator (a shuffled order drawn from the global torch RNG when the iterator is
made), and the iterators of Replay's memory loaders (inside its ``ReplayDataLoader``) and of A-GEM's
``GroupBalancedInfiniteDataLoader`` (which draws again whenever a group runs out). Rather than
pickling iterators, a resume replays them (:class:`StepCheckpoints`):

1. the experience starts again from the state it started from (the experience-level checkpoint of
   :mod:`framework.continual.state`, RNGs included, or the run's initial state), so Avalanche and
   its plugins make their loaders and buffers exactly as the first time;
2. the first ``n`` batches are fetched and dropped without training, and so are the memory samples
   of those steps (a plugin with ``skip_iteration(strategy)``: A-GEM), each draw seeing the RNG
   state it saw the first time (the tape, below);
3. the step checkpoint written before step ``n + 1`` is loaded: model, optimizer, every plugin's
   attributes, the clock, the global RNGs, and the partial state of the objects with
   ``step_state()`` / ``load_step_state(state, strategy)`` (the epoch's loss sums, the progress bar);
4. training continues with step ``n + 1``; steps 1..n are not trained again.

The tape (:class:`RngTape`): each draw point (making an epoch's iterator, fetching a batch, A-GEM's
memory sample) compares the global torch RNG with its state after the previous draw point; when
something else drew in between (dropout in a forward pass, a plugin), the state before the draw is
recorded. The fast-forward sets each draw point's RNG state to the recorded one, or else to the
state after the previous draw point, so it draws what the first run drew although it skips
everything in between. With no such draws (our models have no dropout) the tape is empty. Only the
torch generator is taped: torch's and Avalanche's loaders and samplers draw from it alone (python's
``random`` serves Avalanche's buffers at experience boundaries), and the python and numpy states are
set from the checkpoint at the restore like everything else. (Taping numpy's too would cost 0.15 ms
a step: ``np.random.get_state`` copies its whole state.)

Only the CPU generators are replayed: on CUDA, kernels and their RNG make a resumed run close to,
not equal to, an uninterrupted one (as for the experience-level checkpoints).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Optional

import torch
from avalanche.training.plugins import SupervisedPlugin

from framework.continual.state import load_strategy_state, strategy_state
from framework.errors import CheckpointError


class RngTape:
    """The torch RNG states before an experience's draw points, where something else drew since the
    previous one; replays them for the first ``replay`` draw points (about 20 us a draw point)."""

    def __init__(self, records: Optional[dict] = None, replay: int = 0):
        self.records: dict[int, torch.Tensor] = dict(records or {})  # draw point -> torch RNG state before it
        self.replay = replay
        self.point = 0
        self.after = torch.get_rng_state()  # after the last draw point (at first: when the experience set up)

    @contextmanager
    def draw(self):
        if self.point < self.replay:
            torch.set_rng_state(self.records.get(self.point, self.after))
        else:
            now = torch.get_rng_state()
            if not torch.equal(now, self.after):
                self.records[self.point] = now
        try:
            yield
        finally:  # a fetch that ends an epoch (StopIteration) is a draw point too
            self.after = torch.get_rng_state()
            self.point += 1


class _CountedLoader:
    """``strategy.dataloader`` as the template iterates it: every iterator made and batch fetched
    goes through the tape and :meth:`StepCheckpoints.next_batch`."""

    def __init__(self, loader, owner: "StepCheckpoints"):
        self.loader, self.owner, self.iterator = loader, owner, None

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name in ("loader", "owner", "iterator"):
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __iter__(self):
        with self.owner.tape.draw():
            self.iterator = iter(self.loader)
        return self

    def __next__(self):
        return self.owner.next_batch(self.iterator)


def _stepful(strategy) -> list:
    """The objects with state inside an experience beyond the plugins' attributes: plugins and the
    evaluator's metrics with ``step_state`` (in a fixed order)."""
    objects = [p for p in strategy.plugins if hasattr(p, "step_state")]
    objects += [m for m in getattr(strategy.evaluator, "metrics", []) if hasattr(m, "step_state")]
    return objects


class StepCheckpoints(SupervisedPlugin):
    """Hands a step checkpoint to ``save`` before every ``every``-th step of an experience (0: never)
    and, when :attr:`resume` holds one, continues the next experience from it (module docstring).

    A checkpoint is ``{"step", "draws", "tape", "strategy", "objects"}``: tensors and plain
    containers only, for ``save_torch`` / ``load_torch``. The caller adds what identifies it.
    """

    stateless = True  # framework.continual.state leaves it out of checkpoints

    def __init__(self, every: int, save: Optional[Callable[[dict], None]] = None):
        super().__init__()
        self.every, self.save = every, save
        self.resume: Optional[dict] = None  # a checkpoint to continue the next experience from
        self.strategy = None
        self.tape = RngTape()
        self.step, self.saved = 0, -1  # steps started in this experience; the step last checkpointed
        self.resumed_at: Optional[int] = None  # the step the last experience was resumed at (None: from its start)

    def before_training_exp(self, strategy, **kwargs):
        # after the strategy's own plugins: Replay has put its ReplayDataLoader in place
        resume = self.resume
        self.strategy, self.step, self.saved, self.resumed_at = strategy, 0, -1, None
        self.tape = RngTape(resume["tape"] if resume else None, resume["draws"] if resume else 0)
        strategy.dataloader = _CountedLoader(strategy.dataloader, self)
        for p in strategy.plugins:
            if hasattr(p, "rng_tape"):
                p.rng_tape = self.tape

    def after_training_exp(self, strategy, **kwargs):
        for p in strategy.plugins:
            if hasattr(p, "rng_tape"):
                p.rng_tape = None
        self.strategy = None

    def next_batch(self, iterator):
        strategy = self.strategy
        if self.resume is not None:
            while self.step < self.resume["step"]:
                with self.tape.draw():
                    next(iterator)  # StopIteration: an epoch skipped whole; the next one goes on skipping
                self.step += 1
                for p in strategy.plugins:
                    if hasattr(p, "skip_iteration"):
                        p.skip_iteration(strategy)
            self._restore(self.resume)
            self.resume = None
        elif self.every and self.save is not None and self.step and self.step % self.every == 0 \
                and self.step != self.saved:
            self.save(self.checkpoint())
            self.saved = self.step
        with self.tape.draw():
            batch = next(iterator)
        self.step += 1
        return batch

    def checkpoint(self) -> dict:
        """The state between two steps of the experience in training (before step ``self.step + 1``)."""
        strategy = self.strategy
        return {"step": self.step, "draws": self.tape.point, "tape": dict(self.tape.records),
                "strategy": strategy_state(strategy), "objects": [o.step_state() for o in _stepful(strategy)]}

    def _restore(self, checkpoint: dict) -> None:
        strategy = self.strategy
        if self.tape.point != checkpoint["draws"]:
            raise CheckpointError(f"a step checkpoint at step {checkpoint['step']} was taken after "
                                  f"{checkpoint['draws']} data draws, its replay made {self.tape.point}: the run "
                                  "does not draw its data as it did when it was written")
        load_strategy_state(strategy, checkpoint["strategy"], within_experience=True)
        objects = _stepful(strategy)
        if len(objects) != len(checkpoint["objects"]):
            raise CheckpointError("a step checkpoint's per-step state does not match this strategy's plugins")
        for obj, state in zip(objects, checkpoint["objects"]):
            obj.load_step_state(state, strategy)
        self.saved = self.resumed_at = checkpoint["step"]
