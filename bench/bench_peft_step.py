"""Benchmark: one training step (forward + backward + AdamW) of a BERT-base-sized encoder on CPU.

Compares full fine-tuning, plain peft LoRA (routing ``none``) and routed LoRA for every routing kind, at batch
16 × (32 tokens + 1 visual prefix token) with one pooled visual vector as the routing input. Peak RSS: each
configuration alone in a fresh subprocess. Time: median step, with the configurations' steps interleaved
round-robin in one subprocess so that load drift on a shared machine hits all of them alike. Prints JSON
(and writes it with ``--out``): times, peak RSS, trainable parameters, ratios and whether the targets hold:
every routed kind ≤ 1.10× plain LoRA time; LoRA ≤ 0.75× full fine-tuning time and ≤ 0.6× its peak memory.

    python bench/bench_peft_step.py            # full run (12 layers, 10 timed steps): minutes on 2 cores
    python bench/bench_peft_step.py --quick    # smoke run (1 layer, 2 timed steps)
    python bench/bench_peft_step.py --family gpt2  # GPT-2-sized: q/v thirds of c_attn, peft's whole c_attn
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROUTED = ["add", "mul", "mul_expand", "vl", "vl_relu"]
CONFIGS = ["full", "lora", *[f"lora_{k}" for k in ROUTED]]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class _Config:
    """One benchmark configuration: its model, optimizer and a fixed batch (built inside a subprocess)."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        import torch
        from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

        from vlpeft.config import PeftConfig
        from vlpeft.tuners import apply_peft

        torch.manual_seed(0)
        if args.family == "gpt2":  # GPT-2-small-sized decoder; LoRA on the q/v thirds of the fused c_attn
            cfg = GPT2Config(n_embd=768, n_layer=args.layers, n_head=12, n_positions=128)
            model = GPT2Model(cfg)
        else:
            cfg = BertConfig(
                vocab_size=30522,
                hidden_size=768,
                num_hidden_layers=args.layers,
                num_attention_heads=12,
                intermediate_size=3072,
            )
            model = BertModel(cfg, add_pooling_layer=False)
        if name == "full":
            peft_cfg = PeftConfig(method="full")
        elif name == "lora_peft":  # peft's own LoRA on the whole fused projection (GPT-2 only)
            peft_cfg = PeftConfig(method="lora", rank=args.rank, alpha=args.rank, fused_qkv="all")
        else:
            routing = name.split("_", 1)[1] if "_" in name else "none"
            peft_cfg = PeftConfig(method="lora", rank=args.rank, alpha=args.rank, routing=routing)
        self.model = apply_peft(model, peft_cfg, args.family).train()
        self.head = torch.nn.Linear(768, args.answers)  # a task head, trainable in every configuration
        self.params = [p for p in self.model.parameters() if p.requires_grad] + list(self.head.parameters())
        self.optim = torch.optim.AdamW(self.params, lr=1e-4)
        gen = torch.Generator().manual_seed(1)
        self.ids = torch.randint(0, cfg.vocab_size, (args.batch, args.tokens), generator=gen)
        self.visual = torch.randn(args.batch, 1, 768, generator=gen)
        self.target = torch.randint(0, args.answers, (args.batch,), generator=gen)
        self.mask = torch.ones(args.batch, args.tokens + 1, dtype=torch.long)

    def step(self) -> float:
        """One forward + backward + AdamW step; returns its wall time in seconds."""
        import torch

        from vlpeft.tuners import visual_context

        start = time.perf_counter()
        with visual_context(self.visual):
            embeds = self.model.get_input_embeddings()(self.ids)
            inputs = torch.cat([self.visual, embeds], dim=1)  # visual prefix token + text tokens
            hidden = self.model(inputs_embeds=inputs, attention_mask=self.mask).last_hidden_state
            loss = torch.nn.functional.cross_entropy(self.head(hidden[:, 0]), self.target)
            self.optim.zero_grad(set_to_none=True)
            loss.backward()
        self.optim.step()
        return time.perf_counter() - start


