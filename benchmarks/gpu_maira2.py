"""Steered generation at MAIRA-2 scale on a GPU: a randomly initialised model of MAIRA-2's published
shapes (Vicuna-7B Llama text model, RAD-DINO-sized Dinov2 tower, 4-layer projector; no weights
needed), bf16, through radsteer's own engine and hook.

It prints, measured side by side in one run:
- tokens/s of a sweep of B rows × N new tokens steered at layer 15 on all positions (α = ±10 on
  random unit directions) versus the same rows unsteered (α = 0, no hook), as paired ratios;
- the prefill / decode split (a 1-token run is the prefill; the rest is decode);
- peak GPU memory, and the largest batch that fits (OOM search over growing batches).

The last line is machine-readable:
    steer_overhead_gpu=X decode_tokens_per_s=Y prefill_s=Z peak_gib=P max_batch=M

    python benchmarks/gpu_maira2.py                       # MAIRA-2 shapes, needs a CUDA GPU
    python benchmarks/gpu_maira2.py --shapes tiny --device cpu --new-tokens 8   # smoke test of the code path

Random weights write random text: a random model rarely emits EOS, and EOS is disabled here anyway,
so every row generates exactly N tokens and the steered and plain runs do the same work.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

# This file is named like nothing in the packages, but keep benchmarks/ off the import path anyway.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from steering.adapters import ModelAdapter  # noqa: E402
from steering.engine import GenerationSettings, PlannedRow, SteeringEngine, SteeringSpec  # noqa: E402
from steering.feature_bank import FeatureBank  # noqa: E402
from steering.maira2.adapter import Maira2Adapter  # noqa: E402
from steering.maira2.config import config_from_dict  # noqa: E402
from steering.maira2.modeling import Maira2ForConditionalGeneration  # noqa: E402

IMAGE_TOKEN = 32204
# The official config.json's shapes (transformers 4.51.3 era), as docs/design.md records them.
MAIRA2_SHAPES: dict[str, Any] = {
    "model_type": "maira2", "image_token_index": IMAGE_TOKEN, "projector_n_layers": 4,
    "projector_hidden_act": "gelu", "multimodal_projector_bias": True, "vision_feature_layer": -1,
    "vision_feature_select_strategy": "default",
    "text_config": {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096,
                    "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 11008,
                    "vocab_size": 32207, "max_position_embeddings": 4096,
                    "rope_scaling": {"type": "linear", "factor": 1.5}},
    "vision_config": {"model_type": "dinov2", "num_hidden_layers": 12, "hidden_size": 768,
                      "num_attention_heads": 12, "image_size": 518, "patch_size": 14,
                      "apply_layernorm": True, "out_features": ["stage12"], "reshape_hidden_states": False,
                      "use_mask_token": True},
}
TINY_SHAPES: dict[str, Any] = {
    **MAIRA2_SHAPES,
    "text_config": {**MAIRA2_SHAPES["text_config"], "num_hidden_layers": 4, "hidden_size": 64,
                    "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 128},
    "vision_config": {**MAIRA2_SHAPES["vision_config"], "num_hidden_layers": 2, "hidden_size": 32,
                      "num_attention_heads": 2, "image_size": 56, "out_features": ["stage2"]},
}
TEXT_TOKENS = 160  # MAIRA-2's reporting prompt without images: system text, sections, instruction


class ShapeOnlyMaira2(ModelAdapter):
    """MAIRA-2's engine interface over synthetic inputs: the real vision tower, projector, image-token
    scatter (`Maira2Adapter.embed`), Llama and hook; only the tokenizer is replaced by fixed ids."""

    image_token_id = IMAGE_TOKEN
    embed = Maira2Adapter.embed

    def __init__(self, model: Maira2ForConditionalGeneration, images_per_case: int) -> None:
        super().__init__(model, tokenizer=None, name="maira-2-shaped-random")
        cfg = model.config
        self.image_size = cfg.vision_config.image_size
        self.tokens_per_image = cfg.tokens_per_image()
        self.images_per_case = images_per_case

    @property
    def pad_token_id(self) -> int:
        return 0

    @property
    def eos_token_ids(self) -> list[int]:
        return []  # every row runs to max_new_tokens: steered and plain runs do the same work

    def image_token_ids(self) -> set[int]:
        return {IMAGE_TOKEN}

    def prompt_ids(self, case: Mapping[str, Any]) -> list[int]:
        g = torch.Generator().manual_seed(int(case["seed"]))
        text = torch.randint(3, 32000, (TEXT_TOKENS,), generator=g).tolist()
        images = [IMAGE_TOKEN] * (self.tokens_per_image * self.images_per_case)
        return [1] + text[:40] + images + text[40:]

    @torch.inference_mode()
    def case_extras(self, case: Mapping[str, Any]) -> dict[str, Any]:
        g = torch.Generator().manual_seed(int(case["seed"]))
        pixels = torch.randn(self.images_per_case, 3, self.image_size, self.image_size, generator=g)
        features = self.model.image_features(pixels.to(self.device, self.dtype))
        return {"image_features": features, "n_images": self.images_per_case}

    def decode(self, token_ids: Sequence[int]) -> str:
        return " ".join(map(str, token_ids))


def build(shapes: dict[str, Any], device: str, dtype: torch.dtype) -> Maira2ForConditionalGeneration:
    config = config_from_dict(shapes, "benchmarks/gpu_maira2.py")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):  # initialise on the device: no 28 GB fp32 detour through host memory
            torch.manual_seed(0)
            model = Maira2ForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = None  # no early stop: every row does the same work
    return model.eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def rows_for(n_rows: int, cases: int, alpha: float) -> list[PlannedRow]:
    """n_rows rows spread over `cases` cases; α alternates sign (0 = unsteered)."""
    return [PlannedRow(f"c{i % cases}", "" if alpha == 0 else f"f{i % 4}", alpha * (1 if i % 2 else -1))
            for i in range(n_rows)]


def timed_generate(engine: SteeringEngine, cases: dict, rows: list[PlannedRow], device: str) -> float:
    sync(device)
    start = time.perf_counter()
    engine.generate(cases, rows)
    sync(device)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", choices=["maira2", "tiny"], default="maira2")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--cases", type=int, default=4, help="rows are spread over this many studies")
    parser.add_argument("--images", type=int, default=2, help="images per study (frontal + lateral)")
    parser.add_argument("--new-tokens", type=int, default=300)
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--alpha", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-batch-search", type=int, default=256,
                        help="largest batch tried when searching for the one that fits (0: skip the search)")
    args = parser.parse_args()

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("benchmarks/gpu_maira2.py needs a CUDA GPU (about 20 GB free for bf16 at MAIRA-2 scale, more for "
              "large batches), and this machine has none. On a CPU, `--shapes tiny --device cpu` checks the code "
              "path only.", file=sys.stderr)
        return 2
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    if args.device == "cpu":
        torch.set_num_threads(1)

    t0 = time.perf_counter()
    model = build(MAIRA2_SHAPES if args.shapes == "maira2" else TINY_SHAPES, args.device, dtype)
    adapter = ShapeOnlyMaira2(model, args.images)
    layer = min(args.layer, adapter.num_layers - 1)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {args.shapes} shapes, {n_params / 1e9:.2f} B parameters, {dtype}, built in "
          f"{time.perf_counter() - t0:.1f} s on {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))

    g = torch.Generator().manual_seed(1)
    directions = torch.randn(4, adapter.hidden_size, generator=g)
    bank = FeatureBank(decoder=directions / directions.norm(dim=1, keepdim=True), ids=[f"f{i}" for i in range(4)])
    cases = {f"c{i}": {"seed": i} for i in range(args.cases)}
    prompt_len = len(adapter.prompt_ids(cases["c0"]))
    spec = SteeringSpec(layer=layer, positions="all")

    def engine(batch: int, new_tokens: int) -> SteeringEngine:
        return SteeringEngine(adapter, bank, spec=spec, batch_size=batch,
                              settings=GenerationSettings(max_new_tokens=new_tokens))

    full, one = engine(args.rows, args.new_tokens), engine(args.rows, 1)
    steered, plain = rows_for(args.rows, args.cases, args.alpha), rows_for(args.rows, args.cases, 0.0)
    timed_generate(one, cases, steered, args.device)  # warm-up (kernels, allocator)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    pairs, prefill = [], {"plain": [], "steered": []}
    results = {"plain": [], "steered": []}
    for _ in range(args.repeats):  # interleaved: drift hits both sides alike
        for name, rows in (("plain", plain), ("steered", steered)):
            prefill[name].append(timed_generate(one, cases, rows, args.device))
            results[name].append(timed_generate(full, cases, rows, args.device))
        pairs.append(results["steered"][-1] / results["plain"][-1])
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")

    tokens = args.rows * args.new_tokens
    summary = {}
    for name in ("plain", "steered"):
        total, pre = statistics.median(results[name]), statistics.median(prefill[name])
        decode_tps = args.rows * (args.new_tokens - 1) / max(total - pre, 1e-9)
        summary[name] = (total, pre, decode_tps)
        print(f"{name:8s}: {args.rows} rows × {args.new_tokens} tokens (prompt {prompt_len} tokens, "
              f"{args.images} images/study): {total:.2f} s, {tokens / total:.1f} tokens/s overall; "
              f"prefill {pre:.2f} s; decode {decode_tps:.1f} tokens/s")
    overhead = statistics.median(pairs)
    print(f"steered / plain wall time, paired: {', '.join(f'{p:.3f}' for p in pairs)}")
    print(f"peak GPU memory (batch {args.rows}): {peak:.1f} GiB")

    max_batch = "n/a"
    if args.device.startswith("cuda") and args.max_batch_search > args.rows:
        fits, batch = args.rows, args.rows * 2
        while batch <= args.max_batch_search:
            try:
                timed_generate(engine(batch, args.new_tokens), cases, rows_for(batch, args.cases, args.alpha),
                               args.device)
                fits = batch
                print(f"  batch {batch}: fits (peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB)")
                batch *= 2
            except torch.cuda.OutOfMemoryError:
                print(f"  batch {batch}: out of memory")
                break
            finally:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
        max_batch = str(fits)
    print(f"steer_overhead_gpu={overhead:.3f} decode_tokens_per_s={summary['steered'][2]:.1f} "
          f"prefill_s={summary['steered'][1]:.2f} peak_gib={peak:.1f} max_batch={max_batch}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
