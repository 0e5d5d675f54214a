"""Generation speed: our decode loop (`HFPolicy.generate`) against Hugging Face `model.generate`.

Both engines sample the same rollout batch from the same model: Countdown prompts x `--samples`
completions each (16 x 8 = 128 sequences by default), temperature 1.0, no top-k / top-p, at most
`--max-new-tokens` new tokens, with the model in eval mode and torch's default thread count.

By default the model is the built-in tiny model with fresh random weights and the end token is switched
off in both engines, so every row generates exactly `--max-new-tokens` tokens and both engines do the
same amount of work. `--model DIR --keep-eos` measures a trained model instead, where rows end at
different lengths (there our loop also drops finished rows from the batch, which `generate` does not).

After one warm-up call each, the engines alternate for `--reps` repetitions (the order flips every
repetition, so drift on a shared machine hits both alike); tokens/s are medians over repetitions.
The last line is `ours_tok_s=<x> hf_tok_s=<y> speedup=<x/y>`.

    .venv/bin/python bench/generate.py                    # ~20 s on 2 cores
    .venv/bin/python bench/generate.py --samples 32 --reps 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import GenerationConfig  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from selfimprove.policy.base import SamplingParams  # noqa: E402
from selfimprove.policy.hf import HFPolicy  # noqa: E402
from selfimprove.policy.tiny import build_tiny_model  # noqa: E402
from selfimprove.tasks.countdown import CountdownConfig, CountdownTask  # noqa: E402

from common import write_result  # noqa: E402


class NoEosPolicy(HFPolicy):
    """Our engine with the end token switched off: every row runs to `max_new_tokens`."""

    @property
    def eos_ids(self) -> list[int]:
        return []


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16, help="distinct Countdown prompts per batch (default 16)")
    ap.add_argument("--samples", type=int, default=8, help="completions per prompt (default 8: 128 sequences)")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions of each engine, alternating (default 5)")
    ap.add_argument("--preset", choices=["default", "small", "medium", "large"], default="default", help="built-in tiny model size")
    ap.add_argument("--model", type=Path, default=None, help="a local HF model folder instead of a fresh tiny model")
    ap.add_argument("--keep-eos", action="store_true", help="let the end token finish rows (use with a trained --model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-as", default=None,
                    help="write bench/results/<name>.{md,json} (default generate_fixed_length, or generate_early_stop "
                         "with --keep-eos); '-' writes nothing")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(args.seed)
    policy_cls = HFPolicy if args.keep_eos else NoEosPolicy
    if args.model is not None:
        loaded = HFPolicy.load(args.model, seed=args.seed)
        policy = policy_cls(loaded.model, loaded.tokenizer, seed=args.seed)
        source = str(args.model)
    else:
        model, tokenizer = build_tiny_model(args.preset, seed=args.seed)
        policy = policy_cls(model, tokenizer, seed=args.seed)
        source = f"built-in tiny model ({args.preset}, random weights)"
    model, tokenizer = policy.model, policy.tokenizer
    model.eval()
    tokenizer.padding_side = "left"

    task = CountdownTask(CountdownConfig())
    prompts = [p.prompt for p in task.problems("train", args.prompts)]
    rows = args.prompts * args.samples
    params = SamplingParams(n=args.samples, temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    eos_ids = policy.eos_ids if args.keep_eos else None
    gen_config = GenerationConfig(
        do_sample=True,
        temperature=args.temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=args.max_new_tokens,
        num_return_sequences=args.samples,
        pad_token_id=policy.pad_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_ids,
    )

    def ours() -> int:
        return sum(c.num_tokens for c in policy.generate(prompts, params))

    def hf() -> int:
        enc = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
        with torch.no_grad():
            out = model.generate(**enc, generation_config=gen_config)
        new = out[:, enc.input_ids.shape[1] :]
        if not eos_ids:
            return new.numel()
        # Tokens up to and including each row's first end token (generate pads rows that finished).
        is_end = torch.isin(new, torch.tensor(eos_ids, device=new.device))
        first = torch.where(is_end.any(1), is_end.int().argmax(1) + 1, torch.full_like(is_end[:, 0], new.shape[1], dtype=torch.long))
        return int(first.sum())

    engines = {"ours": ours, "hf": hf}
    print(
        f"generation: {source}, {args.prompts} prompts x {args.samples} samples = {rows} sequences, "
        f"max {args.max_new_tokens} new tokens, temperature {args.temperature}, "
        f"end token {'on' if args.keep_eos else 'off (fixed length)'}, torch threads {torch.get_num_threads()}"
    )
    for fn in engines.values():  # warm-up
        fn()
    rates: dict[str, list[float]] = {k: [] for k in engines}
    tokens: dict[str, list[int]] = {k: [] for k in engines}
    for rep in range(args.reps):
        order = list(engines) if rep % 2 == 0 else list(reversed(engines))
        line = []
        for name in order:
            start = time.perf_counter()
            n = engines[name]()
            seconds = time.perf_counter() - start
            rates[name].append(n / seconds)
            tokens[name].append(n)
            line.append(f"{name} {seconds:.3f}s {n} tok {n / seconds:,.0f} tok/s")
        print(f"rep {rep + 1}/{args.reps}: " + " | ".join(line), flush=True)
    ours_rate, hf_rate = statistics.median(rates["ours"]), statistics.median(rates["hf"])
    print(
        f"median tokens/s: ours {ours_rate:,.0f}, hf generate {hf_rate:,.0f} "
        f"(tokens per call: ours {statistics.mean(tokens['ours']):.0f}, hf {statistics.mean(tokens['hf']):.0f})"
    )
    name = args.save_as or ("generate_early_stop" if args.keep_eos else "generate_fixed_length")
    if name != "-":
        case = "early stop (rows end at their end token)" if args.keep_eos else "fixed length (end token off)"
        write_result(name, f"Decoding against Hugging Face `generate`, {case} (bench/generate.py)", {
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "model": source, "sequences": rows, "tok_s": {"ours": rates["ours"], "hf": rates["hf"]},
            "tokens_per_call": {"ours": tokens["ours"], "hf": tokens["hf"]},
            "median_tok_s": {"ours": ours_rate, "hf": hf_rate}, "speedup": ours_rate / hf_rate,
        }, [f"{source}; {rows} sequences ({args.prompts} prompts x {args.samples}), at most {args.max_new_tokens} new "
            f"tokens, temperature {args.temperature}; {args.reps} alternating repetitions after a warm-up each.", "",
            "| engine | median tok/s | tok/s per repetition |", "|---|---:|---|",
            *(f"| {k} | {statistics.median(v):,.0f} | {', '.join(f'{r:,.0f}' for r in v)} |" for k, v in rates.items()), "",
            f"Speedup (ours / generate): **{ours_rate / hf_rate:.2f}x**."])
    print(f"ours_tok_s={ours_rate:.1f} hf_tok_s={hf_rate:.1f} speedup={ours_rate / hf_rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
