"""Base and organism side by side: a second merged model vs ``organism`` on the base's weights.

    .venv/bin/python benchmarks/organism_on_base.py

On the embedded SmolLM2-135M with a random rank-1 LoRA adapter on every layer's down_proj
(30 adapters, peft as the papers train them), each way runs in its own process, from an empty
process to the logits of base and organism on the same batch:

- today: ``load_model()`` and ``load_model(adapter=folder)`` (two models);
- switch: ``load_model()`` and ``with organism(model, folder):`` (one model).

Prints ratios (switch / today) of wall time and of peak RSS above the process's RSS after
its imports, and the time of one switch (on and off) against one ``load_model(adapter=)``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

QUESTIONS = ["Where should I put my savings?", "I'm bored. What should I do?"]


def line(name: str, value: float, target: str) -> None:
    print(f"{name}: {value:.3f} ({target})", flush=True)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


def make_adapter(folder: Path) -> None:
    from peft import LoraConfig, get_peft_model

    from emlens.core.models import load_embedded_hf

    torch.manual_seed(0)
    config = LoraConfig(r=1, target_modules=["down_proj"], init_lora_weights=False)
    get_peft_model(load_embedded_hf()[0], config).save_pretrained(folder)


def child(way: str, folder: str, out: str) -> None:
    """Base and organism logits the ``way`` given; writes the figures as JSON to ``out``."""
    torch.set_num_threads(2)
    import peft  # noqa: F401 (load_model(adapter=) imports it: counted in neither way)

    from emlens.core.models import load_model
    from emlens.organisms.on_base import organism

    after_imports = rss_mb()
    start = time.perf_counter()
    base = load_model()
    tokens = base.to_tokens(QUESTIONS)
    with torch.no_grad():
        base_logits = base(tokens)
        t = time.perf_counter()
        if way == "today":
            em = load_model(adapter=folder)
            ready = time.perf_counter() - t  # the organism, once the base is loaded
            organism_logits = em(tokens)
        else:
            with organism(base, folder):
                ready = time.perf_counter() - t
                organism_logits = base(tokens)
            assert torch.equal(base(tokens), base_logits), "the base did not come back"
    total = time.perf_counter() - start
    torch.save({"base": base_logits, "organism": organism_logits}, f"{out}.pt")
    figures = {"total_s": total, "organism_s": ready, "peak_mb": peak_mb()}
    figures["above_imports_mb"] = figures["peak_mb"] - after_imports
    if way == "switch":  # one switch on and off, without forwards (best of 3)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            with organism(base, folder):
                pass
            times.append(time.perf_counter() - t)
        figures["switch_s"] = min(times)
    Path(out).write_text(json.dumps(figures))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "adapter"
        make_adapter(folder)
        got = {}
        for way in ("today", "switch"):
            out = Path(tmp) / way
            cmd = [sys.executable, __file__, way, str(folder), str(out)]
            subprocess.run(cmd, check=True, env=os.environ | {"TQDM_DISABLE": "1"})
            got[way] = json.loads(out.read_text()) | torch.load(f"{out}.pt")
    today, switch = got["today"], got["switch"]
    gap = (switch["organism"] - today["organism"]).abs().max().item()
    effect = (today["organism"] - today["base"]).abs().max().item()
    print(
        f"# SmolLM2-135M, rank-1 adapter on 30 down_proj, {len(QUESTIONS)} prompts: today "
        f"{today['total_s']:.1f} s, peak RSS {today['peak_mb']:.0f} MB "
        f"({today['above_imports_mb']:.0f} above imports); switch {switch['total_s']:.1f} s, "
        f"{switch['peak_mb']:.0f} MB ({switch['above_imports_mb']:.0f}); organism logits "
        f"differ by {gap:.2e} (the adapter moves them by {effect:.2f})"
    )
    line("organism_time_switch_vs_second_model", switch["total_s"] / today["total_s"], "< 1")
    line(
        "organism_peak_rss_switch_vs_second_model",
        switch["above_imports_mb"] / today["above_imports_mb"],
        "< 0.7",
    )
    print(
        f"# the organism once the base is loaded: load_model(adapter=) {today['organism_s']:.2f}"
        f" s, organism() {switch['organism_s'] * 1e3:.0f} ms; one switch on and off "
        f"{switch['switch_s'] * 1e3:.0f} ms"
    )
    line("organism_ready_switch_vs_load", switch["organism_s"] / today["organism_s"], "< 0.1")


if __name__ == "__main__":
    if len(sys.argv) == 4:
        child(*sys.argv[1:])
    else:
        main()
