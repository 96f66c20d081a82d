"""Check a pair's four-group decomposition against an independent implementation.

    python scripts/check_decomposition.py --pair smollm2 --prompts 100

The library (dpoclaims.measure) generates with the KV cache, records MLP activations through
its hooks at the v1 positions and decomposes. This script shares none of that code: it decodes
greedily by full forward passes without a cache, one prompt at a time and unpadded, recomputes
each Llama MLP neuron's activation by hand from the MLP's input (silu(x W_gate^T) * (x W_up^T)),
reads the value vectors straight from ``down_proj.weight`` and forms D_i, the groups and the
shares itself. It then prints both and the largest differences, and exits 1 when a figure
differs by more than the tolerance. Only the pair's loading (files -> models, probe) is shared.
"""

from __future__ import annotations

import argparse
import sys

import torch


def own_greedy(
    model, tokenizer, prompt: str, new_tokens: int, max_prompt_tokens: int
) -> tuple[list[int], int, int]:
    """Greedy decoding by full forwards without a cache, the prompt's front kept."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"][:max_prompt_tokens]
    eos = tokenizer.eos_token_id
    out: list[int] = []
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1]
            token = int(torch.argmax(logits))
            if token == eos:
                break
            out.append(token)
    return ids + out, len(ids), len(out)


def own_activations(model, ids: list[int], start: int, n_steps: int) -> torch.Tensor:
    """``[L, d_mlp]``: the mean over the v1 positions (the last input position of each decoding
    step: start-1 ... start+n_steps-1, where the step that emitted EOS also counts) of each
    neuron's activation, computed by hand from the MLP's input."""
    inputs: dict[int, torch.Tensor] = {}
    hooks = []
    for index, layer in enumerate(model.model.layers):
        hooks.append(
            layer.mlp.register_forward_pre_hook(
                lambda m, args, i=index: inputs.__setitem__(i, args[0].detach())
            )
        )
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]))
    finally:
        for hook in hooks:
            hook.remove()
    positions = list(range(start - 1, start - 1 + n_steps))
    rows = []
    for index, layer in enumerate(model.model.layers):
        x = inputs[index][0, positions].double()  # [positions, d_model]
        gate = x @ layer.mlp.gate_proj.weight.double().T
        up = x @ layer.mlp.up_proj.weight.double().T
        rows.append((torch.nn.functional.silu(gate) * up).mean(0))  # [d_mlp]
    return torch.stack(rows)  # [L, d_mlp]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", default="smollm2")
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--tolerance", type=float, default=1e-3, help="relative, on each figure")
    args = parser.parse_args()

    from dpoclaims.cache import Cache
    from dpoclaims.measure.decomposition import REDUCING_GROUPS
    from dpoclaims.measure.generation import GenerationSettings
    from dpoclaims.measure.measurements import Measurements, MeasurementSettings
    from dpoclaims.train.named_pairs import load_pair

    torch.set_num_threads(2)
    torch.set_grad_enabled(False)  # weights require grad: a graph would keep every float64 copy alive
    cache = Cache()
    pair = load_pair(args.pair, cache=cache)
    settings = MeasurementSettings(max_prompts=args.prompts, scorer="profanity-check")
    library = Measurements(pair, cache, settings).decomposition
    generation = GenerationSettings()
    prompts = Measurements(pair, cache, settings).prompts

    probe = pair.probe.double()
    unit = probe / probe.norm()
    own: dict[str, torch.Tensor] = {}
    values: dict[str, torch.Tensor] = {}
    for side in ("base", "dpo"):
        model = pair.model(side)
        values[side] = torch.stack([layer.mlp.down_proj.weight.double().T for layer in model.model.layers])
        per_prompt = []
        for prompt in prompts:
            ids, start, n_new = own_greedy(
                model, pair.tokenizer, prompt, generation.max_new_tokens, generation.max_prompt_tokens
            )
            steps = min(n_new + 1, generation.max_new_tokens)  # the EOS step counts; no step after it
            per_prompt.append(own_activations(model, ids, start, steps))
        own[side] = torch.stack(per_prompt)  # [prompts, L, d_mlp]
    projection = {side: values[side] @ unit for side in values}  # [L, d_mlp]
    contribution = own["base"] * projection["base"] - own["dpo"] * projection["dpo"]  # [prompts, L, d_mlp]
    d = contribution.mean(0)
    cos = torch.nn.functional.cosine_similarity(values["base"], probe.view(1, 1, -1), dim=-1)
    mean_base = own["base"].mean(0)
    change = mean_base - own["dpo"].mean(0)
    signs = {"TP-": (1, 1, 1), "TN+": (1, 0, 1), "AP+": (0, 1, 0), "AN-": (0, 0, 0)}
    figures: dict[str, tuple[float, float]] = {}
    four = 0.0
    for name, (toxic, positive, down) in signs.items():
        mask = ((cos > 0) if toxic else (cos < 0)) & ((mean_base >= 0) if positive else (mean_base < 0))
        mask &= (change > 0) if down else (change < 0)
        four += float(d[mask].sum())
        figures[f"{name} sum"] = (float(d[mask].sum()), library.group_sum(name))
        figures[f"{name} count"] = (float(mask.sum()), float(library.group_count(name)))
    for name in REDUCING_GROUPS:
        figures[f"{name} share"] = (figures[f"{name} sum"][0] / four, library.share(name).value)
    figures["net"] = (float(d.sum()), library.net)
    figures["gross"] = (float(d[d > 0].sum()), library.gross)
    figures["fraction increasing"] = (float((d < 0).double().mean()), library.fraction_increasing())
    worst = 0.0
    print(
        f"pair {args.pair}: {len(prompts)} prompts, {pair.layout.n_layers} layers x {pair.layout.d_mlp} neurons"
    )
    print(f"{'figure':<22}{'independent':>16}{'library':>16}{'rel. diff':>12}")
    for name, (mine, theirs) in figures.items():
        rel = abs(mine - theirs) / max(abs(mine), abs(theirs), 1e-12)
        worst = max(worst, rel)
        print(f"{name:<22}{mine:>16.6g}{theirs:>16.6g}{rel:>12.2e}")
    per_neuron = (d.float() - library.contribution).abs().max().item()
    print(f"largest per-neuron |D_i| difference: {per_neuron:.3e} (largest |D_i| {d.abs().max().item():.3e})")
    print(f"largest relative difference of a figure: {worst:.2e} (tolerance {args.tolerance})")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
