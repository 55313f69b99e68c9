"""Throughput of a DPO round: preference pairs built per second and pairs trained per second.

    python benchmarks/dpo_round.py [--rollouts 8] [--epochs 2] [--batch-size 32 ...] [--device auto ...]
                                   [--amp bf16 ...] [--sampled] [--tiny] [--threads N] [--repeat] [--no-warmup] [--json]

(with the project installed, `pip install -e .`, or `PYTHONPATH=.` from the repository root).

Writes synthetic takeover clips (tests/test_train_synthetic.py: a parked car the policy drives into,
the expert stops for) into a fresh SQLite store in a temporary folder, with the BEV shape of the
network under test (conf/policy.yaml, or the tests' tiny network with --tiny), then runs
`dpo_round` from a randomly initialised checkpoint. Reported per configuration: pairs, optimiser
steps, training samples/s (forward + backward + step of policy and reference, data loading included,
evaluation excluded; TrainResult.samples_per_s), pair-building time and the round's wall time.
--device, --amp and --batch-size take several values: every combination runs, and the last column is
its training throughput relative to the first row. --repeat runs each combination twice with the same
seed and reports whether the two rounds' weights are bit-identical (LoopConfig.deterministic).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
# The synthetic clip writer is shared with the tests (one synthetic world).
sys.path.insert(0, str(REPO / "tests"))

from test_train_synthetic import (  # noqa: E402
    TINY_POLICY,
    open_store,
    random_checkpoint,
    write_synthetic_run,
)

from takeover.datasets import FeatureSpec, PairSource  # noqa: E402
from takeover.dpo import DPOConfig, dpo_round  # noqa: E402
from takeover.policy.checkpoint import load_checkpoint  # noqa: E402
from takeover.policy.config import load_policy_config  # noqa: E402
from takeover.preferences import PairConfig, build_preference_pairs  # noqa: E402
from takeover.training import LoopConfig, resolve_precision  # noqa: E402


def weights_digest(checkpoint: Path) -> str:
    """sha256 over the model's tensors alone (the checkpoint file also holds its creation time)."""
    model, _, _ = load_checkpoint(checkpoint)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def bench(
    args: argparse.Namespace, sources: list[str], device: str, amp: str, batch_size: int
) -> dict[str, object]:
    policy_config = TINY_POLICY if args.tiny else replace(load_policy_config(), device="cpu")
    spec = FeatureSpec.of(policy_config)
    with tempfile.TemporaryDirectory(prefix="dpo-bench-") as tmp:
        root = Path(tmp)
        store = open_store(root)
        t0 = time.perf_counter()
        write_synthetic_run(
            store,
            "bench",
            demos=0,
            rollouts=args.rollouts,
            bev_shape=(spec.channels, spec.size_px, spec.size_px),
        )
        write_s = time.perf_counter() - t0
        parent = random_checkpoint(root / "parent.pt", seed=0, config=policy_config)
        pairs = PairConfig(sources=sources, stride_frames=1, num_samples=args.samples)
        precision = resolve_precision(device, amp)
        # Pair building timed on its own (the round then finds them stored and builds nothing new).
        t0 = time.perf_counter()
        reference, _, _ = load_checkpoint(parent)
        report = build_preference_pairs(
            store, "bench", 0, pairs, spec, reference.to(precision.device), precision.device
        )
        build_s = time.perf_counter() - t0
        loop = LoopConfig(
            epochs=args.epochs, batch_size=batch_size, device=device, amp=amp, tensorboard=False,
            runs_dir=str(root / "runs"), log_every_steps=10,
        )  # fmt: skip
        config = DPOConfig(loop=loop, pairs=pairs, num_workers=args.workers)
        result = dpo_round(store, "bench", 0, parent, config)
        repeat = {}
        if args.repeat:
            again = dpo_round(store, "bench", 0, parent, replace(config, round_prefix="dpo-repeat"))
            same = weights_digest(result.checkpoint_path) == weights_digest(again.checkpoint_path)
            repeat = {"repeat_identical": same}
        store.close()
    return {
        "network": "tiny" if args.tiny else "conf/policy.yaml",
        "bev": f"{spec.channels}x{spec.size_px}x{spec.size_px}",
        "sources": "+".join(sources),
        "device": str(precision.device),
        "precision": precision.name,
        "batch": batch_size,
        "threads": torch.get_num_threads(),
        "pairs": result.n_samples,
        "steps": result.steps,
        "train_pairs_per_s": round(result.samples_per_s, 1),
        "pair_build_s": round(build_s, 2),
        "pairs_built_per_s": round(report.total / build_s, 1) if build_s > 0 else None,
        "round_wall_s": round(result.wall_s, 2),
        "clip_write_s": round(write_s, 2),
        "eval_rewards/margins": round(result.metrics["eval_rewards/margins"], 4),
        **repeat,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rollouts", type=int, default=8, help="synthetic takeover episodes (11 pairs each)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[32])
    parser.add_argument("--device", nargs="+", default=["auto"])
    parser.add_argument("--amp", nargs="+", default=["bf16"], choices=["off", "bf16", "fp16"])
    parser.add_argument("--samples", type=int, default=16, help="plans sampled per state (sampled_safety)")
    parser.add_argument("--sampled", action="store_true", help="also build and train sampled_safety pairs")
    parser.add_argument(
        "--tiny", action="store_true", help="the tests' 2x16x16 network instead of conf/policy.yaml"
    )
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument(
        "--repeat", action="store_true", help="run each round twice with one seed: are the weights identical?"
    )
    parser.add_argument(
        "--no-warmup", dest="warmup", action="store_false", help="skip the untimed warm-up round"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line per row instead of a table")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    runs = [[PairSource.EXPERT_VS_POLICY.value]]
    if args.sampled:
        runs.append([PairSource.EXPERT_VS_POLICY.value, PairSource.SAMPLED_SAFETY.value])
    combos, seen = [], set()
    for sources, device, amp, batch in itertools.product(runs, args.device, args.amp, args.batch_size):
        precision = resolve_precision(device, amp)
        key = (tuple(sources), str(precision.device), precision.name, batch)
        if key not in seen:  # CPU runs float32 whatever --amp says: one row for it, not three
            seen.add(key)
            combos.append((sources, device, amp, batch))
    if args.warmup:  # CUDA context, cuBLAS handles and allocator caches, kept out of the first row
        bench(argparse.Namespace(**{**vars(args), "rollouts": 1, "repeat": False}), *combos[0])
    results: list[dict[str, object]] = []
    for combo in combos:
        row = bench(args, *combo)
        results.append(row)
        row["x_first"] = round(float(row["train_pairs_per_s"]) / float(results[0]["train_pairs_per_s"]), 2)
        if args.json:  # one line per row as it finishes: a long matrix shows progress and survives a kill
            print(json.dumps(row), flush=True)
    if args.json:
        return 0
    table = Table(title="DPO round throughput")
    for column in results[0]:
        table.add_column(column, justify="right")
    for row in results:
        table.add_row(*(str(v) for v in row.values()))
    Console(width=250).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
