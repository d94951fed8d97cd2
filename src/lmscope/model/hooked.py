"""HookedModel: read and change the internals of an unmodified HF causal LM by TransformerLens hook names.

Hooks are plain PyTorch forward / pre-forward hooks attached for one call and removed on exit, also
when the call raises. Nothing is reimplemented, so with no hook changing anything the logits are the HF
model's, bit for bit. Attached dictionaries (`attach_dictionary`, `lmscope.model.dictionaries`) add their
feature activations as hook points, valid wherever hook names are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from lmscope.errors import InputError
from lmscope.model.adapters import Adapter, adapter_for
from lmscope.model.attention import PatternHook, pattern_hooks
from lmscope.model.config import ModelConfig
from lmscope.model.dictionaries import AttachedDictionary, dictionary_name, feature_hook, n_features
from lmscope.model.hookpoints import HookPoint, Site, layer_of, refuse_unknown
from lmscope.model.inputs import Inputs, TokenBatch, check_fits, to_token_batch, tokenizer_adds_bos

HookFn = Callable[..., Tensor | None]
"""`fn(tensor, *, hook: HookPoint) -> Tensor | None`; a returned tensor replaces the activation."""


class _StopForwardSignal(Exception):
    """Raised by the stop hook to end a forward pass early."""


class HookedModel:
    """An HF causal LM whose activations can be cached and changed by name.

    >>> m = HookedModel.from_pretrained("zoo:gpt2-tiny")
    >>> logits, cache = m.run_with_cache("Monday Tuesday", names=["blocks.0.mlp.hook_post"])
    """

    def __init__(self, hf_model: nn.Module, tokenizer: Any = None, *, prepend_bos: bool | None = None,
                 name: str | None = None) -> None:
        """`prepend_bos`: None = the tokenizer's own convention (True exactly when `tokenizer(text)` starts
        with its BOS); True = every string starts with a BOS; False = none does. `self.prepend_bos` is the
        result, which readers of activations use to leave position 0 out as an attention sink."""
        self.hf = hf_model.eval()
        self.tokenizer = tokenizer
        self.adapter: Adapter = adapter_for(hf_model)
        self.cfg: ModelConfig = self.adapter.cfg
        self.name = name or getattr(hf_model.config, "name_or_path", "") or self.cfg.model_type
        self._sites: dict[str, Site] = self.adapter.sites()
        self._dicts: dict[str, AttachedDictionary] = {}
        self._points: dict[str, AttachedDictionary] = {}  # feature hook point -> its dictionary
        self._adds_bos = tokenizer_adds_bos(tokenizer)
        if prepend_bos and tokenizer is not None and getattr(tokenizer, "bos_token_id", None) is None:
            raise InputError("prepend_bos=True: the tokenizer has no bos_token to prepend")
        self.prepend_bos: bool = self._adds_bos if prepend_bos is None else bool(prepend_bos)

    @classmethod
    def from_pretrained(cls, model: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu",
                        trust_remote_code: bool = False, progress: Callable[[int, int], None] | None = None,
                        prepend_bos: bool | None = None, allow_pickle: bool = False) -> HookedModel:
        """Load `zoo:NAME`, `real:NAME`, a local HF directory, a `.gguf` file (dequantized once and cached)
        or a Hugging Face hub id (`prepend_bos`: None = the tokenizer's convention, as in the constructor).
        Weights load from safetensors only unless `allow_pickle=True` (pickle files can run code)."""
        from lmscope.model.loading import load_hf

        hf_model, tokenizer, name = load_hf(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                                            progress=progress, allow_pickle=allow_pickle)
        return cls(hf_model, tokenizer, name=name, prepend_bos=prepend_bos)

    # --- names --------------------------------------------------------------------------------
    @property
    def hook_names(self) -> list[str]:
        """Every hook point of this model, in forward order (an attached dictionary's after its input)."""
        names: list[str] = []
        for name in self._sites:
            names.append(name)
            names += [p for d in self._dicts.values() if d.hook_in == name for p in d.points]
        return names

    def check_names(self, names: Sequence[str]) -> list[str]:
        """Return `names` as a list, refusing any the architecture lacks (naming the closest valid ones)."""
        if isinstance(names, str):
            names = [names]
        for name in names:
            if name not in self._sites and name not in self._points:
                missing = dictionary_name(name) if isinstance(name, str) else None
                if missing is not None:
                    raise InputError(f"dictionary {missing!r}: not attached to this model (hook point {name!r}); "
                                     f"attach it with lmscope.dictionary.attach.attach_dictionaries(model, "
                                     f"['dict:{missing}:0']) or model.attach_dictionary({missing!r}, dictionary)")
                raise refuse_unknown(name, self.hook_names)
        return list(names)

    # --- dictionaries -------------------------------------------------------------------------
    def attach_dictionary(self, name: str, dictionary: Any) -> str:
        """Attach an SAE or transcoder under `name`: `<name>.hook_sae_acts_post` (its feature activations
        `[batch, pos, d_sae]`) becomes a hook point, and `dict:<name>:i` units act on feature i. Nothing runs
        until that point is hooked, and the output changes only when a hook edits the features (see
        `lmscope.model.dictionaries`). Returns the feature hook point's name; re-attaching the same object
        under the same name is a no-op."""
        if isinstance(name, str) and name in self._dicts:
            if self._dicts[name].dictionary is dictionary:
                return feature_hook(name)
            raise InputError(f"name {name!r}: another dictionary is attached under this name; "
                             "detach_dictionary it first")
        attached = AttachedDictionary.make(name, dictionary, list(self._sites), self.hook_width)
        self._dicts[name] = attached
        self._points.update(dict.fromkeys(attached.points, attached))
        return feature_hook(name)

    def detach_dictionary(self, name: str) -> None:
        """Remove the dictionary attached under `name` (its hook points stop being valid)."""
        if name not in self._dicts:
            raise InputError(f"name {name!r}: no dictionary attached under this name "
                             f"(attached: {', '.join(self._dicts) or 'none'})")
        for point in self._dicts.pop(name).points:
            del self._points[point]

    @property
    def dictionaries(self) -> dict[str, Any]:
        """The attached dictionaries by name."""
        return {name: d.dictionary for name, d in self._dicts.items()}

    def hook_layer(self, hook_name: str) -> int | None:
        """The block a hook point is computed in (None outside the blocks); a feature point is computed where its
        dictionary reads, so a forward that starts at that block (from its cached `hook_resid_pre`) sees it."""
        self.check_names([hook_name])
        attached = self._points.get(hook_name)
        return layer_of(hook_name if attached is None else attached.hook_in)

    def hook_width(self, hook_name: str) -> int:
        """Width of one token's activation at a hook point: `d_mlp` for the MLP's neurons, `n_heads * d_head` for
        `hook_z` (flattened over heads), an attached dictionary's number of features for its feature point, and
        `d_model` for the rest (residual stream, sub-layer outputs, normalized inputs, embeddings)."""
        attached = self._points.get(hook_name)
        if attached is not None:
            return n_features(attached.dictionary)
        c = self.cfg
        if hook_name.endswith(("mlp.hook_pre", "mlp.hook_post")):
            return c.d_mlp
        return c.n_heads * c.d_head if hook_name.endswith("attn.hook_z") else c.d_model

    def dictionary_at(self, hook_name: str) -> Any:
        """The attached dictionary whose feature hook point is `hook_name`, or None for any other name."""
        attached = self._points.get(hook_name)
        return None if attached is None else attached.dictionary

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    # --- inputs -------------------------------------------------------------------------------
    def to_tokens(self, inputs: Inputs, *, prepend_bos: bool | None = None) -> TokenBatch:
        """Tokenize a string, a list of strings (right-padded, with a mask) or pass a token tensor through.

        Strings are encoded as `tokenizer(text)` does, with a BOS at position 0 exactly when `prepend_bos`
        (default `self.prepend_bos`) is true. A batch the model cannot take (longer than its context, or
        ids outside its vocabulary) is refused here, in one InputError line naming the limit, before any run;
        every run method and the causal engine tokenize through this method."""
        batch = self._tokenize(inputs, prepend_bos)
        check_fits(batch.input_ids, n_ctx=self.cfg.n_ctx, d_vocab=self.cfg.d_vocab)
        return batch

    def _tokenize(self, inputs: Inputs, prepend_bos: bool | None) -> TokenBatch:
        bos = self.prepend_bos if prepend_bos is None else prepend_bos
        return to_token_batch(inputs, self.tokenizer, prepend_bos=bos, device=self.device,
                              adds_bos=self._adds_bos)

    def to_str_tokens(self, text: str, *, prepend_bos: bool | None = None) -> list[str]:
        ids = self._tokenize(text, prepend_bos).input_ids[0].tolist()  # showing tokens needs no context limit
        return [self.tokenizer.decode([i]) for i in ids]

    # --- running ------------------------------------------------------------------------------
    def forward(self, inputs: Inputs, *, prepend_bos: bool | None = None) -> Tensor:
        """Plain logits `[batch, pos, d_vocab]`, no hooks."""
        return self.run_with_hooks(inputs, hooks=[], prepend_bos=prepend_bos)  # type: ignore[return-value]

    __call__ = forward

    def run_with_hooks(self, inputs: Inputs, hooks: Sequence[tuple[str, HookFn]] = (), *,
                       stop_at_layer: int | None = None, prepend_bos: bool | None = None) -> Tensor | None:
        """Run with `hooks` attached; several hooks on one name run in the order given.

        Returns logits `[batch, pos, d_vocab]`, or None when `stop_at_layer` ends the pass before them.
        Gradients flow unless the caller disables them.
        """
        batch = self.to_tokens(inputs, prepend_bos=prepend_bos)
        with self.hooks(hooks, stop_at_layer=stop_at_layer):
            return self._forward(batch, stop_at_layer)

    def run_with_cache(self, inputs: Inputs, names: Sequence[str] | None = None, *,
                       stop_at_layer: int | None = None, return_logits: bool = True,
                       hooks: Sequence[tuple[str, HookFn]] = (), grad: bool = False,
                       prepend_bos: bool | None = None) -> tuple[Tensor | None, dict[str, Tensor]]:
        """Run once and return `(logits, cache)`; the cache holds only `names` (all hook points if None).

        `return_logits=False` ends the forward pass as soon as the last name is captured. Captured
        tensors are detached unless `grad=True`; `hooks` run before capture, so the cache sees their edits.
        """
        names = self.hook_names if names is None else self.check_names(names)
        cache: dict[str, Tensor] = {}
        n_wanted = len(set(names))

        def capture(t: Tensor, *, hook: HookPoint) -> None:
            cache[hook.name] = t if grad else t.detach()
            if not return_logits and len(cache) == n_wanted:
                raise _StopForwardSignal  # everything asked for is captured: skip the rest of the model

        batch = self.to_tokens(inputs, prepend_bos=prepend_bos)
        all_hooks = [*hooks, *((n, capture) for n in names)]
        with torch.set_grad_enabled(grad), self.hooks(all_hooks, stop_at_layer=stop_at_layer):
            logits = self._forward(batch, stop_at_layer)
        return (logits if return_logits else None), cache

    def _forward(self, batch: TokenBatch, stop_at_layer: int | None) -> Tensor | None:
        # no padding: pass no mask, so attention keeps its causal fast path (an all-ones mask costs a 4D mask)
        mask = None if bool(batch.attention_mask.all()) else batch.attention_mask
        try:
            out = self.hf(input_ids=batch.input_ids, attention_mask=mask, use_cache=False)
        except _StopForwardSignal:
            return None
        return out.logits

    # --- hooks --------------------------------------------------------------------------------
    @contextmanager
    def hooks(self, hooks: Sequence[tuple[str, HookFn]] = (), *,
              stop_at_layer: int | None = None) -> Iterator[HookedModel]:
        """Attach `hooks` for the duration of the block; always removed on exit."""
        if isinstance(hooks, tuple) and len(hooks) == 2 and isinstance(hooks[0], str):
            hooks = [hooks]  # a single (name, fn) pair
        by_name: dict[str, list[HookFn]] = {}
        for entry in hooks:
            if not (isinstance(entry, tuple | list) and len(entry) == 2 and callable(entry[1])):
                raise InputError(f"hooks: expected (name, fn) pairs, got {entry!r}")
            name, fn = entry
            self.check_names([name])
            by_name.setdefault(name, []).append(fn)
        if stop_at_layer is not None:
            self._check_stop(stop_at_layer, by_name)
        by_name = self._route_dictionaries(by_name)
        with ExitStack() as stack:
            patterns: dict[nn.Module, PatternHook] = {}
            for name, fns in by_name.items():
                site, point = self._sites[name], HookPoint(name, layer_of(name))
                chained = _chain(fns, point, site)
                if site.kind == "pattern":
                    patterns[site.module] = chained
                else:
                    stack.callback(_attach(site, chained).remove)
            if stop_at_layer is not None and stop_at_layer < self.cfg.n_layers:
                block = self.adapter.blocks()[stop_at_layer]
                stack.callback(block.register_forward_pre_hook(_raise_stop).remove)
            stack.enter_context(pattern_hooks(self.hf, patterns))
            yield self

    def _route_dictionaries(self, by_name: dict[str, list[HookFn]]) -> dict[str, list[HookFn]]:
        """Hooks on feature points become a reader after the hooks on the dictionary's input and a writer
        before those on its output (an SAE's reader adds its edit itself, before the hooks on its point)."""
        out = {name: fns for name, fns in by_name.items() if name in self._sites}
        for attached in {id(d): d for name in by_name if (d := self._points.get(name))}.values():
            point = HookPoint(attached.points[0], layer_of(attached.hook_in))
            read, write = attached.hooks(by_name, point)
            if write is None:  # an SAE: read and edit before the hooks on its one hook point
                out.setdefault(attached.hook_in, []).insert(0, read)
            else:
                out.setdefault(attached.hook_in, []).append(read)
                out.setdefault(attached.hook_out, []).insert(0, write)
        return out

    def _reach(self, name: str) -> int:
        """The block a hook point belongs to (a feature point: the later of its dictionary's input and output)."""
        d = self._points.get(name)
        if d is not None:
            return max(_reach_layer(d.hook_in, self.cfg.n_layers), _reach_layer(d.hook_out, self.cfg.n_layers))
        return _reach_layer(name, self.cfg.n_layers)

    def _check_stop(self, stop_at_layer: int, by_name: dict[str, list[HookFn]]) -> None:
        if not isinstance(stop_at_layer, int) or not 0 <= stop_at_layer <= self.cfg.n_layers:
            raise InputError(f"stop_at_layer: expected an int in 0..{self.cfg.n_layers}, got {stop_at_layer!r}")
        late = [n for n in by_name if self._reach(n) >= stop_at_layer]
        if late:
            raise InputError(f"stop_at_layer={stop_at_layer}: hook point {late[0]!r} is never reached")

    # --- weights ------------------------------------------------------------------------------
    def _stack(self, fn: Callable[[int], Tensor]) -> Tensor:
        return torch.stack([fn(layer) for layer in range(self.cfg.n_layers)])

    @property
    def W_E(self) -> Tensor:
        """Token embedding `[d_vocab, d_model]`."""
        return self.adapter.W_E

    @property
    def W_U(self) -> Tensor:
        """Unembedding `[d_model, d_vocab]`."""
        return self.adapter.W_U

    @property
    def W_Q(self) -> Tensor:
        """`[layer, head, d_model, d_head]`."""
        return self._stack(lambda layer: self.adapter.qkv_weights(layer)[0])

    @property
    def W_K(self) -> Tensor:
        """`[layer, head, d_model, d_head]` (grouped K heads repeated per query head)."""
        return self._stack(lambda layer: self.adapter.qkv_weights(layer)[1])

    @property
    def W_V(self) -> Tensor:
        """`[layer, head, d_model, d_head]` (grouped V heads repeated per query head)."""
        return self._stack(lambda layer: self.adapter.qkv_weights(layer)[2])

    @property
    def W_O(self) -> Tensor:
        """`[layer, head, d_head, d_model]`."""
        return self._stack(self.adapter.o_weight)

    @property
    def b_O(self) -> Tensor:
        """`[layer, d_model]` (zeros where the model has no bias)."""
        return self._stack(self.adapter.b_O)

    @property
    def W_in(self) -> Tensor:
        """`[layer, d_model, d_mlp]` (the up projection of gated MLPs)."""
        return self._stack(lambda layer: self.adapter.mlp_in_weight(layer)[0])

    @property
    def b_in(self) -> Tensor:
        return self._stack(lambda layer: self.adapter.mlp_in_weight(layer)[1])

    @property
    def W_out(self) -> Tensor:
        """`[layer, d_mlp, d_model]`."""
        return self._stack(lambda layer: self.adapter.mlp_out_weight(layer)[0])

    @property
    def b_out(self) -> Tensor:
        return self._stack(lambda layer: self.adapter.mlp_out_weight(layer)[1])

    def n_params(self) -> int:
        return sum(p.numel() for p in self.hf.parameters())

    def __repr__(self) -> str:
        c = self.cfg
        return (f"HookedModel({self.name!r}, family={c.family}, n_layers={c.n_layers}, d_model={c.d_model}, "
                f"n_heads={c.n_heads}, d_mlp={c.d_mlp}, d_vocab={c.d_vocab})")


def _reach_layer(name: str, n_layers: int) -> int:
    """The block a hook point belongs to: -1 before the blocks (embeddings), n_layers after (ln_final)."""
    layer = layer_of(name)
    if layer is not None:
        return layer
    return -1 if name.startswith("hook_") else n_layers


def _raise_stop(module: nn.Module, args: Any) -> None:
    raise _StopForwardSignal


def _chain(fns: list[HookFn], point: HookPoint, site: Site) -> Callable[[Tensor], Tensor | None]:
    """Run `fns` in order on the hook point's view of a tensor; return the replacement or None."""

    def run(raw: Tensor) -> Tensor | None:
        t = site.view(raw) if site.view else raw
        changed = False
        for fn in fns:
            out = fn(t, hook=point)
            if out is not None:
                if not isinstance(out, Tensor) or out.shape != t.shape:
                    raise InputError(f"hook on {point.name!r} returned {_describe(out)}; expected a tensor of "
                                     f"shape {tuple(t.shape)} or None")
                t, changed = out, True
        if not changed:
            return None
        return site.unview(t) if site.unview else t

    return run


def _describe(obj: object) -> str:
    return f"a tensor of shape {tuple(obj.shape)}" if isinstance(obj, Tensor) else type(obj).__name__


def _attach(site: Site, run: Callable[[Tensor], Tensor | None]) -> torch.utils.hooks.RemovableHandle:
    if site.kind == "output":
        def on_output(module: nn.Module, args: Any, output: Any) -> Any:
            first = output[0] if isinstance(output, tuple) else output
            new = run(first)
            if new is None:
                return None
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return site.module.register_forward_hook(on_output)

    def on_input(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            new = run(args[0])
            return None if new is None else ((new, *args[1:]), kwargs)
        new = run(kwargs["hidden_states"])
        return None if new is None else (args, {**kwargs, "hidden_states": new})

    return site.module.register_forward_pre_hook(on_input, with_kwargs=True)
