"""Hyperformer's hypernetworks and the adapter layer whose weights they generate.

As VL-Adapter runs it (``VL-T5/src/adapters/adapter_hypernetwork.py:L54-155``, ``adapter_utils.py:L29-91``,
``adapter_controller.py:L205-243``, placements ``my_transformers/modeling_bart.py:L474-508, L639-702``):

- ``TaskEmbeddings``: one ``z_t ∈ R^E`` per task, N(0, 1), shared by both stacks.
- ``StackHyperNet`` per stack (encoder, decoder): ``layer-id Embedding(n_layers, E)``, a task hypernet
  ``s_i = LN_p(W2 ReLU(W1 [z_t ; l_i] + b1) + b2)`` (``LayerNorm(p, eps=1e-6)``) and per position type
  (self-attention, cross-attention, feed-forward) four generators ``Linear(p, ·)``:
  ``W_down = reshape(G s_i + g, (r, d))``, ``b_down (r)``, ``W_up = reshape(G' s_i + g', (d, r))``,
  ``b_up (d)``.
- ``HyperAdapter`` (at a sublayer output ``h``): ``h + W_up act(route(W_down h + b_down, W_down X_v + b_down))
  + b_up`` with the weights of the current (task, layer, position type).

Initialisation: all Linears and the layer-id Embedding N(0, 0.02) with zero biases (BART's ``_init_weights``
overwrites the 1e-2 init of the released module); task embeddings N(0, 1); LN(p) ones/zeros. Parameters per
position type ``(p+1)(2dr + r + d)``; per stack
``n_layers·E + (2E·h + h) + (h·p + p) + 2p + k·(p+1)(2dr+r+d)`` (k = 2 encoder, 3 decoder); plus ``T·E``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from vlpeft.errors import ConfigError
from vlpeft.routing import check_kind, route
from vlpeft.tuners.context import current_visual, expand_to_batch, require_task

POSITION_TYPES: tuple[str, ...] = ("self_attention", "cross_attention", "feed_forward")


def _init(module: nn.Module, std: float) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


class TaskEmbeddings(nn.Module):
    """``z_t`` per task (N(0, 1)), looked up by name."""

    def __init__(self, tasks: list[str], dim: int) -> None:
        super().__init__()
        self.embeddings = nn.ParameterDict({t: nn.Parameter(torch.randn(dim)) for t in tasks})

    def forward(self, task: str) -> torch.Tensor:
        if task not in self.embeddings:
            raise KeyError(
                f"Hyperformer has no embedding for task {task!r} (tasks: {', '.join(self.embeddings)})"
            )
        return self.embeddings[task]


class StackHyperNet(nn.Module):
    """The hypernetwork of one stack (module docstring): layer-id embeddings, task hypernet, generators."""

    def __init__(
        self,
        n_layers: int,
        positions: tuple[str, ...],
        width: int,
        rank: int,
        task_dim: int = 512,
        hidden: int = 128,
        projected: int = 8,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.width, self.rank = width, rank
        self.layer_embeddings = nn.Embedding(n_layers, task_dim)
        self.task_hypernet = nn.Sequential(
            nn.Linear(2 * task_dim, hidden), nn.ReLU(), nn.Linear(hidden, projected)
        )
        self.layer_norm = nn.LayerNorm(projected, eps=1e-6)
        self.generators = nn.ModuleDict(
            {
                pos: nn.ModuleDict(
                    {
                        "down_weight": nn.Linear(projected, rank * width),
                        "down_bias": nn.Linear(projected, rank),
                        "up_weight": nn.Linear(projected, width * rank),
                        "up_bias": nn.Linear(projected, width),
                    }
                )
                for pos in positions
            }
        )
        _init(self, init_std)

    def embedding(self, task_embedding: torch.Tensor, layer: int) -> torch.Tensor:
        """``s_i = LN_p(MLP([z_t ; l_i]))`` (p,)."""
        layer_id = torch.tensor(layer, dtype=torch.long, device=task_embedding.device)
        joint = torch.cat([task_embedding, self.layer_embeddings(layer_id)])
        return self.layer_norm(self.task_hypernet(joint))

    def adapter_weights(
        self, task_embedding: torch.Tensor, layer: int, position: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(W_down (r, d), b_down (r), W_up (d, r), b_up (d))`` for one layer and position type."""
        s = self.embedding(task_embedding, layer)
        g = self.generators[position]
        return (
            g["down_weight"](s).view(self.rank, self.width),
            g["down_bias"](s),
            g["up_weight"](s).view(self.width, self.rank),
            g["up_bias"](s),
        )


class HyperAdapter(nn.Module):
    """The adapter at one sublayer output; its weights come from the stack's hypernet for the current task.

    The hypernet and the task embeddings are referenced, not registered (they live once on the model), so
    every parameter appears once in ``named_parameters()``.
    """

    def __init__(
        self,
        net: StackHyperNet,
        tasks: TaskEmbeddings,
        layer: int,
        position: str,
        routing: str = "none",
        activation: str = "gelu_new",
    ) -> None:
        super().__init__()
        if activation not in ACT2FN:
            raise ConfigError(f"peft.hyperformer.activation {activation!r} is unknown")
        object.__setattr__(self, "_net", net)
        object.__setattr__(self, "_tasks", tasks)
        self.layer, self.position = layer, position
        self.routing = check_kind(routing)
        self.act = ACT2FN[activation]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        task = require_task(f"Hyperformer adapter ({self.position}, layer {self.layer})")
        w_down, b_down, w_up, b_up = self._net.adapter_weights(self._tasks(task), self.layer, self.position)
        x = F.linear(h, w_down.to(h.dtype), b_down.to(h.dtype))
        if self.routing != "none":
            x_v = current_visual()
            if x_v is None:
                raise RuntimeError(
                    f"routed Hyperformer adapter ({self.routing}) called without visual features: wrap the "
                    "forward in vlpeft.tuners.visual_context(x_v)"
                )
            v = F.linear(
                expand_to_batch(x_v, h.shape[0]).to(h.device, h.dtype), w_down.to(h.dtype), b_down.to(h.dtype)
            )
            lead = x.shape[:-1]
            x = route(self.routing, x.reshape(x.shape[0], -1, x.shape[-1]), v).reshape(*lead, x.shape[-1])
        return h + F.linear(self.act(x), w_up.to(h.dtype), b_up.to(h.dtype))

    def extra_repr(self) -> str:
        return f"layer={self.layer}, position={self.position}, routing={self.routing}"
