"""Record and edit MLP neuron activations through plain PyTorch hooks on the Hugging Face model.

A TransformerBridge (TransformerLens 4.x) wraps the model it is given *in place*: it replaces
the HF modules (embeddings, blocks, attention, MLP, every linear layer) inside that model by
bridge components that call the original module, fire HookPoints around it and hold it as
``original_component``. Every forward then goes through several Python layers per module,
which on a small model (or a GPU, where decoding is bound by per-op overhead) costs about as
much as the arithmetic. The bridge stays the place for naming, weights (``W_in``, ``W_out``)
and the hook points users write their own claims with; the passes that generate (captures,
interventions) can instead run the raw HF modules:

- :func:`raw_model` rebuilds the HF module tree with the bridge components replaced by the
  modules they wrap. Nothing is copied: every module shares the parameter and buffer
  *dictionaries* of the module it mirrors, so in-place weight edits (key scaling), a weight
  assignment and ``.to(device)`` on the bridge are all seen by the raw model.
- :func:`neuron_hooks` attaches forward pre-hooks to the modules whose input the bridge names
  ``blocks.L.mlp.hook_post`` (GPT-2: ``mlp.c_proj``; Llama/Mistral/Gemma/Qwen:
  ``mlp.down_proj``), so a callable sees each layer's neuron activation
  ``[batch, seq, d_mlp]`` and may replace it.
- :class:`LastPositionRecorder` accumulates, per prompt, the activation at the last position
  of every forward (the v1 capture convention) with no device work on most steps.
"""

from __future__ import annotations

import copy
import functools
import types
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from transformers import PreTrainedModel

from dpoclaims.errors import PairMismatchError
from dpoclaims.models import MLPLayout

# A layer's edit: receives the neuron activation [batch, seq, d_mlp]; returns a replacement
# tensor (ablation, patching) or None (recording). It must not modify its argument in place.
NeuronEdit = Callable[[torch.Tensor], "torch.Tensor | None"]

# Where the decoder layers live in the supported causal LMs, and the MLP module whose input is
# the neuron activation, by MLP kind (GPT-J's output projection is ``fc_out``).
LAYER_LIST_PATHS = ("transformer.h", "model.layers", "model.language_model.layers")
NEURON_INPUT_MODULES = {"gpt2": ("c_proj", "fc_out"), "gated": ("down_proj",)}

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


def _is_bridge_component(module: torch.nn.Module) -> bool:
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    return isinstance(module, GeneralizedComponent)


