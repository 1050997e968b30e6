"""One trainer for every dictionary kind: streams global batches, Adam with warm-up and linear
decay, gradient clipping, dead-latent tracking, JSONL logs, atomic checkpoints with exact resume,
data parallelism across `torchrun` ranks (see ddp.py).

The data source is a `BatchStream` (streams.py): `stream(start)` yields the global batches number
start, start + 1, ... as float tensors [batch, n_sources, d]. Batch number i is used at step i,
so resuming at step i only needs `stream(i)`; the trainer never holds more than one batch. A
stream split into rank parts (`parts` = the number of ranks; a model stream under torchrun)
yields only this rank's rows of batch i, which the trainer uses as they come.

Output folder layout:
    config.json, weights.safetensors   the final dictionary (crosscoders.io)
    training.json                      both configs (+ `data`: what a stream reads, given);
                                       a different one refuses to reuse the folder
    log.jsonl                          one line per logged step (also sent to wandb / tensorboard
                                       with `log_to`: wandb/ or tensorboard/ beside it)
    checkpoints/latest.json            name of the newest complete checkpoint
    checkpoints/step-00001000/         state.safetensors (weights, Adam moments, counters, RNG)
                                       + state.json (step, tokens consumed, optimizer
                                       hyper-parameters)

Faults lose nothing. One process writes a folder (`interp.fileio.writer_lock`: a second is
refused at once). Every result is written durably (interp.fileio: fsync, then rename). The end of
a run is: the last steps, the BatchTopK theta calibration, the final checkpoint (step n_steps),
then the dictionary; a rerun after a kill anywhere in it resumes from the newest checkpoint and
writes the dictionary, the same bytes as an uninterrupted run (`INTERP_TEST_KILL_AT` names a point
of that window where a test kills the process). A torn last line of `log.jsonl` is dropped on
resume. A loss that is not finite stops the run before the optimizer step, naming the step and
the batch, with the last checkpoint intact and nothing else written.
"""

import json
import os
import shutil
import signal
import time
from contextlib import ExitStack
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm

from crosscoders import ddp
from crosscoders.activations import ACTIVATIONS
from crosscoders.config import CrossCoderConfig, TrainingConfig
from crosscoders.crosscoder import CrossCoder, LossOutput
from crosscoders.init import initialize
from crosscoders.io import CONFIG_FILE, WEIGHTS_FILE, save_crosscoder
from crosscoders.losses import fraction_of_variance_explained
from crosscoders.streams import BatchStream
from crosscoders.tracking import make_tracker
from interp.errors import InterpError
from interp.fileio import (
    TMP_MARK,
    atomic_write_json,
    atomic_write_text,
    guard_config,
    read_json,
    replace_dir,
    writer_lock,
)

KILL_AT_ENV = "INTERP_TEST_KILL_AT"
# points of the end-of-training window where a test can SIGKILL the run (see `_kill_point`)
KILL_POINTS = ("before-calibration", "before-final-checkpoint", "before-dictionary")
RESULT_FILES = (WEIGHTS_FILE, CONFIG_FILE, "eval.json")  # what --overwrite removes with the run