def run_memory(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of one configuration alone (fresh subprocess): build, then warm-up + 2 steps."""
    import torch

    torch.set_num_threads(args.threads)
    config = _Config(name, args)
    rss_build = _peak_rss_mb()
    times = [config.step() for _ in range(args.warmup + 2)]
    return {
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "rss_after_build_mb": round(rss_build, 1),
        "alone_last_step_s": round(times[-1], 4),
        "trainable": sum(p.numel() for p in config.params),
    }


def run_timing(names: list[str], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Median step time per configuration; steps interleaved round-robin so load drift hits all alike."""
    import torch

    torch.set_num_threads(args.threads)
    configs = {name: _Config(name, args) for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(args.warmup + args.steps):
        for name, config in configs.items():
            t = config.step()
            if i >= args.warmup:
                times[name].append(t)
    return {
        n: {"median_s": round(statistics.median(t), 4), "min_s": round(min(t), 4), "steps": len(t)}
        for n, t in times.items()
    }


def _spawn(mode: str, value: str, argv: list[str]) -> Any:
    cmd = [sys.executable, str(Path(__file__).resolve()), f"--{mode}", value, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"{mode} {value} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ratios against plain LoRA / full fine-tuning and the pass/fail of each target."""
    lora, full = results["lora"], results["full"]
    routed = {
        k: results[f"lora_{k}"]["median_s"] / lora["median_s"] for k in ROUTED if f"lora_{k}" in results
    }
    time_ratio = lora["median_s"] / full["median_s"]
    mem_ratio = lora["peak_rss_mb"] / full["peak_rss_mb"]
    extra = {}
    if "lora_peft" in results:  # our q/v-thirds layer (routing none) against peft's LoRA on the whole c_attn
        extra["lora_qv_time_vs_peft_c_attn"] = round(lora["median_s"] / results["lora_peft"]["median_s"], 3)
    return {
        **extra,
        "routed_time_vs_lora": {k: round(v, 3) for k, v in routed.items()},
        "lora_time_vs_full": round(time_ratio, 3),
        "lora_peak_rss_vs_full": round(mem_ratio, 3),
        "targets": {
            "routed_le_1.10x_lora": all(v <= 1.10 for v in routed.values()),
            "lora_time_le_0.75x_full": time_ratio <= 0.75,
            "lora_peak_rss_le_0.6x_full": mem_ratio <= 0.6,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 layer, 1 warm-up + 2 timed steps")
    parser.add_argument(
        "--layers", type=int, default=None, help="encoder layers (default 12; 1 with --quick)"
    )
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10; 2 with --quick)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 2; 1 with --quick)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32, help="text tokens (plus one visual prefix token)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--answers", type=int, default=100, help="output classes of the task head")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--family", choices=["bert", "gpt2"], default="bert", help="gpt2: fused c_attn, q/v thirds"
    )
    parser.add_argument("--configs", nargs="*", default=None, choices=[*CONFIGS, "lora_peft"])
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--memory", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--timing", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.layers = args.layers or (1 if args.quick else 12)
    args.steps = args.steps or (2 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    if args.configs is None:
        args.configs = CONFIGS + (["lora_peft"] if args.family == "gpt2" else [])
    if args.memory:
        print(json.dumps(run_memory(args.memory, args)))
        return
    if args.timing:
        print(json.dumps(run_timing(args.timing.split(","), args)))
        return
    shared = [
        f"--{k}={getattr(args, k)}"
        for k in ("layers", "steps", "warmup", "batch", "tokens", "rank", "answers", "threads", "family")
    ]
    results = {name: _spawn("memory", name, shared) for name in args.configs}
    for name, timing in _spawn("timing", ",".join(args.configs), shared).items():
        results[name].update(timing)
    report: dict[str, Any] = {
        "benchmark": "peft_train_step",
        "setup": {
            "model": f"{'GPT-2' if args.family == 'gpt2' else 'BERT'}-base-sized "
            f"(hidden 768, {args.layers} layers, random init)",
            "batch": args.batch,
            "tokens": f"{args.tokens} text + 1 visual prefix",
            "visual_routing_input": "pooled (m = 1)",
            "lora": {
                "rank": args.rank,
                "targets": "q, v thirds of c_attn (lora_peft: whole c_attn)"
                if args.family == "gpt2"
                else "query, value",
                "train_layernorm": True,
            },
            "optimizer": "AdamW",
            "threads": args.threads,
            "method": "peak RSS: each configuration alone in a fresh subprocess; time: median over steps "
            "interleaved round-robin across configurations in one subprocess (load drift hits all alike)",
        },
        "results": results,
    }
    if {"lora", "full"} <= results.keys():
        report["summary"] = summarise(results)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        from vlpeft.io import write_json

        write_json(args.out, report)


if __name__ == "__main__":
    main()