def _unwrapped(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` itself, or the HF module a bridge component wraps."""
    while _is_bridge_component(module):
        original = module.original_component
        if original is None:
            raise PairMismatchError(
                f"bridge component {type(module).__name__} wraps no Hugging Face module; "
                "this TransformerBridge cannot be unwrapped into a plain model"
            )
        module = original
    return module


def _mirror(module: torch.nn.Module, mirrors: dict[int, torch.nn.Module]) -> torch.nn.Module:
    """A module object that runs ``module``'s own forward on mirrors of its children, sharing
    its parameters and buffers (the same dictionaries, hence the same tensors)."""
    module = _unwrapped(module)
    if id(module) in mirrors:  # a module reachable twice stays one module
        return mirrors[id(module)]
    mirror = copy.copy(module)  # a new __dict__ whose values are module's own objects
    mirrors[id(module)] = mirror
    # The hooks of the module at this moment (e.g. accelerate's dispatch hooks) carry over;
    # hooks registered later on either model stay on that model.
    for name in _HOOK_DICTS:
        if name in module.__dict__:
            mirror.__dict__[name] = OrderedDict(module.__dict__[name])
    # Instance attributes bound to the module (accelerate replaces ``forward`` by a partial of
    # its hook over the module and keeps the class forward as ``_old_forward``) must run on
    # the mirror, whose children are unwrapped.
    for name, value in module.__dict__.items():
        if isinstance(value, types.MethodType) and value.__self__ is module:
            mirror.__dict__[name] = types.MethodType(value.__func__, mirror)
        elif isinstance(value, functools.partial) and value.args and value.args[0] is module:
            rebound = functools.partial(value.func, mirror, *value.args[1:], **value.keywords)
            mirror.__dict__[name] = functools.update_wrapper(rebound, value)
    mirror.__dict__["_modules"] = OrderedDict(
        (name, None if child is None else _mirror(child, mirrors)) for name, child in module._modules.items()
    )
    return mirror


def raw_model(bridge: Any, *, attn_implementation: str | None = None) -> PreTrainedModel:
    """The Hugging Face model inside ``bridge``, without the bridge's wrapping.

    Zero weight copies: each module of the result shares its parameter and buffer
    dictionaries with the HF module it mirrors, so the tensors are the bridge's own (same
    ``data_ptr``), in-place changes and re-assignments of weights on either are seen by both,
    and so is ``bridge.to(device)``. Only the module objects are new (a few KB). Hooks
    registered on one model later are not seen by the other.

    By default the result shares the bridge model's config, so it runs the attention the bridge
    runs (the bridge switches its model to eager attention so that pattern hooks fire).
    ``attn_implementation`` (e.g. ``"sdpa"``) gives the result a config of its own with that
    attention instead, leaving the bridge as it is.
    """
    original = bridge.original_model if hasattr(bridge, "original_model") else bridge
    if not isinstance(original, PreTrainedModel):
        raise PairMismatchError(
            f"expected a TransformerBridge or a Hugging Face PreTrainedModel, not {type(bridge).__name__}"
        )
    mirrors: dict[int, torch.nn.Module] = {}
    mirror = _mirror(original, mirrors)
    assert isinstance(mirror, PreTrainedModel)
    if attn_implementation is not None:
        _own_config(mirror, original.config, mirrors.values())
        mirror.set_attn_implementation(attn_implementation)
    return mirror


def _own_config(mirror: PreTrainedModel, shared: Any, modules: Any) -> None:
    """Give ``mirror``'s modules a copy of the config (and sub-configs) they share with the
    bridge's model, so that changing it leaves the bridge's model as it is."""
    config = copy.deepcopy(shared)
    replacements = {id(shared): config}
    for key in getattr(shared, "sub_configs", {}):
        if getattr(shared, key, None) is not None:
            replacements[id(getattr(shared, key))] = getattr(config, key)
    for module in modules:
        current = module.__dict__.get("config")
        if current is not None and id(current) in replacements:
            module.__dict__["config"] = replacements[id(current)]


def _layer_list(model: torch.nn.Module) -> torch.nn.ModuleList:
    for path in LAYER_LIST_PATHS:
        current: Any = model
        for part in path.split("."):
            current = current._modules.get(part) if isinstance(current, torch.nn.Module) else None
            if current is None:
                break
        if isinstance(current, torch.nn.ModuleList):
            return current
    raise PairMismatchError(
        f"cannot find the decoder layers of {type(model).__name__} (looked at {', '.join(LAYER_LIST_PATHS)})"
    )


def neuron_activation_modules(model: torch.nn.Module, layout: MLPLayout) -> list[torch.nn.Module]:
    """Per layer, the module whose input is the neuron activation (what the bridge calls
    ``blocks.L.mlp.hook_post``): GPT-2's ``mlp.c_proj``, a gated MLP's ``mlp.down_proj``.

    ``model`` must be a raw HF model (see :func:`raw_model`), not a bridge-wrapped one.
    """
    if _is_bridge_component(model) or any(_is_bridge_component(m) for m in model.children()):
        raise PairMismatchError(
            "this model is wrapped by a TransformerBridge; hook raw_model(bridge) instead"
        )
    layers = _layer_list(model)
    if len(layers) != layout.n_layers:
        raise PairMismatchError(
            f"{type(model).__name__} has {len(layers)} layers, the layout {layout.n_layers}"
        )
    names = NEURON_INPUT_MODULES[layout.kind]
    modules = []
    for index, layer in enumerate(layers):
        if _is_bridge_component(layer):
            raise PairMismatchError(
                "this model is wrapped by a TransformerBridge; hook raw_model(bridge) instead"
            )
        mlp = layer._modules.get("mlp")
        found = [mlp._modules[name] for name in names if mlp is not None and name in mlp._modules]
        if not found:
            raise PairMismatchError(
                f"layer {index} of {type(model).__name__} has no mlp.{' or mlp.'.join(names)} "
                f"(the neuron activation of a {layout.kind!r} MLP is its input)"
            )
        modules.append(found[0])
    return modules


def _pre_hook(layer: int, edit: NeuronEdit) -> Callable[[torch.nn.Module, tuple[Any, ...]], Any]:
    def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not args:
            raise PairMismatchError(
                f"layer {layer}: {type(module).__name__} was called without a positional input, "
                "so its neuron activation cannot be hooked"
            )
        replacement = edit(args[0])
        return None if replacement is None else (replacement, *args[1:])

    return hook


@contextmanager
def neuron_hooks(
    model: torch.nn.Module, layout: MLPLayout, edits: Mapping[int, NeuronEdit]
) -> Iterator[None]:
    """Call ``edits[layer]`` on that layer's neuron activation ``[batch, seq, d_mlp]`` in every
    forward of ``model`` (a raw HF model) inside the block; hooks are removed on exit, also
    on an error. An edit returns a replacement or None. Nested blocks chain: an inner
    block's edits see what the outer block's edits returned (so a recorder nested inside an
    ablation records post-intervention values)."""
    modules = neuron_activation_modules(model, layout)
    bad = [layer for layer in edits if not 0 <= layer < layout.n_layers]
    if bad:
        raise PairMismatchError(f"layers {bad} are out of range (the model has {layout.n_layers})")
    handles = []
    try:
        for layer, edit in edits.items():
            handles.append(modules[layer].register_forward_pre_hook(_pre_hook(layer, edit)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def set_neurons(indices: torch.Tensor, values: torch.Tensor) -> NeuronEdit:
    """An edit that sets neurons ``indices`` to ``values`` (one value each, or one for all)
    at every position; the values follow the activation's device and dtype."""
    cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def edit(activation: torch.Tensor) -> torch.Tensor:
        key = (activation.device, activation.dtype)
        if key not in cache:
            cache[key] = (
                indices.to(activation.device),
                values.to(device=activation.device, dtype=activation.dtype),
            )
        index, value = cache[key]
        activation = activation.clone()
        activation[..., index] = value
        return activation

    return edit


class LastPositionRecorder:
    """Per-prompt sums of each layer's neuron activation at the last position of every forward,
    skipping rows that have finished: the v1 capture convention during ``generate``.

    A row is finished once its input is ``eos_token_id`` in a decoding step (a one-token
    forward), so the step that *emits* EOS is still counted, as in :mod:`dpoclaims.capture`.

    Cost: a decoding step does no tensor work at all, neither per layer nor per step; the
    hooks only keep references to the step's input ids and to each layer's activation
    (``[batch, 1, d_mlp]``; the prompt step keeps a one-position copy instead of its
    ``[batch, seq, d_mlp]``). Every ``fold_every`` steps, and when the sums are read, the kept
    values are reduced into float64 sums on their device with one ``einsum`` per layer.
    That equals a float64 running sum of the same float32 values.

    Use::

        recorder = LastPositionRecorder(layout, batch_size, eos_token_id)
        with recorder.attached(model):
            model.generate(...)
        sums, counts = recorder.sums(), recorder.counts()  # CPU float64
    """

    def __init__(
        self, layout: MLPLayout, batch_size: int, eos_token_id: int | None, fold_every: int = 32
    ) -> None:
        if fold_every < 1:
            raise ValueError(f"fold_every must be >= 1, not {fold_every}")
        self.layout = layout
        self.batch_size = batch_size
        self.eos_token_id = eos_token_id
        self.fold_every = fold_every
        self._activations: list[list[torch.Tensor]] = [
            [] for _ in range(layout.n_layers)
        ]  # [batch, 1, d_mlp]
        self._step_inputs: list[torch.Tensor] = []  # per forward, its input ids [batch, seq]
        self._finished: torch.Tensor | None = None  # [batch] bool: rows done before the kept steps
        self._sums: torch.Tensor | None = None  # [batch, n_layers, d_mlp] float64, on the device
        self._counts: torch.Tensor | None = None  # [batch] float64

    def _before_model_forward(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        step_ids = kwargs.get("input_ids", args[0] if args else None)
        if step_ids is None:
            raise PairMismatchError(
                "LastPositionRecorder needs input_ids (generation from embeddings is not supported)"
            )
        if step_ids.shape[0] != self.batch_size:
            raise PairMismatchError(
                f"a recorder made for {self.batch_size} rows saw a batch of {step_ids.shape[0]}"
            )
        if len(self._step_inputs) >= self.fold_every:
            self._fold()
        self._step_inputs.append(step_ids)

    def _record(self, layer: int) -> NeuronEdit:
        kept = self._activations[layer]

        def edit(activation: torch.Tensor) -> None:
            # A decoding step's activation is kept as it is; a view into the prompt step's
            # [batch, seq, d_mlp] would keep all of it alive, so that one is copied.
            kept.append(activation if activation.shape[1] == 1 else activation[:, -1:].clone())

        return edit

    def _counted_steps(self) -> torch.Tensor:
        """``[batch, steps]`` bool: True where a kept step counts (its row not yet finished)."""
        finished = self._finished
        if finished is None:
            finished = torch.zeros(self.batch_size, dtype=torch.bool, device=self._step_inputs[0].device)
        if self.eos_token_id is None:
            finished_at = finished[:, None].expand(-1, len(self._step_inputs))  # [batch, steps]
        else:
            # A decoding step fed EOS finishes its row; a multi-token (prompt) step never does.
            fed_eos = torch.stack(
                [
                    ids[:, 0] == self.eos_token_id if ids.shape[1] == 1 else torch.zeros_like(finished)
                    for ids in self._step_inputs
                ],
                dim=1,
            )  # [batch, steps]
            finished_at = finished[:, None] | (fed_eos.cumsum(dim=1) > 0)
        self._finished = finished_at[:, -1]
        return ~finished_at

    def _fold(self) -> None:
        if not self._step_inputs:
            return
        if any(len(kept) != len(self._step_inputs) for kept in self._activations):
            raise PairMismatchError(
                "the neuron hooks did not fire once per layer per forward: is the recorder attached "
                "to the model that runs?"
            )
        counted = self._counted_steps()  # [batch, steps]
        layer_sums = []
        for kept in self._activations:
            values = torch.cat(kept, dim=1)  # [batch, steps, d_mlp], the activations' dtype
            # x * 1 and x * 0 are exact in any dtype, and the sum accumulates in float64: the
            # same as a float64 running sum, without a float64 copy of the values.
            values.mul_(counted[:, :, None].to(values.dtype))
            layer_sums.append(values.sum(dim=1, dtype=torch.float64))  # [batch, d_mlp]
        folded = torch.stack(layer_sums, dim=1)  # [batch, n_layers, d_mlp]
        counts = counted.sum(dim=1, dtype=torch.float64)  # [batch]
        self._sums = folded if self._sums is None else self._sums + folded
        self._counts = counts if self._counts is None else self._counts + counts
        for kept in self._activations:
            kept.clear()
        self._step_inputs.clear()

    @contextmanager
    def attached(self, model: torch.nn.Module) -> Iterator[LastPositionRecorder]:
        """Record every forward of ``model`` (a raw HF model) inside the block."""
        handle = model.register_forward_pre_hook(self._before_model_forward, with_kwargs=True)
        try:
            edits = {layer: self._record(layer) for layer in range(self.layout.n_layers)}
            with neuron_hooks(model, self.layout, edits):
                yield self
        finally:
            handle.remove()

    def sums(self) -> torch.Tensor:
        """``[batch, n_layers, d_mlp]`` float64 on the CPU."""
        self._fold()
        if self._sums is None:
            return torch.zeros(self.batch_size, self.layout.n_layers, self.layout.d_mlp, dtype=torch.float64)
        return self._sums.cpu()

    def counts(self) -> torch.Tensor:
        """``[batch]`` float64 on the CPU: the number of positions summed per row."""
        self._fold()
        if self._counts is None:
            return torch.zeros(self.batch_size, dtype=torch.float64)
        return self._counts.cpu()

    def means(self) -> torch.Tensor:
        """``[batch, n_layers, d_mlp]`` float32 on the CPU: per-row mean over counted positions."""
        return (self.sums() / self.counts().clamp(min=1)[:, None, None]).float()