def _kill_point(name: str) -> None:
    """Test hook: SIGKILL this process here if `INTERP_TEST_KILL_AT` names this point (a kill
    leaves no chance to clean up, like a crash or an out-of-memory kill)."""
    assert name in KILL_POINTS, name
    if os.environ.get(KILL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def training_precision(precision: str, device: torch.device) -> str:
    """`TrainingConfig.precision` on `device`: `auto` is bf16 on CUDA and float32 elsewhere (CPU
    autocast gains little and the project's CPU reference numbers are float32); tf32 is float32
    off CUDA."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "float32"
    if precision == "tf32" and device.type != "cuda":
        return "float32"
    return precision


def learning_rate(step: int, config: TrainingConfig) -> float:
    """Linear warm-up over `warmup_steps`, constant, then linear decay to 0 from
    `decay_start * n_steps` to `n_steps`."""
    warmup = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps > 0 else 1.0
    decay_from = int(config.decay_start * config.n_steps)
    if step < decay_from or decay_from >= config.n_steps:
        return config.lr * warmup
    return config.lr * warmup * (config.n_steps - step) / (config.n_steps - decay_from)


def stream_parts(stream: BatchStream) -> int:
    """1 for a stream of global batches; N for one that yields this rank's rows of each global
    batch from its own part of the data (streams.py), which needs exactly N ranks."""
    parts = int(getattr(stream, "parts", 1))
    if parts > 1 and parts != ddp.world_size():
        raise InterpError(
            f"the activation stream is split into {parts} rank parts but {ddp.world_size()} "
            "ranks run: expected one part per rank"
        )
    return parts


def take_sample(stream: BatchStream, n_tokens: int) -> Tensor:
    """The first `n_tokens` rows of the global stream (for b_dec and the input scales): the same
    sample on every rank, gathered from the ranks' rows when each streams its own part."""
    gather = stream_parts(stream) > 1
    rows, have = [], 0
    for batch in stream(0):
        if gather:
            batch = ddp.all_gather_cat(batch)  # on the rank's device (gloo: cpu, nccl: its GPU)
        rows.append(batch.cpu())
        have += batch.shape[0]
        if have >= n_tokens:
            break
    if not rows:
        raise InterpError("the activation stream is empty: expected at least one batch")
    return torch.cat(rows)[:n_tokens]


class Trainer:
    def __init__(
        self,
        coder_config: CrossCoderConfig,
        training: TrainingConfig,
        stream: BatchStream,
        out_dir: Path,
        device: str | torch.device = "cpu",
        progress: bool = True,
        overwrite: bool = False,
        data: dict[str, Any] | None = None,
        log_to: str | None = None,  # also send the log records to "wandb" | "tensorboard"
    ) -> None:
        if not ACTIVATIONS[coder_config.activation].trainable:
            raise InterpError(
                f"activation {coder_config.activation!r} cannot be trained: train batchtopk and "
                "export it as jumprelu"
            )
        if training.batch_size % ddp.world_size():
            raise InterpError(
                f"batch_size = {training.batch_size} is not divisible by {ddp.world_size()} ranks"
            )
        self.coder_config, self.training = coder_config, training
        self.stream, self.out_dir, self.device = stream, Path(out_dir), torch.device(device)
        self.local_stream = stream_parts(stream) > 1  # it yields this rank's rows already
        self.precision = training_precision(training.precision, self.device)
        self.data = data  # what the stream reads (e.g. a streamed run's models and token plan)
        self.progress = progress and ddp.rank() == 0
        self.log_to = log_to
        self.coder = CrossCoder(coder_config).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.coder.parameters(), lr=training.lr, betas=training.adam_betas
        )
        self.step = 0
        self.tokens_consumed = 0  # rows of every batch trained on, counted (checkpointed)
        self.tokens_since_fired = torch.zeros(
            coder_config.dict_size, dtype=torch.long, device=self.device
        )
        self.last_checkpoint_step: int | None = None
        self._writer = ExitStack()  # holds the folder's writer lock (rank 0) until train() ends
        self._locked = False
        try:
            self._lock_out_dir()
            self._claim_out_dir(overwrite)
            if not self._resume():
                self._truncate_log()  # a run killed before its first checkpoint starts over
                torch.manual_seed(training.seed)
                sample = take_sample(stream, training.init_sample_tokens)
                generator = torch.Generator().manual_seed(training.seed)
                # on the CPU with a CPU generator, so an accelerator run starts from the same
                # weights
                self.coder.cpu()  # Module.to keeps the Parameter objects the optimizer holds
                initialize(
                    self.coder, sample, generator, training.b_dec_init, training.normalize_inputs
                )
                self.coder.to(self.device)
        except BaseException:
            self._unlock_out_dir()
            raise

    # --- run folder, checkpoints ----------------------------------------------------------------

    def _run_description(self) -> dict[str, Any]:
        description = {
            "crosscoder": self.coder_config.to_dict(),
            "training": self.training.to_dict(),
        }
        if self.data is not None:
            description["data"] = self.data
        return description

    def _lock_out_dir(self) -> None:
        """Be the only process writing the output folder (rank 0; the ranks of one run share it)
        until `train` returns; a second one is refused at once with one line."""
        if ddp.rank() != 0 or self._locked:
            return
        try:
            self._writer.enter_context(writer_lock(self.out_dir, "dictionary folder"))
        except OSError as error:
            raise InterpError(
                f"cannot write the output folder {str(self.out_dir)!r}: {error.strerror}"
            ) from None
        self._locked = True

    def _unlock_out_dir(self) -> None:
        self._writer.close()
        self._locked = False

    def _claim_out_dir(self, overwrite: bool) -> None:
        path = self.out_dir / "training.json"
        if path.exists():
            saved = read_json(path)  # through the configs: fields added since get their defaults
            previous = {
                "crosscoder": CrossCoderConfig.from_dict(saved["crosscoder"]).to_dict(),
                "training": TrainingConfig.from_dict(saved["training"]).to_dict(),
            }
            if "data" in saved:
                previous["data"] = saved["data"]
            if guard_config(path, self._run_description(), overwrite, "a run", previous):
                if ddp.rank() == 0:
                    shutil.rmtree(self.out_dir / "checkpoints", ignore_errors=True)
                    (self.out_dir / "log.jsonl").unlink(missing_ok=True)
                    for name in RESULT_FILES:  # the old run's dictionary is no result of this one
                        (self.out_dir / name).unlink(missing_ok=True)
        ddp.barrier()
        if ddp.rank() == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, self._run_description())
            for stale in self.checkpoint_dir.glob(f".step-*{TMP_MARK}*"):
                shutil.rmtree(stale)  # a checkpoint being written when a run was killed
        ddp.barrier()

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    def save_checkpoint(self) -> Path:
        """Write `checkpoints/step-N/` in a temp folder, fsync it and rename it (interp.fileio),
        then point latest.json at it; a crash at any moment leaves the previous checkpoint
        intact."""
        name = f"step-{self.step:08d}"
        final = self.checkpoint_dir / name
        if ddp.rank() == 0:
            tmp = self.checkpoint_dir / f".{name}{TMP_MARK}{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            optimizer_state = self.optimizer.state_dict()
            tensors = {f"coder.{k}": v for k, v in self.coder.state_dict().items()}
            for index, state in optimizer_state["state"].items():
                tensors.update({f"optimizer.{index}.{k}": v for k, v in state.items()})
            tensors["tokens_since_fired"] = self.tokens_since_fired
            tensors["rng.torch"] = torch.get_rng_state()
            # plain writes: the folder is fsynced and renamed whole below
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                      str(tmp / "state.safetensors"))  # fmt: skip
            atomic_write_json(
                tmp / "state.json",
                {
                    "step": self.step,
                    "batches_consumed": self.step,
                    "tokens_consumed": self.tokens_consumed,
                    "optimizer_param_groups": optimizer_state["param_groups"],
                    **self._run_description(),
                },
            )
            shutil.rmtree(
                final, ignore_errors=True
            )  # not the latest: latest.json names an older step
            replace_dir(tmp, final)
            atomic_write_json(
                self.checkpoint_dir / "latest.json", {"checkpoint": name, "step": self.step}
            )
            kept = sorted(p for p in self.checkpoint_dir.glob("step-*") if p.is_dir())
            for old in kept[: -self.training.keep_checkpoints]:
                shutil.rmtree(old)
        ddp.barrier()
        self.last_checkpoint_step = self.step
        return final

    def _resume(self) -> bool:
        latest = self.checkpoint_dir / "latest.json"
        if not latest.exists():
            return False
        folder = self.checkpoint_dir / read_json(latest)["checkpoint"]
        state = read_json(folder / "state.json")
        tensors = load_file(str(folder / "state.safetensors"))
        self.coder.load_state_dict(
            {k.removeprefix("coder."): v for k, v in tensors.items() if k.startswith("coder.")}
        )
        optimizer_state: dict[str, Any] = {
            "state": {},
            "param_groups": state["optimizer_param_groups"],
        }
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                optimizer_state["state"].setdefault(int(index), {})[name] = value
        self.optimizer.load_state_dict(optimizer_state)
        self.tokens_since_fired.copy_(tensors["tokens_since_fired"])
        torch.set_rng_state(tensors["rng.torch"])
        self.step = int(state["step"])
        self.tokens_consumed = int(
            state.get("tokens_consumed", self.step * self.training.batch_size)
        )
        self.last_checkpoint_step = self.step
        self._truncate_log()
        return True

    def _truncate_log(self) -> None:
        """Drop log lines of steps after the checkpoint (they will be run again) and a torn last
        line (a crash or a full disk while it was appended); a damaged line before it is an
        error naming it."""
        log = self.out_dir / "log.jsonl"
        if ddp.rank() != 0 or not log.exists():
            return
        lines = log.read_bytes().decode(errors="replace").splitlines()
        kept = []
        for number, line in enumerate(lines, start=1):
            try:
                step = json.loads(line)["step"]
            except (json.JSONDecodeError, KeyError, TypeError):
                if number == len(lines):
                    break  # the torn tail
                raise InterpError(
                    f"{str(log)!r}: line {number} is not a log record (damaged): delete that "
                    "line (or the file) and rerun to resume"
                ) from None
            if step <= self.step:
                kept.append(line)
        atomic_write_text(log, "".join(line + "\n" for line in kept))

    # --- training -------------------------------------------------------------------------------

    def local_rows(self, batch: Tensor) -> Tensor:
        """This rank's rows of a batch of the stream (all of it when the stream yields them)."""
        return batch if self.local_stream else ddp.local_rows(batch)

    def train_step(self, batch: Float[Tensor, "batch n_sources d"]) -> LossOutput:
        """One optimizer step on a global batch (this rank uses its rows)."""
        config = self.training
        x = self.local_rows(batch).to(self.device, torch.float32)
        dead = self.tokens_since_fired >= config.dead_after_tokens
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, config)
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
        ):  # the forward only: backward runs each op in the dtype its forward used
            out = self.coder.loss(x, dead, sparse=None if config.sparse_kernels else False)
        self._stop_unless_finite(out, x)
        self.optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        parameters = list(self.coder.parameters())
        ddp.average_gradients(parameters)
        if self.coder_config.unit_norm_decoder:
            self.coder.remove_decoder_gradient_along_decoder()
        torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        self.optimizer.step()
        if self.coder_config.unit_norm_decoder:
            self.coder.normalize_decoder()
        with torch.no_grad():
            fired = ddp.all_reduce_max(out.fired.to(torch.int32)).bool()
            # every rank checked that its rows are its share (_train_steps), so the ranks'
            # rows sum to the global batch
            rows = x.shape[0] * ddp.world_size()
            self.tokens_since_fired += rows
            self.tokens_consumed += rows
            self.tokens_since_fired[fired] = 0
            if out.min_kept_g is not None:
                self.coder.update_inference_threshold(out.min_kept_g, self.step)
        self.step += 1
        return out

    def _stop_unless_finite(self, out: LossOutput, x: Tensor) -> None:
        """Stop before the update if the loss of any rank is NaN or inf: one line naming the step
        and the batch (and, for a cache, its shards); the folder keeps the last checkpoint and
        nothing of this step. One flag all-reduced per step (the ranks stop together)."""
        bad = ddp.all_reduce_max((~out.total.detach().isfinite()).to(torch.int32))
        if not bool(bad):
            return
        describe = getattr(self.stream, "describe", None)
        origin = f", {describe(self.step)}" if describe is not None else ""
        cause = (
            "the batch holds NaN or inf activations: check the data"
            if not bool(x.isfinite().all())
            else "the batch is finite, so the training diverged: lower --lr"
        )
        kept = (
            f"keeps the checkpoint of step {self.last_checkpoint_step}: fix the cause, then rerun "
            "to resume from it"
            if self.last_checkpoint_step is not None
            else "holds no checkpoint yet: fix the cause, then rerun"
        )
        raise InterpError(
            f"the loss is {float(out.total)} at step {self.step + 1} of {self.training.n_steps} "
            f"(batch number {self.step} of the stream{origin}): training stopped before the "
            f"update; {cause}; {str(self.out_dir)!r} {kept}"
        )

    @torch.no_grad()
    def calibrate_threshold(self) -> None:
        """BatchTopK at the end of training: theta <- the mean, over the last
        `threshold_calibration_batches` training batches, of the batch cutoff (the smallest kept
        g = f_j s_j, global over ranks) under the final weights: Bussmann et al.'s
        theta = E_B[min kept g] for the model that is saved. The EMA of the cutoff lags the
        weights by ~1 / (1 - beta) = 1000 steps, so on a run of a few hundred steps it still holds
        its first values (SAE benchmark, 150 steps: theta 0.49 vs a final cutoff of 0.40, held-out
        L0 22.5 for k = 32)."""
        n_batches = min(self.training.threshold_calibration_batches, self.training.n_steps)
        if "threshold" not in self.coder.activation.buffers or n_batches == 0:
            return
        self.coder.train()  # the training rule: each batch's top k*B and its cutoff
        cutoffs = []
        for batch in islice(self.stream(self.training.n_steps - n_batches), n_batches):
            x = self.coder.scale(self.local_rows(batch).to(self.device, torch.float32))
            selection = self.coder.select(torch.relu(self.coder.pre_activations(x)))
            if selection.min_kept_g is not None:  # None: no positive g in the batch
                cutoffs.append(selection.min_kept_g)
        if cutoffs:
            self.coder.get_buffer("threshold").copy_(torch.stack(cutoffs).mean())

    def metrics(self, out: LossOutput) -> dict[str, float]:
        """Scalars of one step, averaged over ranks."""
        with torch.no_grad():
            values = {
                "loss": out.total.detach(),
                **{f"loss_{name}": term.detach() for name, term in out.terms.items()},
                "l0": out.l0,
                "dead_fraction": (self.tokens_since_fired >= self.training.dead_after_tokens)
                .float()
                .mean(),
            }
            fve = fraction_of_variance_explained(out.x, out.x_hat)
            values["fve"] = fve.mean()
            for m, value in enumerate(fve):
                values[f"fve_{self._source_name(m)}"] = value
            names = list(values)
            stacked = (
                ddp.all_reduce_sum(torch.stack([values[n].float() for n in names]))
                / ddp.world_size()
            )
        result = dict(zip(names, stacked.tolist(), strict=True))
        if "threshold" in self.coder.activation.buffers:
            result["threshold"] = float(self.coder.get_buffer("threshold"))
        return result

    def _source_name(self, m: int) -> str:
        sources = self.coder_config.sources
        return sources[m].name if sources and sources[m].name else str(m)

    def train(self) -> CrossCoder:
        """Train to `n_steps` (from the resumed step), then write the dictionary; a run that is
        already at `n_steps` (killed after its final checkpoint) only writes the dictionary."""
        self._lock_out_dir()
        matmul_precision = torch.get_float32_matmul_precision()
        try:
            if self.device.type == "cuda" and self.precision != "float32":
                torch.set_float32_matmul_precision("high")  # TF32 tensor cores for float32 matmuls
            if self.step < self.training.n_steps:
                self._train_steps()
                _kill_point("before-calibration")
                self.calibrate_threshold()
                _kill_point("before-final-checkpoint")
                self.save_checkpoint()
            self._write_dictionary()
        finally:
            torch.set_float32_matmul_precision(matmul_precision)
            self._unlock_out_dir()
        return self.coder.eval()

    def _write_dictionary(self) -> None:
        """config.json + weights.safetensors of the final state (the state of the final
        checkpoint, so a rerun writes the same bytes)."""
        _kill_point("before-dictionary")
        if ddp.rank() == 0:
            save_crosscoder(self.coder, self.out_dir)
        ddp.barrier()

    def _train_steps(self) -> None:
        config = self.training
        log_path = self.out_dir / "log.jsonl"
        bar = tqdm(
            total=config.n_steps * config.batch_size,
            initial=self.step * config.batch_size,
            unit="tok",
            unit_scale=True,
            disable=not self.progress,
            desc="train",
        )
        started, started_step = time.perf_counter(), self.step
        tracker = make_tracker(
            self.log_to if ddp.rank() == 0 else None,
            self.out_dir,
            {"crosscoder": self.coder_config.to_dict(), "training": self.training.to_dict()},
        )
        self.coder.train()
        expected_rows = config.batch_size // ddp.world_size() if self.local_stream else None
        for batch in islice(self.stream(self.step), config.n_steps - self.step):
            if batch.shape[0] != (expected_rows or config.batch_size):
                share = f" / {ddp.world_size()} ranks" if expected_rows else ""
                raise InterpError(
                    f"batch {self.step} has {batch.shape[0]} rows: expected batch_size = "
                    f"{config.batch_size}{share}"
                )
            out = self.train_step(batch)
            bar.update(config.batch_size)
            if self.step % config.log_every == 0 or self.step == config.n_steps:
                record = {
                    "step": self.step,
                    "tokens": self.tokens_consumed,
                    "lr": learning_rate(self.step - 1, config),
                    **self.metrics(out),
                }
                elapsed = time.perf_counter() - started
                record["tokens_per_s"] = (
                    (self.step - started_step) * config.batch_size / max(elapsed, 1e-9)
                )
                bar.set_postfix(fve=f"{record['fve']:.3f}", l0=f"{record['l0']:.1f}")
                if ddp.rank() == 0:
                    with log_path.open("a") as handle:
                        handle.write(json.dumps(record) + "\n")
                    tracker.log(record)
            if self.step % config.checkpoint_every == 0 and self.step < config.n_steps:
                self.save_checkpoint()
        bar.close()
        tracker.close()
        if self.step < config.n_steps:
            raise InterpError(
                f"the activation stream ended after {self.step} batches of {config.batch_size}: "
                f"expected n_steps = {config.n_steps}; lower the steps or the batch size"
            )
